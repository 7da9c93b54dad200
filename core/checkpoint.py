"""Checkpoint files that are never half-written, and reading the config stored inside them.

Lightning's default writer stages the file in the system temp dir and then moves it; when that dir is on another
filesystem (local /tmp, runs on NFS/Lustre) the move is a copy, and a job killed mid-copy leaves a truncated
`last.ckpt`. Here the file is written next to its destination and renamed with `os.replace`, which is atomic on
POSIX filesystems: a reader sees either the old complete file or the new complete file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from core.errors import CheckpointError


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` through a temporary sibling file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO plugin that writes every checkpoint atomically (see module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file on the CPU with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (pass an existing file as ckpt=PATH)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated file, not a torch file, ...
        raise CheckpointError(f"could not read checkpoint {path}: {err}") from err


def config_from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The resolved run config that train.py stores in every checkpoint."""
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path} holds no suite run config (it is not a checkpoint written by train.py); "
            "official release weights are loaded with the method's load_network() or evaluate.py weights=PATH"
        )
    return config
