"""Helper of test_ddp.py: records, per process, what each DDP rank saw and which files it wrote.

Two uses, each leaving one JSON file per rank, OUT_DIR/<tag>-rank<r>.json:

* an extra callback of the real entry point:
  ``python train.py ... +callbacks.probe._target_=tests.integration.ddp_probe.RankRecorder
  +callbacks.probe.out_dir=OUT_DIR +callbacks.probe.watch=RUN_DIR +callbacks.probe.tag=fit``
* a command that validates the weights of a checkpoint on 1 or more CPU processes (DDP over gloo when more):
  ``python tests/integration/ddp_probe.py CKPT OUT_DIR DEVICES``

The record holds the dataset indices of every training batch, the local rows (index, PSNR, SSIM) each rank
added to the validation metric *before* the cross-rank reduction, the reduced val/psnr and val/ssim, and the
paths under `watch` this process opened for writing, renamed or created (seen through a Python audit hook, so
writes made by C code are not seen; every writer of this project goes through Python's file objects).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # the data modules import albumentations later

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _as_path(value: Any) -> str | None:
    if isinstance(value, int) or value is None:  # a file descriptor: not a path
        return None
    try:
        return os.path.abspath(os.fsdecode(value))
    except TypeError:
        return None


def watch_writes(root: str | Path, sink: list[str]) -> None:
    """Append to `sink` each path under `root` this process opens for writing, renames, creates or removes."""
    prefix = os.path.abspath(root) + os.sep

    def hook(event: str, args: tuple) -> None:
        # An exception in an audit hook would surface in whatever code opened the file: never raise.
        try:
            if event == "open":
                path, mode, flags = args
                if isinstance(mode, str):
                    writing = any(c in mode for c in "wax+")
                else:
                    writing = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
                paths = [path] if writing else []
            elif event == "os.rename":
                paths = [args[0], args[1]]
            elif event in ("os.mkdir", "os.remove", "os.rmdir"):
                paths = [args[0]]
            else:
                return
            for path in paths:
                full = _as_path(path)
                if full is not None and full.startswith(prefix):
                    sink.append(f"{event}:{full[len(prefix):]}")
        except Exception:  # noqa: BLE001 - see above
            pass

    sys.addaudithook(hook)


class RankRecorder(L.Callback):
    """Records this rank's training batches, validation rows and metrics, and (optionally) its file writes."""

    def __init__(self, out_dir: str, tag: str, watch: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.tag = tag
        self.written: list[str] = []
        self.record: dict[str, Any] = {"train_batches": [], "validations": [], "written": self.written}
        self._val_indices: list[int] = []
        if watch is not None:
            watch_writes(watch, self.written)
        # Written at exit too, so that writes after the trainer's teardown (loggers, train.py) are included.
        atexit.register(self.dump)

    def dump(self) -> None:
        rank = self.record.get("rank", int(os.environ.get("LOCAL_RANK", 0)))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"{self.tag}-rank{rank}.json").write_text(json.dumps(self.record, indent=1))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.record.update(rank=trainer.global_rank, world_size=trainer.world_size,
                           is_global_zero=trainer.is_global_zero, strategy=type(trainer.strategy).__name__)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.record["train_batches"].append({
            "step": trainer.global_step, "epoch": trainer.current_epoch,
            "index": batch["index"].tolist(), "gt_shape": list(batch["gt"].shape),
            "lq_shape": list(batch["lq"].shape), "loss": float(loss.detach()),
            # a fingerprint of the pixels, to see that different items (patches) reached each rank
            "gt_sums": batch["gt"].sum(dim=(1, 2, 3)).tolist(),
        })

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_indices = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx: int = 0) -> None:
        self._val_indices.extend(int(i) for i in batch["index"])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # Callbacks run before the module's hook, which computes (gathers) and resets the metric: the states
        # still hold only the rows this rank added.
        metric = pl_module.val_metrics
        rows: list[list[float]] = []
        if metric.index:
            columns = [torch.cat(getattr(metric, name)).tolist() for name in ("index", "psnr", "ssim")]
            rows = [list(row) for row in zip(*columns)]
        self.record["validations"].append({"step": trainer.global_step, "indices": self._val_indices,
                                           "rows": rows, "sanity": trainer.sanity_checking})

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.record["validations"][-1]["metrics"] = metrics

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.dump()


def validate_checkpoint(ckpt: str, out_dir: str, devices: int) -> None:
    """`trainer.validate` of the checkpoint's weights on its own validation split, on `devices` CPU processes;
    the run's files go to OUT_DIR/root."""
    from hydra.utils import instantiate

    from core.loading import module_from_checkpoint

    module, cfg = module_from_checkpoint(ckpt)
    datamodule = instantiate(cfg.data)
    root = Path(out_dir) / "root"  # where the run's own files (validation panels) go, watched for writers
    recorder = RankRecorder(out_dir, tag=f"validate{devices}", watch=str(root))
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        precision=32, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(root), callbacks=[recorder])
    trainer.validate(module, datamodule=datamodule)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python tests/integration/ddp_probe.py CKPT OUT_DIR DEVICES")
    validate_checkpoint(sys.argv[1], sys.argv[2], int(sys.argv[3]))
