"""Blur kernels for DiffPIR: Gaussian, random motion, bicubic (for x2/x3/x4 SR), and loading from disk.

Every kernel is a 2-D float32 tensor that sums to 1, so blurring keeps the mean brightness (and maps the
constant image to itself, which is what lets the operators work in [-1, 1] and in [0, 1] alike). The operators
put a kernel's origin at index (h // 2, w // 2), so odd sizes are centred exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import kornia
import numpy as np
import torch
from scipy import ndimage

from core.errors import DataError
from data.resize import cubic

KERNEL_SUM_TOLERANCE = 1e-3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian exp(−r² / 2σ²) on a size x size grid centred at (size − 1) / 2, summing to 1 (kornia's).

    The official code filters a delta with scipy's gaussian_filter, which truncates at 4σ and folds tails
    beyond the window back in (mode 'reflect'); on 61x61 the two differ by at most 1.5e-4 of the peak for
    σ <= 7.5 and by 3e-3 at σ = 9, the largest std it draws.
    """
    if size < 1 or sigma <= 0:
        raise ValueError(f"gaussian_kernel needs size >= 1 and sigma > 0, got size={size}, sigma={sigma}")
    kernel = kornia.filters.get_gaussian_kernel2d((size, size), (sigma, sigma), force_even=True, dtype=torch.float64)
    return kernel[0].float()


def official_gaussian_sigma(image_index: int) -> float:
    """The std the official deblurring script draws for image number `image_index`: 3·|2·U + 1| in [3, 9).

    It seeds NumPy's legacy generator with 10·index before the draw; RandomState reproduces the same stream.
    """
    uniform = np.random.RandomState(10 * image_index).rand()
    return float(3.0 * abs(uniform * 2.0 + 1.0))


def motion_kernel(size: int = 61, intensity: float = 0.5, seed: int | None = None) -> torch.Tensor:
    """A random camera-shake kernel: a smooth random trajectory drawn into a size x size grid, summing to 1.

    The trajectory is a chain of segments whose heading turns by an angular velocity that itself drifts at
    random; `intensity` in [0, 1] scales that drift (0 gives a straight streak, 1 a strongly curved, wandering
    path) and lengthens the path. The camera's speed changes from segment to segment, so slow parts collect
    more light. The path is centred on its centre of mass, shrunk if it would leave the grid, splatted with
    bilinear weights and softened by a small Gaussian, in the spirit of LeviBorodenko/motionblur (which the
    official code uses).
    """
    if size < 5:
        raise ValueError(f"motion_kernel needs size >= 5, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"motion_kernel intensity must be in [0, 1], got {intensity}")
    rng = np.random.default_rng(seed)
    n_segments = 48
    path_length = size * rng.uniform(0.3, 0.6) * (1.0 + intensity)
    seg_lengths = rng.gamma(2.0, size=n_segments)
    seg_lengths *= path_length / seg_lengths.sum()

    # Angular velocity follows an AR(1) walk, so turns are smooth rather than zig-zag.
    turn_std = math.pi * intensity / math.sqrt(n_segments)
    omega = 0.0
    heading = rng.uniform(0.0, 2.0 * math.pi)
    headings = np.empty(n_segments)
    for k in range(n_segments):
        omega = 0.7 * omega + rng.normal(0.0, turn_std) if intensity > 0 else 0.0
        heading += omega
        headings[k] = heading
    dwell = rng.uniform(0.5, 1.5, size=n_segments)  # time spent per unit length on each segment

    points, weights = [], []
    start = np.zeros(2)
    for length, angle, slowness in zip(seg_lengths, headings, dwell):
        step = length * np.array([math.cos(angle), math.sin(angle)])
        n = max(2, int(math.ceil(length / 0.25)))
        frac = (np.arange(n) + 0.5) / n
        points.append(start + frac[:, None] * step)
        weights.append(np.full(n, slowness * length / n))
        start = start + step
    pts = np.concatenate(points)
    w = np.concatenate(weights)
    pts -= (w[:, None] * pts).sum(0) / w.sum()
    radius = np.abs(pts).max()
    max_radius = (size - 1) / 2.0 - 3.0  # leave room for the bilinear splat and the softening
    if radius > max_radius:
        pts *= max_radius / radius

    centre = (size - 1) / 2.0
    grid = np.zeros((size, size))
    cols, rows = pts[:, 0] + centre, pts[:, 1] + centre
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    fc, fr = cols - c0, rows - r0
    corners = ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc))
    for dr, dc, share in corners:
        np.add.at(grid, (r0 + dr, c0 + dc), w * share)
    grid = ndimage.gaussian_filter(grid, sigma=0.5 * max(1.0, size / 61.0), mode="constant")
    grid = np.clip(grid, 0.0, None)
    return torch.from_numpy(grid / grid.sum()).float()


def bicubic_kernel(scale: int, size: int | None = None) -> torch.Tensor:
    """The blur that, followed by keeping the upper-left pixel of each s x s block, is bicubic downscaling.

    MATLAB's imresize(x, 1/s, 'bicubic') (antialiased) computes LR pixel i from HR pixels p with weights
    cubic((p − c_i) / s) / s around the centre c_i = s·i + (s − 1)/2. Writing the decimation as p = s·i + e,
    the weight on offset e is cubic((e − (s − 1)/2) / s) / s, a separable kernel that is shifted by half a
    pixel for even s. The official code uses 25x25 kernels estimated for the same degradation
    (kernels_bicubicx234.mat); these analytic ones have the same shape and centre. Away from the image border,
    the circular blur + decimation with this kernel equals antialiased bicubic downscaling; at the border
    MATLAB reflects the image. `size` defaults to the smallest odd size that holds the support (9, 13, 19 for
    x2, x3, x4).
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"bicubic_kernel needs a positive integer scale, got {scale}")
    scale = int(scale)
    shift = (scale - 1) / 2.0
    reach = int(math.ceil(shift + 2 * scale)) - 1  # largest |offset| with a non-zero weight
    min_size = 2 * reach + 1
    size = min_size if size is None else size
    if size < min_size or size % 2 == 0:
        raise ValueError(f"bicubic_kernel x{scale} needs an odd size of at least {min_size}, got {size}")
    origin = size // 2
    # Index j of the kernel multiplies x[i + origin − j] in the circular convolution, so j = origin − e.
    offsets = origin - np.arange(size, dtype=np.float64)
    profile = cubic((offsets - shift) / scale) / scale
    profile /= profile.sum()
    return torch.from_numpy(np.outer(profile, profile)).float()


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"Cannot read the kernel file {path}: {err}") from err
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as image:
                array = np.asarray(image).astype(np.float64)
        except OSError as err:
            raise DataError(f"Cannot read the kernel image {path}: {err}") from err
        # A grey kernel saved as RGB(A) has identical colour channels: accept it as 2-D.
        if array.ndim == 3 and np.all(array[..., :3] == array[..., :1]):
            array = array[..., 0]
        return array
    raise DataError(f"Kernel file {path} has an unknown format; use .npy or an image ({IMAGE_SUFFIXES})")


def load_kernel(path: str | Path, normalize: bool = False) -> torch.Tensor:
    """Load a 2-D blur kernel from .npy or an image file as a float32 tensor that sums to 1.

    The kernel must already sum to 1 (within 1e-3) unless `normalize=True`, which divides it by its sum; an
    image file (values 0..255) therefore always needs normalize=True.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Kernel file {path} does not exist")
    kernel = _read_array(path)
    if kernel.ndim != 2:
        raise DataError(
            f"The kernel in {path} has shape {tuple(kernel.shape)}; a blur kernel must be a 2-D array (h, w)"
        )
    kernel = kernel.astype(np.float64)
    if kernel.size == 0 or not np.all(np.isfinite(kernel)):
        raise DataError(f"The kernel in {path} is empty or contains NaN/inf values")
    total = float(kernel.sum())
    if abs(total - 1.0) > KERNEL_SUM_TOLERANCE:
        if not normalize:
            raise DataError(
                f"The kernel in {path} sums to {total:.6g}, not 1 (tolerance {KERNEL_SUM_TOLERANCE}): a blur "
                f"kernel must keep the brightness. Pass normalize=True to load_kernel to divide it by its "
                f"sum, "
                f"or save it normalised"
            )
        if total <= 0:
            raise DataError(f"The kernel in {path} sums to {total:.6g}; it cannot be normalised to sum to 1")
        kernel = kernel / total
    return torch.from_numpy(kernel).float()
