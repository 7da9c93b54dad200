"""Evaluation and restoration on one device or many, through Lightning (`Trainer.test` / `Trainer.predict`).

evaluate.py and restore.py build the same `Trainer` as train.py from `trainer.*` (devices, num_nodes, strategy),
so Lightning's launcher, torchrun and srun all work. One process and N processes share every line that computes a
number; only the gathering differs:
* each rank takes a strided shard of the images (`ShardSampler`: rank r gets r, r + N, ...; no image is repeated
  to even out the shards, so every output file is written once, by one rank);
* each image's sampler noise is seeded by the seed and that image only (its dataset index for evaluation, its file
  name for restoration), never by the rank, the batch or the number of processes;
* each rank writes its own images atomically; rank 0 writes the files of the whole run (metrics.json,
  per_image.csv, preview.png, failed.txt) from what the ranks gathered at the end (torchmetrics' gathering for the
  scores, `all_gather_object` for names, panels' indices and failures);
* one progress bar on rank 0 counts the images of all ranks (`core.progress.SharedProgress`).

The restorer source (a method's module, DiffPIR's prior) is kept outside the LightningModule's tree: Lightning
neither wraps nor moves it; `setup` puts it on the rank's device with `prepare_for_inference` (bf16: channels_last).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.restorer import Restorer, build_restorer, prepare_for_inference


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, rank + 2 world, ... of `n` items: shards that differ by at most one item and
    never repeat one (unlike torch's DistributedSampler, which pads the shards with repeats)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] over the process group Lightning set up; [obj] in one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def inference_trainer(trainer_args: dict, device: str | None) -> L.Trainer:
    """A Trainer for test/predict from the entry point's validated `trainer.*` keys; `device=` (the older
    spelling) chooses the accelerator when trainer.accelerator is not set."""
    args = dict(trainer_args)
    if args.get("accelerator") in (None, "null"):
        args["accelerator"] = {"cuda": "gpu", "gpu": "gpu", "cpu": "cpu", "mps": "mps"}.get(str(device), "auto")
    args.setdefault("logger", False)
    for key, value in (("enable_checkpointing", False), ("enable_model_summary", False),
                       ("enable_progress_bar", False), ("use_distributed_sampler", False)):
        args[key] = value  # the shards, the bars and the files are this module's
    # Lightning's "GPU available / TPU available" lines: the first line printed names the model and the device
    # ends up in metrics.json, so they only interrupt the story here
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        return L.Trainer(**args)
    finally:
        log.setLevel(level)


class InferenceModule(L.LightningModule):
    """What every rank runs: a restorer built from `source` with `options` on the rank's device, over its shard.

    Args:
        source: the restorer source (`source.restorer(**options)`), e.g. a method's module or DiffPIR's.
        options: restorer options (sampler, steps, tile, ...; None = the model's own).
        dataset: the items (evaluation: the test set; restoration: `PathList`).
        work_dir: where the run's shared bookkeeping lives (progress counts, panels): the output folder.
    """

    def __init__(self, source, options: dict, dataset: Dataset, work_dir: str | Path, *, precision: str = "32",
                 compile: bool = False, progress: bool = True, seed: int = 0, num_workers: int = 0,
                 desc: str = "images") -> None:
        super().__init__()
        self._source = [source]  # a plain list: outside the module tree (see the module docstring)
        self.options, self.dataset, self.work_dir = dict(options), dataset, Path(work_dir)
        self.precision_name, self.compile, self.show_progress = str(precision), bool(compile), bool(progress)
        self.seed, self.num_workers, self.desc = int(seed), int(num_workers), desc
        self.restorer: Restorer | None = None
        self.bar = None

    # -- set-up on each rank ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        from core.progress import SharedProgress

        device = self.trainer.strategy.root_device
        source = prepare_for_inference(self._source[0], device, self.precision_name)
        world = self.trainer.world_size
        # the sampler's own bars (steps, tiles) only in one process: N ranks would draw N of them
        self.restorer = build_restorer(source, self.options, progress=self.show_progress and world == 1,
                                       compile=self.compile)
        token = self.trainer.strategy.broadcast(uuid.uuid4().hex[:12], src=0)
        self.shared = self.work_dir / f".run-{token}"
        self.bar = SharedProgress(self.shared / "progress", len(self.dataset), self.trainer.global_rank, world,
                                  desc=self.desc, enabled=self.show_progress)

    def _loader(self) -> DataLoader:
        sampler = ShardSampler(len(self.dataset), self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(self.dataset, batch_size=1, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=_collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision_name == "bf16")

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def finish(self) -> None:
        """Every rank: wait until the bar has counted all ranks' images, then remove the shared folder."""
        import shutil

        if self.bar is not None:
            self.bar.close()
        self.trainer.strategy.barrier("inference-finish")
        if self.trainer.is_global_zero:
            shutil.rmtree(self.shared, ignore_errors=True)


def _collate(items: list[dict]) -> dict:
    """Batches of one item: tensors get their batch dimension, everything else a one-element list."""
    (item,) = items
    return {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in item.items()}


class EvaluationModule(InferenceModule):
    """Trainer.test: restore and score every image of the test set (core.evaluation's one step and one metric
    accumulator), keep the restored PNGs (`on_image`) and the first `panels` LQ | restored | GT panels."""

    def __init__(self, *args, metrics, panels: int = 4, on_image: Callable | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.metrics, self.panels, self.on_image = metrics, int(panels), on_image
        self.summary: dict = {}
        self.rows: list[dict] = []
        self.preview: list = []

    def on_test_start(self) -> None:
        self.started = time.perf_counter()  # the processes are up: throughput leaves their start-up out

    def test_step(self, batch: dict, batch_idx: int) -> None:
        from core import evaluation as ev

        index = int(batch["index"][0])
        batch, restored, seconds = ev.restore_batch(self.restorer, batch, self.generator(self.seed + index),
                                                    self.device, self.precision_name)
        self.metrics.update(restored, batch["gt"].to(self.device), batch["index"], lq=batch["lq"].to(self.device),
                            seconds=seconds, names=batch["name"])
        lq_img, out_img, gt_img = (ev.tensor_to_images(t)[0] for t in (batch["lq"], restored, batch["gt"]))
        if self.on_image is not None:
            self.on_image(str(batch["name"][0]), out_img)
        if index < self.panels:  # the first panels by index, as one process in loader order
            ev.write_image(self.shared / "panels" / f"{index:09d}.png", ev.make_panel(lq_img, out_img, gt_img))
        self.bar.advance()

    def on_test_epoch_end(self) -> None:
        import numpy as np

        from core.io import read_image

        for names in all_gather_objects(dict(self.metrics.names)):  # each rank saw the names of its shard
            self.metrics.names.update(names)
        self.rows = self.metrics.per_image()  # gathered from every rank, one row per index
        self.summary = self.metrics.summary(self.rows)  # FID (when on disk) once over all images
        # all ranks' images over rank 0's time from the start of testing to the gathered results
        self.summary["images_per_second"] = len(self.rows) / (time.perf_counter() - self.started)
        if self.trainer.is_global_zero:
            self.preview = [np.asarray(read_image(p)) for p in sorted((self.shared / "panels").glob("*.png"))]
        self.finish()


class PathList(Dataset):
    """restore.py's inputs: {"path", "index"} per file (reading happens in the step, where a bad file is caught
    and reported instead of stopping the job)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"path": str(self.paths[index]), "index": index}


class RestorationModule(InferenceModule):
    """Trainer.predict: restore each input file into `output/<stem>.png` (atomic write), skipping files whose
    output exists unless `overwrite`; a failing image is recorded with its reason (or, with on_error="stop",
    every rank stops at its next image and the run ends with that failure)."""

    def __init__(self, *args, output: str | Path, mask: str | None = None, overwrite: bool = False,
                 on_error: str = "continue", **kwargs) -> None:
        from core.errors import ConfigError

        super().__init__(*args, **kwargs)
        if on_error not in ("continue", "stop"):
            raise ConfigError(f"on_error={on_error}: choose continue (report failures at the end) or stop")
        self.output, self.mask, self.overwrite, self.on_error = Path(output), mask, bool(overwrite), on_error
        self.counts = {"restored": 0, "skipped": 0, "failed": 0}
        self.failures: list[tuple[str, str]] = []
        self.written: list[Path] = []

    def target(self, path: Path) -> Path:
        return self.output / f"{path.stem}.png"

    def predict_step(self, batch: dict, batch_idx: int) -> str | None:
        path = Path(batch["path"][0])
        target = self.target(path)
        if (self.shared / "stop").exists():  # another rank failed with on_error=stop
            return None
        if target.is_file() and not self.overwrite:  # written atomically: an existing file is complete
            self.counts["skipped"] += 1
        else:
            try:
                self._restore_file(path, target)
                self.counts["restored"] += 1
                self.written.append(target)
            except Exception as err:  # a bad image must not stop a large folder; bugs still show their reason
                reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                self.counts["failed"] += 1
                self.failures.append((path.name, reason))
                if self.on_error == "stop":
                    self.shared.mkdir(parents=True, exist_ok=True)
                    (self.shared / "stop").write_text(f"{path.name}\t{reason}\n")
        self.bar.advance()
        return str(target)  # (not kept: predict runs with return_predictions=False)

    def _restore_file(self, path: Path, target: Path) -> None:
        from core.io import image_seed, read_image, to_tensor, write_image
        from data.masks import mask_for

        lq = to_tensor(read_image(path))[None].to(self.device)
        # seeded by the file name: an image restores the same alone, within a folder, on any rank
        generator = self.generator(image_seed(self.seed, path.name))
        conditions = ({"mask": mask_for(self.mask, path, lq)} if "mask" in self.restorer.conditions and self.mask
                      else {})
        with torch.no_grad(), self.autocast():
            restored = self.restorer.restore(lq, generator=generator, **conditions).float()
        write_image(target, restored[0].cpu())  # atomic (core.io)

    def on_predict_epoch_end(self) -> None:
        gathered = all_gather_objects((self.counts, self.failures, [str(p) for p in self.written]))
        self.counts = {k: sum(c[k] for c, _, _ in gathered) for k in self.counts}
        self.failures = sorted(f for _, failures, _ in gathered for f in failures)
        self.written = sorted(Path(p) for _, _, written in gathered for p in written)
        self.finish()

