"""Synthetic degradations: Gaussian noise, Gaussian and motion blur (kornia filters), rain streaks, and the
picklable LQ makers f(gt, seed) the datasets use (bicubic downscaling among them).

Images are float in [0, 1], numpy HxWxC (or HxW) or torch CxHxW / NxCxHxW, returned as the same kind.
Everything random takes a `seed` and draws from its own numpy Generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import kornia
import numpy as np
import torch

from data.resize import Image, imresize


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
# Picklable LQ makers, called as f(gt, seed)
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
