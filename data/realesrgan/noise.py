"""The degradation's noise, one image at a time with that image's generator (basicsr/data/degradations.py,
random_add_gaussian_noise_pt / random_add_poisson_noise_pt with clip=True, rounds=False).

Gaussian: img + N(0, (sigma / 255)^2), per channel, or one gray field shared by the three channels.
Poisson (shot noise): the image rounded to 8 bits, I, with v = 2^ceil(log2(number of distinct values of I))
levels: noise = scale (Poisson(v I) / v - I), per channel or from the gray image (torchvision's luma weights)
shared by the channels. The sum is clipped to [0, 1].
"""

from __future__ import annotations

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale, which the official Poisson noise uses


def gaussian_noise(image: torch.Tensor, sigma: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """(1, C, h, w) noise of std sigma / 255; with `gray` one field repeated over the channels."""
    shape = (1, 1, *image.shape[-2:]) if gray else tuple(image.shape)
    noise = torch.randn(shape, generator=generator, device=image.device, dtype=image.dtype) * (sigma / 255.0)
    return noise.expand_as(image)


def _levels(image: torch.Tensor) -> torch.Tensor:
    """2^ceil(log2(number of distinct 8-bit values in the image)), as a tensor (no host synchronisation)."""
    codes = (image * 255.0).round().clamp(0, 255).to(torch.int64).flatten()
    distinct = (torch.bincount(codes, minlength=256) > 0).sum().to(image.dtype)
    return torch.exp2(torch.ceil(torch.log2(distinct)))


def poisson_noise(image: torch.Tensor, scale: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """(1, C, h, w) shot noise of a [0, 1] image, times `scale`; with `gray` computed on the luma and repeated."""
    if gray:
        weights = torch.tensor(GRAY_WEIGHTS, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        image = (image * weights).sum(dim=1, keepdim=True)
    quantised = (image * 255.0).round().clamp(0, 255) / 255.0
    levels = _levels(quantised)
    noisy = torch.poisson(quantised * levels, generator=generator) / levels
    return ((noisy - quantised) * scale).expand(1, 3, *image.shape[-2:])


def add_noise(image: torch.Tensor, kind: str, amount: float, gray: bool, generator: torch.Generator) -> torch.Tensor:
    """image + noise, clipped to [0, 1]; kind "gaussian" (amount = sigma, 0-255 scale) or "poisson" (amount = scale)."""
    make = gaussian_noise if kind == "gaussian" else poisson_noise
    return (image + make(image, amount, gray, generator)).clamp(0.0, 1.0)
