"""Scoring restored images the way the papers do, and writing the results a user keeps.

Every evaluation (a checkpoint on a dataset, or folders of existing images) goes through `Scorer`, so the
numbers of different methods come from the same code: PSNR/SSIM on 8-bit images (BasicSR semantics), LPIPS and
FID when their weights are on disk. Results: `metrics.json` (means at the top level), `per_image.csv` and,
for checkpoint evaluations, the restored PNGs.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import metrics
from core.io import to_uint8


@dataclass
class Scorer:
    """Accumulates per-image scores; `summary()` gives the means. Images are uint8 HxWx3 RGB."""

    y_channel: bool
    crop_border: int
    device: str = "cpu"
    perceptual: bool = True
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.lpips = metrics.make_lpips(self.device) if self.perceptual else None
        self.fid = metrics.make_fid(self.device) if self.perceptual else None

    def add(self, name: str, restored: np.ndarray, gt: np.ndarray, **extra) -> dict:
        if restored.shape != gt.shape:
            raise ValueError(f"{name}: restored image is {restored.shape[:2]} but ground truth is {gt.shape[:2]}")
        row = {
            "name": name,
            "psnr": metrics.calculate_psnr(restored, gt, self.crop_border, self.y_channel),
            "ssim": metrics.calculate_ssim(restored, gt, self.crop_border, self.y_channel),
        }
        if self.lpips is not None or self.fid is not None:
            r = _to_float_tensor(restored, self.device)
            g = _to_float_tensor(gt, self.device)
            if self.lpips is not None:
                row["lpips"] = float(self.lpips(r, g))
                self.lpips.reset()
            if self.fid is not None:
                self.fid.update(g, real=True)
                self.fid.update(r, real=False)
        row.update(extra)
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        out: dict = {"n_images": len(self.rows)}
        for key in ("psnr", "ssim", "lpips", "psnr_input", "ssim_input", "seconds"):
            values = [r[key] for r in self.rows if key in r and math.isfinite(r[key])]
            if values:
                out[key] = float(np.mean(values))
        if self.fid is not None and len(self.rows) >= 2:
            out["fid"] = float(self.fid.compute())
        return out


def _to_float_tensor(img: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)


def tensor_to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """NCHW float [0,1] -> list of uint8 HxWx3 (the PNG that would be saved)."""
    arr = to_uint8(batch.detach().float().cpu())
    return [arr] if arr.ndim == 3 else list(arr)


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
    ("lpips", "LPIPS", ".4f"), ("fid", "FID", ".2f"), ("nfe", "NFEs", "d"), ("seconds_per_image", "s/image", ".3f"),
]
