"""Real-ESRGAN's two-stage ("high-order") degradation, applied on the device to a batch of GT crops, as the official
feed_data of DiffIR-RealSR (and Real-ESRNet / Real-ESRGAN) does in its training step:

    [USM-sharpen the GT (gt_usm)] -> blur (kernel 1) -> random resize -> Gaussian or Poisson noise -> JPEG
    -> [blur (kernel 2), with second_blur_prob] -> random resize -> noise -> then, in random order,
       [resize to HR / scale + sinc filter] + JPEG  or  JPEG + [resize to HR / scale + sinc filter]
    -> clamp to [0, 1] and round to 8 bits -> paired random crop of gt_size (GT) and gt_size / scale (LQ).

Determinism: every random choice of sample i (kernels, resize factors and modes, noise type, level and field,
JPEG qualities, order, crop) comes from its own generator, seeded by (seed, epoch, dataset index) through
`sample_generators`. So a sample is degraded the same way whatever batch, position, rank or resume it arrives
in. The parameters are drawn on the CPU; the noise fields are drawn on the images' device by a generator seeded
from the sample's CPU generator (CPU and CUDA runs therefore see different, but each reproducible, noise).

Unlike the official code, which draws the resize, the noise type and the final order once per batch (and keeps a
pool of 180 past pairs to mix batches, see data.realesrgan.pool), every sample gets its own. Images then differ
in size in the middle of the chain: they are processed one by one there, and the batched steps (JPEG, the
first blur and the final sinc) run once for the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import DataError
from data.realesrgan.filters import filter_images, usm_sharpen
from data.realesrgan.jpeg import jpeg_ragged
from data.realesrgan.noise import add_noise
from data.realesrgan.options import OFFICIAL, DegradationOptions
from data.realesrgan.params import SampleParams, StageParams, draw_sample_params

Images = list[torch.Tensor]  # one (1, C, h, w) tensor per sample, sizes may differ


@dataclass(frozen=True)
class Degraded:
    """`lq, gt = degrade(...)` unpacks the LQ batch and the training target (USM-sharpened when gt_usm);
    `gt_plain` is the same crop of the unsharpened GT (a GAN's discriminator target, for example)."""

    lq: torch.Tensor
    gt: torch.Tensor
    gt_plain: torch.Tensor
    params: tuple[SampleParams, ...]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.lq, self.gt))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixing (seed, epoch, dataset index) (numpy's SeedSequence hash: nearby triples give
    unrelated seeds)."""
    if min(seed, epoch, index) < 0:
        raise DataError(f"Degradation seeds must be non-negative: got seed={seed}, epoch={epoch}, index={index}.")
    words = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def sample_generators(seed: int, epoch: int, indices: Sequence[int] | torch.Tensor) -> list[torch.Generator]:
    """One CPU generator per sample of a batch, from (seed, epoch, that sample's dataset index)."""
    indices = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    return [torch.Generator().manual_seed(sample_seed(seed, epoch, int(i))) for i in indices]


def _check(gt: torch.Tensor, n_generators: int, scale: int, options: DegradationOptions) -> None:
    if gt.ndim != 4 or gt.shape[1] != 3:
        raise DataError(f"The Real-ESRGAN degradation takes an RGB batch (B, 3, H, W); got {tuple(gt.shape)}.")
    if n_generators != gt.shape[0]:
        raise DataError(f"{n_generators} generators for a batch of {gt.shape[0]}: give one per sample.")
    h, w = gt.shape[-2:]
    if scale < 1 or h % scale or w % scale:
        raise DataError(f"GT crops of {h}x{w} do not divide by the SR scale {scale}: use a patch size divisible by it.")
    smallest = min(h * options.resize_range[0], h / scale * options.resize_range2[0],
                   w * options.resize_range[0], w / scale * options.resize_range2[0])
    if smallest < 1:
        raise DataError(f"GT crops of {h}x{w} are too small for the degradation at x{scale}: the random resizes "
                        f"(down to {options.resize_range[0]} and {options.resize_range2[0]} / scale) would leave "
                        f"no pixel. Use larger crops.")
    if options.gt_size is not None and (options.gt_size % scale or options.gt_size > min(h, w)):
        raise DataError(f"degradation.gt_size={options.gt_size} must divide by the scale {scale} and fit in the "
                        f"{h}x{w} GT crops.")


def _resize(image: torch.Tensor, mode: str, size: tuple[int, int] | None = None,
            factor: float | None = None) -> torch.Tensor:
    # torch's interpolate, as the official code calls it (a factor for the first stage's resize: the sampling
    # grid then uses that factor, not the rounded size); no antialiasing, no clamping.
    return F.interpolate(image, size=size, scale_factor=factor, mode=mode)


def _noise(images: Images, stages: Sequence[StageParams], generators: Sequence[torch.Generator]) -> Images:
    return [add_noise(img, s.noise, s.noise_amount, s.gray_noise, g) for img, s, g in zip(images, stages, generators)]


def _jpeg(images: Images, qualities: Sequence[float], options: DegradationOptions) -> Images:
    if not images:
        return []
    quality = torch.tensor(qualities, dtype=torch.float32, device=images[0].device)
    # clamp first, as the official code does before its JPEG
    return jpeg_ragged([img.clamp(0.0, 1.0) for img in images], quality, options.jpeg_standard_tables)


def _sinc(images: torch.Tensor, params: Sequence[SampleParams]) -> torch.Tensor:
    return filter_images(images, torch.stack([p.sinc for p in params]))


def degrade(gt: torch.Tensor, generators: Sequence[torch.Generator | int], scale: int,
            options: DegradationOptions = OFFICIAL) -> Degraded:
    """Degrade a batch of GT crops (B, 3, H, W) in [0, 1], one CPU generator per sample (`sample_generators`;
    they are consumed: pass fresh ones for a repeat) or one integer seed per sample, for SR by `scale` (1 for
    restoration at the same size). Returns `Degraded`: `lq, gt = degrade(...)`, the LQ (B, 3, gt_size / scale,
    gt_size / scale), 8-bit values as float32, and the target crop (B, 3, gt_size, gt_size) (whole images when
    gt_size is None). Runs on gt's device; no gradients."""
    _check(gt, len(generators), scale, options)
    generators = [g if isinstance(g, torch.Generator) else torch.Generator().manual_seed(int(g)) for g in generators]
    with torch.no_grad():
        return _degrade(gt.float(), generators, int(scale), options)


def _degrade(gt: torch.Tensor, generators: list[torch.Generator], scale: int,
             options: DegradationOptions) -> Degraded:
    h, w = gt.shape[-2:]
    device = gt.device
    params = [draw_sample_params(g, options, (h, w), scale) for g in generators]
    noise_gens = [torch.Generator(device=device).manual_seed(p.noise_seed) for p in params]
    first, second = [p.stage1 for p in params], [p.stage2 for p in params]
    target = usm_sharpen(gt) if options.gt_usm else gt

    # ---- first degradation: blur (batched, one kernel per sample), resize, noise, JPEG
    out = filter_images(target, torch.stack([s.kernel for s in first]))
    images = [_resize(x[None], s.resize_mode, factor=s.resize_scale) if s.resize_kind != "keep" else x[None]
              for x, s in zip(out, first)]
    images = _noise(images, first, noise_gens)
    images = _jpeg(images, [s.jpeg_quality for s in first], options)

    # ---- second degradation: optional blur, resize relative to HR / scale, noise
    images = [filter_images(img, s.kernel[None]) if s.blur else img for img, s in zip(images, second)]
    images = [_resize(img, s.resize_mode, size=(int(h / scale * s.resize_scale), int(w / scale * s.resize_scale)))
              for img, s in zip(images, second)]
    images = _noise(images, second, noise_gens)

    # ---- final step, per sample in one of two orders: [resize back + sinc] + JPEG, or JPEG + [resize back + sinc]
    lr_size = (h // scale, w // scale)
    late = [i for i, p in enumerate(params) if not p.resize_first]  # JPEG before the resize
    for i, coded in zip(late, _jpeg([images[i] for i in late], [second[i].jpeg_quality for i in late], options)):
        images[i] = coded
    out = torch.cat([_resize(img, p.final_mode, size=lr_size) for img, p in zip(images, params)])
    out = _sinc(out, params)
    early = [i for i, p in enumerate(params) if p.resize_first]
    if early:
        coded = _jpeg(list(out[early].split(1)), [second[i].jpeg_quality for i in early], options)
        out.index_copy_(0, torch.tensor(early, device=device), torch.cat(coded))
    lq = (out * 255.0).round().clamp(0, 255) / 255.0

    # ---- paired random crop (per sample)
    if options.gt_size is None:
        return Degraded(lq=lq, gt=target, gt_plain=gt, params=tuple(params))
    patch = options.gt_size // scale
    crops = [(slice(t, t + patch), slice(left, left + patch)) for t, left in (p.crop for p in params)]
    hr = [(slice(a.start * scale, a.stop * scale), slice(b.start * scale, b.stop * scale)) for a, b in crops]
    lq = torch.stack([lq[i, :, a, b] for i, (a, b) in enumerate(crops)])
    gt_plain = torch.stack([gt[i, :, a, b] for i, (a, b) in enumerate(hr)])
    target = torch.stack([target[i, :, a, b] for i, (a, b) in enumerate(hr)]) if options.gt_usm else gt_plain
    return Degraded(lq=lq, gt=target, gt_plain=gt_plain, params=tuple(params))
