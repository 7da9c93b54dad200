"""The one evaluation loop and the one metric accumulator, used by validation, `test_step`, evaluate.py and the
quality benchmarks, so every number of every method comes from the same code.

`restore_batch` is one step: the restorer's measurement of the batch, then its restoration, timed. `evaluate`
runs it over a loader. `ImageMetrics` keeps one row per image (PSNR/SSIM with BasicSR's semantics on the 8-bit
images, LPIPS when its weights are on disk, the degraded input's PSNR/SSIM, seconds), counts each dataset index
once under DDP, and adds FID when its weights are on disk. Results: `metrics.json` (means at the top level),
`per_image.csv`, the restored PNGs and `preview.png` (LQ | restored | GT).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchmetrics
from torch import Tensor
from torchmetrics.utilities.data import dim_zero_cat

from core.dists import make_dists
from core.io import to_uint8, write_image
from core.metrics import make_fid, make_lpips, psnr_ssim, quantize_8bit
from core.noreference import load_niqe_params, niqe_batch
from core.restorer import Restorer

COLUMNS = ("psnr", "ssim", "lpips", "dists", "niqe", "psnr_input", "ssim_input", "seconds")


class ImageMetrics(torchmetrics.Metric):
    """Per-image scores over a run, with each dataset index counted once.

    `update` stores one row per image in "cat" states; under DDP they are gathered from every rank, where the
    distributed sampler may have repeated a few images to even out the batches, so `compute`, `summary` and
    `per_image` keep the first row of each index. Means are plain per-image means (as in the papers); one
    identical image pair makes the PSNR mean `inf`, as BasicSR's would be. `perceptual=True` adds LPIPS (full
    8-bit RGB images, not cropped) and FID when their weights are on disk (else one warning, no column). Their
    networks are kept outside the module tree so they never enter checkpoints. Names are kept per process.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, y_channel: bool, crop_border: int, perceptual: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.y_channel, self.crop_border = bool(y_channel), int(crop_border)
        lpips = make_lpips("cpu") if perceptual else None
        fid = make_fid("cpu") if perceptual else None
        dists = make_dists("cpu") if perceptual else None
        self._niqe = load_niqe_params() if perceptual else None  # NIQE's pristine model (numpy, not a state)
        # plain lists hide the networks from nn.Module registration (see the class docstring)
        self._lpips_net: list[torch.nn.Module] = [lpips.net] if lpips is not None else []
        self._fid: list[torchmetrics.Metric] = [fid] if fid is not None else []
        self._dists_net: list[torch.nn.Module] = [dists] if dists is not None else []
        self.names: dict[int, str] = {}
        self.input_upsampled = False  # super-resolution: the input scores are of its bicubic upsampling
        self.add_state("index", default=[], dist_reduce_fx="cat")
        for column in COLUMNS:
            self.add_state(column, default=[], dist_reduce_fx="cat")

    @property
    def has_lpips(self) -> bool:
        return bool(self._lpips_net)

    def update(self, restored: Tensor, gt: Tensor, index: Tensor, lq: Tensor | None = None,
               seconds: float = math.nan, names: Iterable[str] | None = None) -> None:
        """Add a batch: restored, gt (and the degraded lq) float NCHW in [0, 1], index (N,) dataset indices."""
        index = torch.as_tensor(index, device=restored.device).reshape(-1).to(torch.long)
        n = restored.shape[0]
        if index.numel() != n:
            raise ValueError(f"{index.numel()} indices for a batch of {n} images")
        if restored.shape != gt.shape:
            raise ValueError(f"restored images are {tuple(restored.shape)} but ground truth is {tuple(gt.shape)}")
        restored, gt = restored.float(), gt.float().to(restored.device)
        nan = torch.full((n,), math.nan, dtype=torch.float64, device=restored.device)
        psnr, ssim = psnr_ssim(restored, gt, self.y_channel, self.crop_border)
        baseline = _as_input_baseline(lq, gt) if lq is not None else None
        self.input_upsampled |= baseline is not None and lq.shape != gt.shape
        psnr_in, ssim_in = (psnr_ssim(baseline, gt, self.y_channel, self.crop_border) if baseline is not None
                            else (nan, nan))
        values = {"psnr": psnr, "ssim": ssim, "lpips": self._lpips_scores(restored, gt) if self.has_lpips else nan,
                  "dists": self._dists_scores(restored, gt) if self._dists_net else nan,
                  "niqe": (niqe_batch(restored, self.crop_border, self._niqe).to(restored.device)
                           if self._niqe is not None else nan),
                  "psnr_input": psnr_in, "ssim_input": ssim_in, "seconds": torch.full_like(nan, seconds)}
        self.index.append(index)
        for column in COLUMNS:
            getattr(self, column).append(values[column])
        for i, name in zip(index.tolist(), names or []):
            self.names[i] = str(name)
        if self._fid:
            fid = self._fid[0].to(restored.device)
            fid.update(quantize_8bit(gt) / 255.0, real=True)
            fid.update(quantize_8bit(restored) / 255.0, real=False)

    @torch.no_grad()
    def _lpips_scores(self, restored: Tensor, gt: Tensor) -> Tensor:
        net = self._lpips_net[0].to(restored.device)
        return net(quantize_8bit(restored) / 255.0, quantize_8bit(gt) / 255.0, normalize=True).reshape(-1).double()

    @torch.no_grad()
    def _dists_scores(self, restored: Tensor, gt: Tensor) -> Tensor:
        net = self._dists_net[0].to(restored.device)
        return net(quantize_8bit(restored) / 255.0, quantize_8bit(gt) / 255.0).reshape(-1).double()

    def _deduplicated(self) -> dict[str, Tensor]:
        """Columns of the stored rows, one row per index (its first occurrence), sorted by index."""
        if isinstance(self.index, list) and not self.index:
            return {}
        index = dim_zero_cat(self.index)
        order = torch.sort(index, stable=True).indices
        sorted_index = index[order]
        first = torch.ones_like(sorted_index, dtype=torch.bool)
        first[1:] = sorted_index[1:] != sorted_index[:-1]
        keep = order[first]
        return {"index": index[keep], **{c: dim_zero_cat(getattr(self, c))[keep] for c in COLUMNS}}

    def compute(self) -> dict[str, Tensor]:
        """Means over the distinct images: {'psnr', 'ssim'[, 'lpips']} (NaN when nothing was added)."""
        columns = self._deduplicated()
        names = (["psnr", "ssim"] + (["lpips"] if self.has_lpips else []) + (["dists"] if self._dists_net else [])
                 + (["niqe"] if self._niqe is not None else []))
        if not columns:
            return {name: torch.tensor(math.nan, dtype=torch.float64) for name in names}
        return {name: columns[name].mean() for name in names}

    def per_image(self) -> list[dict[str, Any]]:
        """One row per distinct image, sorted by index: name (where this process saw it), index, the scores."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                               should_unsync=self._should_unsync):
            columns = {name: values.tolist() for name, values in self._deduplicated().items()}
        rows = [dict(zip(columns, row)) for row in zip(*columns.values())] if columns else []
        return [{"name": self.names.get(int(r["index"]), str(int(r["index"]))),
                 **{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}} for r in rows]

    def summary(self, rows: list[dict] | None = None) -> dict:
        """Means of every column over the distinct images (finite values), FID with two or more images."""
        rows = self.per_image() if rows is None else rows
        out: dict = {"n_images": len(rows)}
        for key in COLUMNS:
            values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
            if values:
                out[key] = float(np.mean(values))
        if self.input_upsampled:
            out["input"] = "bicubic-upsampled"
        if self._fid and len(rows) >= 2:
            out["fid"] = float(self._fid[0].compute())
        return out


def _as_input_baseline(lq: Tensor, gt: Tensor) -> Tensor | None:
    """The degraded input as scored against the ground truth: itself at the same size; a low-resolution input
    (super-resolution) upsampled by MATLAB bicubic, the papers' baseline, when the sizes differ by an integer
    factor; otherwise None (no input score)."""
    lq = lq.float().to(gt.device)
    if lq.shape == gt.shape:
        return lq
    (h, w), (gh, gw) = lq.shape[-2:], gt.shape[-2:]
    if lq.shape[:2] != gt.shape[:2] or gh % h or gw % w or gh // h != gw // w:
        return None
    from data.resize import imresize

    return imresize(lq, scale=gh // h).clamp(0, 1)


@torch.no_grad()
def restore_batch(restorer: Restorer, batch: dict, generator: torch.Generator,
                  device: torch.device | None = None, precision: str | None = None) -> tuple[dict, Tensor, float]:
    """(the measured batch, its restoration as float, seconds per image): one step of every evaluation."""
    device = device if device is not None else batch["lq"].device
    batch = restorer.measure(batch, generator)
    lq = batch["lq"].to(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        restored = restorer.restore(lq, generator=generator, **restorer.conditions_of(batch, device)).float()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch, restored, (time.perf_counter() - start) / lq.shape[0]


def evaluate(restorer: Restorer, loader: Iterable[dict], metrics: ImageMetrics, device: torch.device,
             seed: int = 0, max_images: int | None = None, precision: str | None = None, progress: bool = True,
             on_batch: Callable[[dict, Tensor], None] | None = None) -> None:
    """Restore every batch of `loader` (sampler noise seeded by seed + the batch's first index, so an image's
    result does not depend on the batch layout or the number of processes) and score it into `metrics`."""
    from core.progress import bar

    seen = 0
    for batch in bar(loader, desc="evaluating", disable=not progress):
        if max_images is not None and seen >= max_images:
            break
        generator = torch.Generator(device=device).manual_seed(seed + int(batch["index"][0]))
        batch, restored, seconds = restore_batch(restorer, batch, generator, device, precision)
        metrics.update(restored, batch["gt"].to(device), batch["index"], lq=batch["lq"].to(device), seconds=seconds,
                       names=batch["name"])
        if on_batch is not None:
            on_batch(batch, restored)
        seen += restored.shape[0]


def score_files(pairs: Iterable, metrics: ImageMetrics) -> list[dict]:
    """Existing restored images (`pair.lq`) against their ground truth (`pair.gt`): evaluate.py restored= gt=."""
    from core.errors import DataError
    from core.io import read_image, to_tensor

    for i, pair in enumerate(pairs):
        restored, gt = to_tensor(read_image(pair.lq))[None], to_tensor(read_image(pair.gt))[None]
        if restored.shape != gt.shape:
            raise DataError(f"{pair.name}: restored image is {tuple(restored.shape[-2:])} but ground truth is "
                            f"{tuple(gt.shape[-2:])}")
        metrics.update(restored, gt, [i], names=[pair.name])
    return [{k: v for k, v in r.items() if k != "index"} for r in metrics.per_image()]


def report(summary: dict, rows: list[dict], per_image: bool | None = None) -> None:
    """Every image's scores (by default when at most 30), the summary table and the input -> output line."""
    if per_image if per_image is not None else len(rows) <= 30:
        print(format_table(rows, [c for c in PER_IMAGE_COLUMNS if any(c[0] in r for r in rows)]) + "\n")
    always = ("lpips", "fid") if "psnr" in summary else ()  # '-' says a reference metric was skipped
    print(format_table([summary], [c for c in SUMMARY_COLUMNS if c[0] in summary or c[0] in always]))
    if "psnr_input" in summary:
        what = "degraded input" + (", bicubic-upsampled" if summary.get("input") == "bicubic-upsampled" else "")
        print(f"{what}: PSNR {summary['psnr_input']:.3f} dB, SSIM {summary['ssim_input']:.4f} "
              f"-> restored: PSNR {summary['psnr']:.3f} dB, SSIM {summary['ssim']:.4f}")


# -- what a user keeps -------------------------------------------------------------------------------------------
def tensor_to_images(batch: Tensor) -> list[np.ndarray]:
    """NCHW float [0,1] -> list of uint8 HxWx3 (the PNG that would be saved)."""
    arr = to_uint8(batch.detach().float().cpu())
    return [arr] if arr.ndim == 3 else list(arr)


def make_panel(lq: np.ndarray, restored: np.ndarray, gt: np.ndarray | None) -> np.ndarray:
    """LQ | restored | GT side by side, uint8 HxWx3 (LQ is resized by nearest neighbour when smaller, e.g. SR)."""
    h, w = restored.shape[:2]
    tiles = []
    for tile in [lq, restored] + ([gt] if gt is not None else []):
        if tile.shape[:2] != (h, w):
            tile = tile[np.arange(h) * tile.shape[0] // h][:, np.arange(w) * tile.shape[1] // w]
        tiles += [tile, np.full((h, 4, 3), 255, np.uint8)]
    return np.concatenate(tiles[:-1], axis=1)


def write_preview(path: Path, panels: list[np.ndarray]) -> None:
    """Panels stacked; tiny images (the 32x32 demo faces) are enlarged by pixel repetition to be seen."""
    width = max(p.shape[1] for p in panels)
    zoom = max(1, 384 // width)
    panels = [p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in panels]
    width *= zoom
    rows = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    write_image(path, np.concatenate(rows, axis=0))


def write_results(out_dir: str | Path, summary: dict, rows: list[dict]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(out_dir / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return out_dir / "metrics.json"


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain text table; `columns` are (key, header, format) and missing values print as '-'."""
    header = " | ".join(f"{h:>10}" for _, h, _ in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append(f"{value:>10{fmt}}" if isinstance(value, (int, float)) else f"{str(value or '-'):>10}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


SUMMARY_COLUMNS = [
    ("dataset", "dataset", ""), ("n_images", "images", "d"), ("psnr", "PSNR", ".3f"), ("ssim", "SSIM", ".4f"),
    ("lpips", "LPIPS", ".4f"), ("dists", "DISTS", ".4f"), ("niqe", "NIQE", ".3f"), ("fid", "FID", ".2f"),
    ("nfe", "NFEs", "d"), ("seconds_per_image", "s/image", ".3f"),
]
PER_IMAGE_COLUMNS = [("name", "image", ""), ("psnr_input", "PSNR in", ".2f"), ("psnr", "PSNR out", ".2f"),
                     ("ssim_input", "SSIM in", ".4f"), ("ssim", "SSIM out", ".4f"), ("niqe", "NIQE", ".3f")]
