"""Read the records of an offline wandb run file (run-<id>.wandb) to check what a run logged.

wandb 0.31 keeps offline runs only in this file (a LevelDB-style log of protobuf `Record`s: a 7-byte header,
then 32 KiB blocks of chunks with a 7-byte header: CRC32C, uint16 length, uint8 type full/first/middle/last).
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def _payloads(path: Path):
    data = Path(path).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a wandb run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def logged(path: Path) -> tuple[set[str], set[str]]:
    """(history keys, config keys) found in the run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, config = set(), set()
    for payload in _payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "config":
            config |= {item.key or "/".join(item.nested_key) for item in record.config.update}
    return history, config
