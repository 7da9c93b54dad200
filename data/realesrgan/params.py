"""Every random choice of one sample's degradation, drawn up front from that sample's generator.

The draws follow the official distributions (basicsr RealESRGANDataset.__getitem__ for the kernels, DiffIR-RealSR
feed_data for the rest); the official code draws the resize, noise type and final order once per batch, here
they are drawn per sample (what the official training-pair pool, the queue, was there to approximate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.realesrgan.kernels import choice, random_blur_kernel, random_final_sinc, uniform
from data.realesrgan.options import RESIZE_MODES, DegradationOptions, StageOptions

RESIZE_KINDS = ("up", "down", "keep")


@dataclass(frozen=True)
class StageParams:
    kernel: torch.Tensor  # (k, k) float64, zero-padded to the largest kernel size
    kernel_info: dict
    blur: bool
    resize_kind: str  # up / down / keep
    resize_scale: float
    resize_mode: str
    noise: str  # gaussian / poisson
    noise_amount: float  # sigma (0-255) or Poisson scale
    gray_noise: bool
    jpeg_quality: float


@dataclass(frozen=True)
class SampleParams:
    stage1: StageParams
    stage2: StageParams
    sinc: torch.Tensor  # the final sinc (or pulse) kernel
    sinc_info: dict
    resize_first: bool  # final order: [resize back + sinc] then JPEG (True) or JPEG then [resize back + sinc]
    final_mode: str
    crop: tuple[int, int] | None  # (top, left) of the LR patch, None: no crop
    noise_seed: int  # seeds the generator on the images' device that draws this sample's noise


def _stage(generator: torch.Generator, stage: StageOptions, kernel: tuple[torch.Tensor, dict]) -> StageParams:
    blur = stage.blur_prob >= 1.0 or uniform(generator, 0.0, 1.0) < stage.blur_prob
    kind = RESIZE_KINDS[choice(generator, stage.resize_prob)]
    low, high = stage.resize_range
    scale = uniform(generator, 1.0, high) if kind == "up" else uniform(generator, low, 1.0) if kind == "down" else 1.0
    mode = RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), (), generator=generator))]
    gaussian = uniform(generator, 0.0, 1.0) < stage.gaussian_noise_prob
    amount = uniform(generator, *(stage.noise_range if gaussian else stage.poisson_scale_range))
    gray = uniform(generator, 0.0, 1.0) < stage.gray_noise_prob
    quality = uniform(generator, *stage.jpeg_range)
    return StageParams(kernel=kernel[0], kernel_info=kernel[1], blur=blur, resize_kind=kind, resize_scale=scale,
                       resize_mode=mode, noise="gaussian" if gaussian else "poisson", noise_amount=amount,
                       gray_noise=gray, jpeg_quality=quality)


def draw_sample_params(generator: torch.Generator, options: DegradationOptions, hr_size: tuple[int, int],
                       scale: int) -> SampleParams:
    """All of one sample's random choices, in a fixed order, from its generator. hr_size: the GT's (height,
    width); the LR patch of gt_size / scale is placed in the LR image of hr_size / scale."""
    first, second = options.stage(1), options.stage(2)
    kernel1 = random_blur_kernel(generator, first.blur)
    kernel2 = random_blur_kernel(generator, second.blur)  # drawn even when the second blur is skipped (official)
    sinc = random_final_sinc(generator, options.final_sinc_prob, options.kernel_range)
    stage1 = _stage(generator, first, kernel1)
    stage2 = _stage(generator, second, kernel2)
    resize_first = uniform(generator, 0.0, 1.0) < options.final_resize_first_prob
    final_mode = RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), (), generator=generator))]
    crop = None
    if options.gt_size is not None:
        patch = options.gt_size // scale
        top = int(torch.randint(hr_size[0] // scale - patch + 1, (), generator=generator))
        left = int(torch.randint(hr_size[1] // scale - patch + 1, (), generator=generator))
        crop = (top, left)
    noise_seed = int(torch.randint(2**62, (), generator=generator))
    return SampleParams(stage1=stage1, stage2=stage2, sinc=sinc[0], sinc_info=sinc[1], resize_first=resize_first,
                        final_mode=final_mode, crop=crop, noise_seed=noise_seed)
