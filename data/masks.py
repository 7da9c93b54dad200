"""Inpainting masks: float32 numpy HxW with 1 = known pixel and 0 = missing.

Generated masks (box, brush strokes, random pixels) take a `seed` and draw from their own numpy Generator;
`read_mask` reads RePaint's `gt_keep_masks` PNGs; `apply_mask` forms the inpainting LQ. The mask makers at
the end are the picklable callables f(h, w, seed) the datasets use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.io import list_images, read_image
from data.resize import Image


def box_mask(h: int, w: int, seed: int, box_size: tuple[int, int] | None = None) -> np.ndarray:
    """One missing rectangle (default half the height and width) at a random position inside the image."""
    rng = np.random.default_rng(seed)
    box_h, box_w = box_size if box_size is not None else (h // 2, w // 2)
    box_h, box_w = min(max(int(box_h), 1), h), min(max(int(box_w), 1), w)
    top = int(rng.integers(0, h - box_h + 1))
    left = int(rng.integers(0, w - box_w + 1))
    mask = np.ones((h, w), dtype=np.float32)
    mask[top:top + box_h, left:left + box_w] = 0.0
    return mask


def _paint_segment(holes: np.ndarray, start: np.ndarray, end: np.ndarray, radius: float) -> None:
    """Mark every pixel centre within `radius` of the segment start-end (a thick line with round caps)."""
    h, w = holes.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    seg = end - start
    length2 = float(seg @ seg)
    t = ((yy - start[0]) * seg[0] + (xx - start[1]) * seg[1]) / length2 if length2 > 0 else np.zeros_like(yy)
    t = np.clip(t, 0.0, 1.0)
    dist2 = (yy - (start[0] + t * seg[0])) ** 2 + (xx - (start[1] + t * seg[1])) ** 2
    holes |= dist2 <= radius * radius


def stroke_mask(h: int, w: int, seed: int, max_strokes: int = 4, max_vertices: int = 8,
                max_width_frac: float = 0.08, max_step_frac: float = 0.25) -> np.ndarray:
    """Free-form brush strokes (DeepFill-v2 style): random walks of thick segments that turn gradually."""
    rng = np.random.default_rng(seed)
    holes = np.zeros((h, w), dtype=bool)
    side = min(h, w)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        point = np.array([rng.uniform(0, h - 1), rng.uniform(0, w - 1)], dtype=np.float32)
        radius = rng.uniform(max(1.0, 0.02 * side), max(1.5, max_width_frac * side)) / 2.0
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, max_vertices + 1))):
            heading += rng.uniform(-np.pi / 3, np.pi / 3)  # bounded turns: brush-like, not jagged, strokes
            step = rng.uniform(0.05, max_step_frac) * side
            nxt = point + step * np.array([np.sin(heading), np.cos(heading)], dtype=np.float32)
            nxt = np.clip(nxt, [0, 0], [h - 1, w - 1]).astype(np.float32)
            _paint_segment(holes, point, nxt, radius)
            point = nxt
    return (~holes).astype(np.float32)


def random_pixel_mask(h: int, w: int, p: float = 0.5, seed: int = 0) -> np.ndarray:
    """Each pixel independently missing with probability `p` (DPS/DiffPIR 'random' inpainting)."""
    rng = np.random.default_rng(seed)
    return (rng.random((h, w)) >= p).astype(np.float32)


def resize_mask_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with torch's 'nearest' rule (source = floor(dst * in / out)), as IR-SDE."""
    h, w = mask.shape
    rows = np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int64)
    cols = np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int64)
    return np.ascontiguousarray(mask[rows][:, cols])


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A RePaint `gt_keep_masks` PNG: white (>= 128) keeps the pixel -> 1, black -> 0; optionally resized."""
    gray = read_image(path).mean(axis=2)
    mask = (gray >= 128).astype(np.float32)
    if size is not None and tuple(size) != mask.shape:
        mask = resize_mask_nearest(mask, (int(size[0]), int(size[1])))
    return mask


def apply_mask(img: Image, mask: Image) -> Image:
    """Inpainting LQ as official IR-SDE forms it: known pixels kept, missing pixels set to 1 (white).

    `img` numpy HxWxC with mask HxW, or torch CxHxW / NxCxHxW with mask HxW, 1xHxW or Nx1xHxW.
    """
    if isinstance(img, np.ndarray):
        keep = np.asarray(mask, dtype=img.dtype)
        if keep.ndim == img.ndim - 1:
            keep = keep[..., None]
        return img * keep + (1.0 - keep)
    keep = torch.as_tensor(mask, dtype=img.dtype, device=img.device)
    return img * keep + (1.0 - keep)


MASK_KINDS = ("box", "strokes", "pixels")


@dataclass(frozen=True)
class GeneratedMask:
    """Masks drawn by `box_mask`, `stroke_mask` or `random_pixel_mask` (with missing fraction `p`)."""

    kind: str = "strokes"
    p: float = 0.5

    def __call__(self, h: int, w: int, seed: int) -> np.ndarray:
        if self.kind == "box":
            return box_mask(h, w, seed)
        if self.kind == "strokes":
            return stroke_mask(h, w, seed)
        if self.kind == "pixels":
            return random_pixel_mask(h, w, self.p, seed)
        raise ValueError(f"unknown mask kind {self.kind!r}; use one of {MASK_KINDS}")


@dataclass(frozen=True)
class FolderMask:
    """Masks read from files (RePaint gt_keep_masks): file seed % count, resized (nearest) to the image.
    At test time the seed is the image index, so image i always gets mask i, as the official test does."""

    files: tuple[Path, ...]

    def __call__(self, h: int, w: int, seed: int) -> np.ndarray:
        return read_mask(self.files[seed % len(self.files)], (h, w))


def mask_for(mask: str, image_path: Path, image) -> torch.Tensor | None:
    """restore.py mask=: the known-pixel mask (1 x 1 x H x W on the image's device) of one input image from a mask
    file or a folder of masks named like the inputs; None for a generated kind (the restorer makes those)."""
    from core.errors import DataError

    if mask in ("batch", *MASK_KINDS):
        return None
    source = Path(mask)
    if source.is_dir():
        matches = [p for p in list_images(source) if p.stem == image_path.stem]
        if not matches:
            raise DataError(f"mask={source}: no mask named {image_path.stem}.* for the input {image_path.name}")
        source = matches[0]
    elif not source.is_file():
        raise DataError(f"mask={source}: no such file or folder (white = known pixel, black = to fill)")
    array = read_mask(source, None)
    if array.shape != tuple(image.shape[-2:]):
        raise DataError(f"mask={source} is {array.shape[0]}x{array.shape[1]} but {image_path.name} is "
                        f"{image.shape[-2]}x{image.shape[-1]}: the mask must have the image's size")
    return torch.from_numpy(array)[None, None].to(image.device)
