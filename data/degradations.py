"""Degradations: MATLAB bicubic resizing, SR upsampling, inpainting masks, noise, blur and synthetic rain.

Images are float in [0, 1]. Resizing and the image-to-image degradations take either a numpy HxWxC (or
HxW) array or a torch CxHxW / NxCxHxW tensor and return the same kind. Masks are float32 numpy HxW with
1 = known pixel and 0 = missing. Everything random takes a `seed` and draws from its own numpy Generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from core.io import read_image

Image = np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------------
# MATLAB imresize (bicubic, antialiased when shrinking)
# ------------------------------------------------------------------------------------------------
def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, the one MATLAB's 'bicubic' uses."""
    ax = np.abs(x)
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """(out_len, in_len) matrix M such that out = M @ in along one axis, with MATLAB's symmetric boundary."""
    shrink_aa = antialias and scale < 1
    # When shrinking, MATLAB stretches the kernel by 1/scale so it also low-pass filters (the antialiasing).
    width = 4.0 / scale if shrink_aa else 4.0
    out_pos = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel x (1-based) sits at input coordinate u: pixel edges of both grids line up.
    centre = out_pos / scale + 0.5 * (1.0 - 1.0 / scale)
    first = np.floor(centre - width / 2.0)
    taps = int(math.ceil(width)) + 2
    src = first[:, None] + np.arange(taps)[None, :]  # 1-based input positions, may fall outside the image
    dist = centre[:, None] - src
    weights = scale * _cubic(dist * scale) if shrink_aa else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Positions outside [1, in_len] mirror back in (MATLAB's 'symmetric' padding: edge pixel repeated).
    period = 2 * in_len
    wrapped = np.mod(src - 1, period).astype(np.int64)
    wrapped = np.where(wrapped < in_len, wrapped, period - 1 - wrapped)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(matrix, (rows, wrapped.ravel()), weights.ravel())
    return matrix


def _output_length(in_len: int, scale: float) -> int:
    # The tiny slack keeps e.g. 300 * (1/3) from rounding up to 101 through floating-point error.
    return max(1, math.ceil(in_len * scale - 1e-9))


def imresize(img: Image, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> Image:
    """MATLAB `imresize(img, scale)` / `imresize(img, [h w])` with the bicubic kernel, on float images.

    Give either `scale` (output size ceil(in * scale), that scale on both axes, as MATLAB) or `size` = (h, w)
    (each axis then uses its own out/in ratio). Accepts numpy HxW / HxWxC or torch CxHxW / NxCxHxW; returns
    the same kind and dtype, without rounding or clipping (bicubic may overshoot [0, 1] a little, as MATLAB).
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")
    is_numpy = isinstance(img, np.ndarray)
    if is_numpy and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"imresize expects a float image, got {img.dtype}: divide by 255 first")
    in_h, in_w = (img.shape[0], img.shape[1]) if is_numpy else (img.shape[-2], img.shape[-1])
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        out_h, out_w = _output_length(in_h, scale), _output_length(in_w, scale)
        scale_h = scale_w = float(scale)
    rows = _resize_matrix(in_h, out_h, scale_h, antialias)
    cols = _resize_matrix(in_w, out_w, scale_w, antialias)
    if is_numpy:
        data = img if img.ndim == 3 else img[:, :, None]
        rows_m, cols_m = rows.astype(data.dtype), cols.astype(data.dtype)
        channels = data.shape[2]
        tall = (rows_m @ data.reshape(in_h, in_w * channels)).reshape(out_h, in_w, channels)
        out = (tall.transpose(0, 2, 1) @ cols_m.T).transpose(0, 2, 1)
        return np.ascontiguousarray(out if img.ndim == 3 else out[:, :, 0])
    rows_t = torch.from_numpy(rows).to(device=img.device, dtype=img.dtype)
    cols_t = torch.from_numpy(cols).to(device=img.device, dtype=img.dtype)
    return torch.matmul(torch.matmul(rows_t, img), cols_t.T)


def upsample_bicubic(lq: torch.Tensor, scale: int, clamp: bool = False) -> torch.Tensor:
    """Bicubic upsampling of a CxHxW / NxCxHxW LR image by an integer factor: IR-SDE's SR condition mu.

    Same call as the official `upscale` (F.interpolate, mode='bicubic', scale_factor, align_corners=False),
    which it applies to the LR patch, unclamped. Note torch's bicubic kernel has a = -0.75 (MATLAB's: -0.5),
    as in the official code. The result can overshoot [0, 1] a little; `clamp=True` clips it.
    """
    batched = lq.ndim == 4
    out = F.interpolate(lq if batched else lq[None], scale_factor=scale, mode="bicubic", align_corners=False)
    if clamp:
        out = out.clamp(0.0, 1.0)
    return out if batched else out[0]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an HxW(xC) array so both sides are multiples of `scale` (bottom/right dropped, as BasicSR)."""
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % scale, : w - w % scale]


# ------------------------------------------------------------------------------------------------
# Inpainting masks: float32 HxW, 1 = known, 0 = missing
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Noise, blur, rain
# ------------------------------------------------------------------------------------------------
def _as_nchw(img: Image) -> tuple[torch.Tensor, Callable[[torch.Tensor], Image]]:
    """View any supported image as a float32 NxCxHxW tensor, plus the function that turns a result back."""
    if isinstance(img, np.ndarray):
        gray = img.ndim == 2
        data = img[:, :, None] if gray else img
        dtype = img.dtype
        tensor = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1), dtype=np.float32))[None]

        def back_np(out: torch.Tensor) -> np.ndarray:
            arr = out[0].numpy().transpose(1, 2, 0).astype(dtype)
            return np.ascontiguousarray(arr[:, :, 0] if gray else arr)
        return tensor, back_np
    if img.ndim == 3:
        return img[None].float(), lambda out: out[0].to(img.dtype)
    return img.float(), lambda out: out.to(img.dtype)


def _filter(tensor: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Correlate every channel with one 2-D kernel; mirror borders (replicate when the image is too small)."""
    pad = max(kernel.shape) // 2
    border = "reflect" if min(tensor.shape[-2:]) > pad else "replicate"
    weight = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))[None].to(tensor.device)
    return kornia.filters.filter2d(tensor, weight, border_type=border)


def line_kernel(length: int, angle: float) -> np.ndarray:
    """Odd-sized square kernel holding a line of `length` px at `angle` degrees (counter-clockwise from
    horizontal) through its centre, normalised to sum 1. Point-symmetric, so correlation = convolution."""
    length = max(int(length), 1)
    size = length if length % 2 == 1 else length + 1
    centre = (size - 1) / 2.0
    kernel = np.zeros((size, size), dtype=np.float64)
    theta = np.deg2rad(angle)
    # Supersample the segment [-length/2, length/2] at evenly spaced midpoints and drop each sample into its
    # nearest pixel: an axis-aligned line then gets exactly equal weights, i.e. a box (uniform) motion blur.
    steps = 8 * length
    t = (np.arange(steps) + 0.5) / steps * length - length / 2.0
    rows = np.clip(np.round(centre - t * np.sin(theta)), 0, size - 1).astype(np.int64)  # image rows grow down
    cols = np.clip(np.round(centre + t * np.cos(theta)), 0, size - 1).astype(np.int64)
    np.add.at(kernel, (rows, cols), 1.0)
    kernel = (kernel + kernel[::-1, ::-1]) / 2.0  # exact point symmetry despite floating-point sampling
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur(img: Image, sigma: float, kernel_size: int | None = None) -> Image:
    """Isotropic Gaussian blur (kornia), reflect borders; kernel 2*ceil(3 sigma)+1 unless given."""
    size = kernel_size if kernel_size is not None else 2 * math.ceil(3 * sigma) + 1
    tensor, back = _as_nchw(img)
    border = "reflect" if min(tensor.shape[-2:]) > size // 2 else "replicate"
    out = kornia.filters.gaussian_blur2d(tensor, (size, size), (float(sigma), float(sigma)),
                                         border_type=border)
    return back(out)


def motion_blur(img: Image, length: int = 9, angle: float = 0.0) -> Image:
    """Linear motion blur: average along a `length`-pixel line at `angle` degrees, reflect borders."""
    tensor, back = _as_nchw(img)
    return back(_filter(tensor, line_kernel(length, angle)))


def add_gaussian_noise(img: Image, sigma: float, seed: int, clip: bool = False) -> Image:
    """img + N(0, (sigma/255)^2), `sigma` on the 0-255 scale as papers quote it. Not clipped by default,
    like the official IR-SDE `add_noise` and the usual AWGN benchmarks; a seed and shape fix the noise."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(tuple(img.shape), dtype=np.float32) * np.float32(sigma / 255.0)
    if isinstance(img, np.ndarray):
        out = img + noise.astype(img.dtype)
        return np.clip(out, 0.0, 1.0) if clip else out
    out = img + torch.from_numpy(noise).to(device=img.device, dtype=img.dtype)
    return out.clamp(0.0, 1.0) if clip else out


def rain_layer(h: int, w: int, seed: int, density: float = 0.006, length: tuple[int, int] = (12, 28),
               angle: tuple[float, float] = (60.0, 120.0), jitter: float = 4.0, width_sigma: float = 0.6,
               strength: tuple[float, float] = (0.5, 0.9)) -> np.ndarray:
    """A float32 HxW streak layer in [0, 1]: sparse drops smeared along one dominant angle (drawn from
    `angle`, 90 = vertical) with a little per-image `jitter`, softened by a small Gaussian: thin lines."""
    rng = np.random.default_rng(seed)
    main_angle = rng.uniform(*angle)
    bright = rng.uniform(*strength, size=(h, w))
    drops = np.where(rng.random((h, w)) < density, bright, 0.0).astype(np.float32)
    tensor = torch.from_numpy(drops)[None, None]
    layer = torch.zeros_like(tensor)
    # Two streak lengths at slightly different angles make the rain look less like a single stamp.
    for _ in range(2):
        streak_len = int(rng.integers(length[0], length[1] + 1))
        kernel = line_kernel(streak_len, main_angle + rng.uniform(-jitter, jitter))
        kernel = kernel / kernel.max()  # keep each drop's brightness along its streak
        layer = layer + _filter(tensor, kernel) / 2.0
    layer = kornia.filters.gaussian_blur2d(layer, (5, 5), (width_sigma, width_sigma), border_type="reflect")
    return layer[0, 0].clamp(0.0, 1.0).numpy()


def synthetic_rain(img: Image, seed: int, **layer_options: float | tuple[float, float]) -> Image:
    """Add bright rain streaks by screen blending a `rain_layer`: 1 - (1 - img)(1 - rain), stays in [0, 1]."""
    tensor, back = _as_nchw(img)
    rain = torch.from_numpy(rain_layer(tensor.shape[-2], tensor.shape[-1], seed, **layer_options))
    out = 1.0 - (1.0 - tensor) * (1.0 - rain.to(tensor.device))
    return back(out)



# ------------------------------------------------------------------------------------------------
# Picklable makers used by the datasets: LQ makers are called as f(gt, seed), mask makers as f(h, w, seed)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseLQ:
    """GT + Gaussian noise of `sigma` (0-255 scale)."""

    sigma: float = 25.0

    def __call__(self, gt: np.ndarray, seed: int) -> np.ndarray:
        return add_gaussian_noise(gt, self.sigma, seed)


@dataclass(frozen=True)
class RainLQ:
    """GT + synthetic rain streaks."""

    def __call__(self, gt: np.ndarray, seed: int) -> np.ndarray:
        return synthetic_rain(gt, seed)


@dataclass(frozen=True)
class BlurLQ:
    """Gaussian blur of `sigma` px (deterministic; the seed is unused)."""

    sigma: float = 1.5

    def __call__(self, gt: np.ndarray, seed: int) -> np.ndarray:
        return gaussian_blur(gt, self.sigma)


@dataclass(frozen=True)
class BicubicDownLQ:
    """The LR image: MATLAB bicubic downscaling by 1/scale, clipped to [0, 1] as an 8-bit LR file would be."""

    scale: int = 4

    def __call__(self, gt: np.ndarray, seed: int) -> np.ndarray:
        return np.clip(imresize(gt, 1.0 / self.scale), 0.0, 1.0)


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
