"""Filtering for the degradation model: BasicSR's filter2D (a per-image kernel, mirrored borders) and USMSharp
(basicsr/utils/img_process_util.py), with kornia on the images' device."""

from __future__ import annotations

import kornia
import torch

USM_RADIUS = 51  # USMSharp(radius=50): made odd
USM_WEIGHT = 0.5
USM_THRESHOLD = 10  # on the 0-255 scale


def _border(image: torch.Tensor, kernel_size: int) -> str:
    # Mirror without repeating the edge (cv2's BORDER_REFLECT_101 = torch "reflect") as the official filter2D;
    # an image no larger than the half-kernel cannot be mirrored, so it repeats its edge instead (the official
    # code would stop there; only tiny test images get this far).
    return "reflect" if min(image.shape[-2:]) > kernel_size // 2 else "replicate"


def filter_images(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image of (B, C, H, W) with its own kernel of (B, k, k), every channel alike, mirrored
    borders, as the official filter2D. The kernels are zero-padded to a common size; each is applied at its
    true support (a 7x7 kernel costs 49 taps, not 441; same result, since the zero taps add nothing and the
    mirrored pixels within reach are the same), samples of equal support in one call, identities skipped."""
    supports = [kernel_support(k) for k in kernels]
    out = images.clone()
    for size in sorted(set(supports)):
        rows = [i for i, s in enumerate(supports) if s == size]
        group = kernels[rows]
        if size == 1 and bool((group[:, group.shape[-1] // 2, group.shape[-1] // 2] == 1).all()):
            continue  # the pulse: filtering changes nothing
        cut = (group.shape[-1] - size) // 2
        group = group[:, cut:cut + size, cut:cut + size].to(device=images.device, dtype=images.dtype)
        index = torch.tensor(rows, device=images.device)
        filtered = kornia.filters.filter2d(images[index], group, border_type=_border(images, size))
        out.index_copy_(0, index, filtered)
    return out


def kernel_support(kernel: torch.Tensor) -> int:
    """Size of the smallest centred odd square that holds every non-zero tap of a (zero-padded) kernel."""
    taps = torch.nonzero(kernel)
    if taps.numel() == 0:
        return 1
    return 2 * int((taps - kernel.shape[-1] // 2).abs().max()) + 1


def usm_kernel_1d(radius: int = USM_RADIUS) -> torch.Tensor:
    """cv2.getGaussianKernel(radius, 0): a normalised Gaussian whose sigma is cv2's default for that size,
    0.3 ((radius - 1) / 2 - 1) + 0.8 (8.0 for 51 taps)."""
    sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8
    x = torch.arange(radius, dtype=torch.float64) - (radius - 1) / 2
    kernel = torch.exp(-x * x / (2 * sigma * sigma))
    return kernel / kernel.sum()


def usm_sharpen(images: torch.Tensor, weight: float = USM_WEIGHT, threshold: float = USM_THRESHOLD,
                radius: int = USM_RADIUS) -> torch.Tensor:
    """Unsharp masking as BasicSR's USMSharp: sharp = clip(I + weight (I - G*I), 0, 1), blended with I through the
    Gaussian-blurred mask |I - G*I| x 255 > threshold. The 51x51 Gaussian is applied as two 1-D passes (the
    official 2-D kernel is their outer product: same result up to float rounding, 25x fewer operations)."""
    radius = radius + 1 - radius % 2
    kernel = usm_kernel_1d(radius).to(device=images.device, dtype=images.dtype)[None]
    border = _border(images, radius)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return kornia.filters.filter2d_separable(x, kernel, kernel, border_type=border)

    residual = images - blur(images)
    mask = (residual.abs() * 255 > threshold).to(images.dtype)
    soft_mask = blur(mask)
    sharp = (images + weight * residual).clamp(0.0, 1.0)
    return soft_mask * sharp + (1 - soft_mask) * images
