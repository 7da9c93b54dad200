"""Checkpoint files that are never half-written, and reading the config stored inside them.

Lightning's default writer stages the file in the system temp dir and then moves it; when that dir is on another
filesystem (local /tmp, runs on NFS/Lustre) the move is a copy, and a job killed mid-copy leaves a truncated
`last.ckpt`. Here the file is written next to its destination and renamed with `os.replace`, which is atomic on
POSIX filesystems: a reader sees either the old complete file or the new complete file.

A write that fails (a full disk) leaves the previous file as it was; `AtomicCheckpointIO` logs one line and trains
on, or stops the run, as `on_write_error` says. `resolve_ckpt_path` turns train.py's `ckpt_path` (a file, a run
folder or `last`) into the file to resume, and skips a truncated or corrupted one for the newest intact checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from core.errors import CheckpointError

log = logging.getLogger(__name__)

WRITE_ERROR_ACTIONS = ("continue", "stop")


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
    """Lightning CheckpointIO plugin that writes every checkpoint atomically (see module docstring).

    A write that fails with an OSError (disk full, quota, I/O error) keeps the previous file, and
    * on_write_error="stop": raises a CheckpointError (train.py prints it as one line and exits with status 2);
    * on_write_error="continue": logs one line and returns; until a write succeeds again, no checkpoint is removed
      (ModelCheckpoint would otherwise delete the older top-k file that the failed one was meant to replace).
    train.py builds the plugin with the default; the `checkpoint_writes` callback (core.callbacks.CheckpointWrites,
    configs/callbacks/default.yaml) sets the action of a run.
    """

    def __init__(self, on_write_error: str = "stop") -> None:
        super().__init__()
        self.on_write_error = check_write_error_action(on_write_error)
        self.last_write_failed = False
        self.failed_writes = 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        try:
            atomic_torch_save(checkpoint, path)
        except OSError as err:
            self.last_write_failed = True
            self.failed_writes += 1
            message = f"could not write checkpoint {path}: {err.strerror or err}; the previous file is kept"
            if self.on_write_error == "stop":
                raise CheckpointError(f"{message}; the run stops (callbacks.checkpoint_writes.on_error=continue "
                                      "would train on)") from err
            log.warning("%s; training goes on (failed writes so far: %d)", message, self.failed_writes)
            return
        self.last_write_failed = False

    def remove_checkpoint(self, path) -> None:
        if self.last_write_failed:  # the newer file that replaces this one is not on disk
            log.debug("kept %s: the checkpoint meant to replace it could not be written", path)
            return
        super().remove_checkpoint(path)


def check_write_error_action(action: str) -> str:
    if action not in WRITE_ERROR_ACTIONS:
        raise CheckpointError(f"on_write_error={action!r}: choose one of {', '.join(WRITE_ERROR_ACTIONS)}")
    return action


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


# -- which checkpoint to resume ------------------------------------------------------------------------------------
def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot resume a training run (unreadable, truncated, no trainer state), or None when it can.
    torch.load with mmap=True reads the archive's index and the pickled structure but not the tensor bytes: a
    truncated or garbled file fails at once, without reading gigabytes."""
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=False)  # a legacy (non-zip) torch file
    except Exception as err:  # truncated file, not a torch file, unpickling error, ...
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint (no state_dict)"
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        return "holds weights only (an exported or weights-only file), no trainer state to resume"
    return None


def _say(level: int, message: str, *args) -> None:
    if rank_zero_only.rank == 0:  # every DDP rank resolves the same path; one of them speaks
        log.log(level, message, *args)


def _candidates(ckpt_dir: Path) -> list[Path]:
    """The checkpoints of one run: last.ckpt first, then the others (step, best) newest first."""
    last = ckpt_dir / "last.ckpt"
    others = sorted((p for p in ckpt_dir.glob("*.ckpt") if p.is_file() and p != last),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    return ([last] if last.is_file() else []) + others


def _first_intact(paths: list[Path], bad: list[str]) -> Path | None:
    for path in paths:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        bad.append(f"{path} ({problem})")
        _say(logging.WARNING, "checkpoint %s cannot be resumed: %s; trying the newest intact one instead",
             path, problem)
    return None


def resolve_ckpt_path(ckpt_path: str | os.PathLike | None, log_dir: str | os.PathLike, name: str,
                      run_dir: str | os.PathLike | None = None) -> str | None:
    """The checkpoint file train.py resumes, from `ckpt_path=`:

    * null (or empty): None, a fresh run;
    * `last`: the run folder this run writes to (`run_dir`, i.e. a fixed `hydra.run.dir`, how a requeued cluster
      job continues in its own folder) when it holds a checkpoint; otherwise the newest `checkpoints/last.ckpt`
      among the runs of this `name` (log_dir/<name>/*/checkpoints/, by modification time: Hydra gives every run a
      fresh folder by default, so a resumed run is a new folder too). The log says which one it took;
    * a run folder (runs/<name>/<date_time>/) or its checkpoints/ folder: its checkpoints/last.ckpt;
    * a file: that file.

    The chosen file is opened first (see `checkpoint_problem`). When a last.ckpt is truncated or corrupted it is
    named in the log and the newest intact checkpoint of the same folder is resumed instead (the step and best
    checkpoints that ModelCheckpoint keeps); for `last`, then the next older runs. Another file named
    explicitly must be intact. CheckpointError when nothing usable is found.
    """
    if ckpt_path is None or str(ckpt_path).strip() in ("", "null", "None"):
        return None
    value = str(ckpt_path)
    if value == "hpc":  # Lightning's own: hpc_ckpt_<n>.ckpt in this run's folder
        return value
    bad: list[str] = []
    if value == "last":
        own = Path(run_dir) / "checkpoints" if run_dir else None
        if own is not None and own.is_dir() and _candidates(own):
            found = _first_intact(_candidates(own), bad)
            if found is not None:
                _say(logging.INFO, "ckpt_path=last: resuming from %s, in this run's folder %s", found, run_dir)
                return str(found)
        root = Path(log_dir) / name
        dirs = [d for d in root.glob("*/checkpoints") if d.is_dir() and d != own and _candidates(d)]
        dirs.sort(key=lambda d: max(p.stat().st_mtime for p in _candidates(d)), reverse=True)
        here = f" in this run's folder {run_dir} nor" if own is not None else ""
        if not dirs and not bad:
            raise CheckpointError(f"ckpt_path=last: no checkpoint{here} of an earlier run named {name!r} "
                                  f"({root}/*/checkpoints/last.ckpt); start without ckpt_path, or pass a run "
                                  "folder or a .ckpt file (ckpt_path=runs/<name>/<date_time>)")
        for d in dirs:
            found = _first_intact(_candidates(d), bad)
            if found is not None:
                _say(logging.INFO, "ckpt_path=last: resuming from %s, the newest run named %r", found, name)
                return str(found)
        raise CheckpointError(f"ckpt_path=last: no intact checkpoint{here} of the runs named {name!r} under "
                              f"{root}: " + "; ".join(bad))
    path = Path(value)
    if path.is_dir():  # a run folder, or a folder of checkpoints
        ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        candidates, wanted = _candidates(ckpt_dir), ckpt_dir / "last.ckpt"
        if not candidates:
            raise CheckpointError(f"ckpt_path={value}: no checkpoints in {ckpt_dir} (a run folder holds "
                                  "checkpoints/last.ckpt once its run has written one)")
    elif path.is_file() and path.name == "last.ckpt":
        candidates, wanted = _candidates(path.parent), path
    elif path.is_file():  # a step or best checkpoint, named on purpose: that one or an error
        problem = checkpoint_problem(path)
        if problem is not None:
            raise CheckpointError(f"ckpt_path={value}: cannot resume from it: {problem}")
        return str(path)
    else:
        raise CheckpointError(f"ckpt_path={value}: no such file or folder (pass a .ckpt file, a run folder "
                              "runs/<name>/<date_time>, or last)")
    found = _first_intact(candidates, bad)
    if found is None:
        raise CheckpointError(f"ckpt_path={value}: no intact checkpoint in {wanted.parent}: " + "; ".join(bad))
    if found != wanted:
        _say(logging.WARNING, "resuming from %s, the newest intact checkpoint in %s", found, wanted.parent)
    return str(found)
