"""The two-stage degradation on a batch: output sizes and values, per-sample seeding (independent of the batch it
comes in), measured noise levels and drawn parameters against the option ranges, the paired crop's alignment,
the filters and USM against OpenCV, and the checks on bad input."""

import math

import cv2
import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataError
from data.realesrgan import OFFICIAL, DegradationOptions, degrade, sample_generators, sample_seed, usm_sharpen
from data.realesrgan.filters import filter_images
from data.realesrgan.kernels import gaussian, pad_kernel, pulse
from data.realesrgan.noise import gaussian_noise, poisson_noise
from data.realesrgan.params import draw_sample_params

# Every step reduced to (nearly) the identity: a 0.1-px Gaussian is a delta in float, sizes kept, no noise, no
# final sinc, JPEG at quality 99 (quantization steps of 0.2-2 levels).
QUIET = {
    "kernel_list": ["iso"], "kernel_prob": [1], "sinc_prob": 0, "blur_sigma": [0.1, 0.1],
    "kernel_list2": ["iso"], "kernel_prob2": [1], "sinc_prob2": 0, "blur_sigma2": [0.1, 0.1],
    "resize_prob": [0, 0, 1], "resize_prob2": [0, 0, 1], "final_sinc_prob": 0,
    "gaussian_noise_prob": 1, "noise_range": [0, 0], "gaussian_noise_prob2": 1, "noise_range2": [0, 0],
    "jpeg_range": [99, 99], "jpeg_range2": [99, 99],
}


def photo_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-frequency content, like photographs at this scale)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_is_hr_over_scale_in_8_bit_steps(scale):
    gt = photo_batch(6, 96)
    out = degrade(gt, sample_generators(0, 0, range(6)), scale, DegradationOptions(gt_size=64))
    lq, target = out
    assert lq.shape == (6, 3, 64 // scale, 64 // scale) and target.shape == (6, 3, 64, 64)
    assert lq.dtype == torch.float32 and 0 <= float(lq.min()) and float(lq.max()) <= 1
    assert torch.equal((lq * 255).round() / 255, lq)
    for i, p in enumerate(out.params):  # the target is the GT crop at scale x the LQ patch's place
        top, left = p.crop[0] * scale, p.crop[1] * scale
        assert torch.equal(target[i], gt[i, :, top:top + 64, left:left + 64])
    whole = degrade(gt, sample_generators(0, 0, range(6)), scale, DegradationOptions(gt_size=None))
    assert whole.lq.shape == (6, 3, 96 // scale, 96 // scale) and torch.equal(whole.gt, gt)


def test_same_seed_epoch_index_same_degradation_whatever_the_batch():
    gt = photo_batch(8, 64)
    options = DegradationOptions(gt_size=48)
    full = degrade(gt, sample_generators(7, 2, range(8)), 4, options)
    again = degrade(gt, sample_generators(7, 2, range(8)), 4, options)
    assert torch.equal(full.lq, again.lq) and torch.equal(full.gt, again.gt)
    # another batch composition and order (another rank's shard, a resumed run): bit-identical per index
    order = [5, 2, 7]
    part = degrade(gt[order], sample_generators(7, 2, order), 4, options)
    for j, i in enumerate(order):
        assert torch.equal(part.lq[j], full.lq[i]) and torch.equal(part.gt[j], full.gt[i])
    # integer seeds are the same as generators seeded with them
    seeded = degrade(gt[:2], [sample_seed(7, 2, 0), sample_seed(7, 2, 1)], 4, options)
    assert torch.equal(seeded.lq, full.lq[:2])
    # a different seed, epoch or index degrades differently
    for seed, epoch, indices in [(8, 2, range(8)), (7, 3, range(8)), (7, 2, range(1, 9))]:
        other = degrade(gt, sample_generators(seed, epoch, indices), 4, options)
        assert all(not torch.equal(other.lq[i], full.lq[i]) for i in range(8))


def test_crops_align_lq_with_gt():
    # grey images: the q99 JPEG's 4:2:0 chroma would blur the colours of these random images by ~6 levels
    gt = photo_batch(6, 80).mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    options = DegradationOptions.from_config(QUIET, gt_size=48)
    same = degrade(gt, sample_generators(1, 0, range(6)), 1, options)
    assert (same.lq - same.gt).abs().mean() < 0.5 / 255 and (same.lq - same.gt).abs().max() < 4 / 255
    assert (same.lq - same.gt.roll(7, dims=-1)).abs().mean() > 5 * (same.lq - same.gt).abs().mean()
    half = degrade(gt, sample_generators(1, 0, range(6)), 2, options)
    pooled = torch.nn.functional.avg_pool2d(half.gt, 2)  # the "area" resize by exactly 1/2
    bilinear = torch.nn.functional.interpolate(half.gt, scale_factor=0.5, mode="bilinear")
    closest = torch.minimum((half.lq - pooled).abs().mean((1, 2, 3)), (half.lq - bilinear).abs().mean((1, 2, 3)))
    assert closest.max() < 2 / 255


def test_measured_noise_std_matches_the_drawn_sigma_within_the_range():
    # Gray noise (one field for the three channels) passes the JPEG's chroma subsampling untouched, so the
    # LQ of a flat grey GT is the noise: its std must be the drawn sigma (plus q99 JPEG + 8-bit rounding).
    n = 48
    gt = torch.full((n, 3, 64, 64), 0.5)
    options = DegradationOptions.from_config(QUIET, noise_range=[1, 30], gray_noise_prob=1, gt_size=None)
    out = degrade(gt, sample_generators(3, 0, range(n)), 1, options)
    measured = ((out.lq - 0.5) * 255).std(dim=(1, 2, 3))
    drawn = torch.tensor([p.stage1.noise_amount for p in out.params])
    assert bool(((measured - drawn).abs() < 0.03 * drawn + 0.35).all())
    assert 1 - 0.35 < float(measured.min()) and float(measured.max()) < 30 * 1.03 + 0.35
    assert float(drawn.max() - drawn.min()) > 20  # the range is actually explored
    channels = out.lq - out.lq.mean(dim=1, keepdim=True)
    assert float(channels.abs().max()) < 3 / 255  # gray: the same noise in every channel


def test_gaussian_noise_std_and_gray_fields():
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 3, 200, 200)
    color = gaussian_noise(image, 12.0, False, g)
    assert float(color.std()) * 255 == pytest.approx(12.0, rel=0.02)
    assert abs(float(torch.corrcoef(color[0].flatten(1))[0, 1])) < 0.02
    gray = gaussian_noise(image, 12.0, True, g)
    assert torch.equal(gray[0, 0], gray[0, 2]) and float(gray.std()) * 255 == pytest.approx(12.0, rel=0.02)


def test_poisson_noise_variance_is_the_shot_noise_of_the_levels():
    # A ramp holding all 256 levels: 2^ceil(log2 256) = 256 levels, so Poisson(256 I) / 256 - I has variance
    # I / 256 at intensity I; times the scale squared.
    g = torch.Generator().manual_seed(0)
    levels = torch.arange(256.0) / 255
    image = levels.view(1, 1, 1, 256).expand(1, 3, 400, 256).contiguous()
    scale = 1.7
    noise = poisson_noise(image, scale, False, g)
    var = noise[0].permute(2, 0, 1).reshape(256, -1).var(dim=1).double()
    expected = levels.double() / 256 * scale**2
    # 1200 pixels per level: each variance within 20% (5 standard errors), their sum within 2%, and the least
    # squares line through them has the slope scale^2 / 256 within 3% and no offset
    np.testing.assert_allclose(var[16:].numpy(), expected[16:].numpy(), rtol=0.2)
    assert float(var.sum() / expected.sum()) == pytest.approx(1.0, abs=0.02)
    slope, offset = np.polyfit(levels.numpy(), var.numpy(), 1)
    assert slope == pytest.approx(scale**2 / 256, rel=0.03) and abs(offset) < 1e-4
    assert float(noise[0, :, :, 0].abs().max()) == 0  # black stays black (no counts)
    gray = poisson_noise(image, scale, True, g)
    assert torch.equal(gray[0, 0], gray[0, 1])


def test_drawn_parameters_follow_the_official_options():
    n = 1500
    params = [draw_sample_params(g, OFFICIAL, (256, 256), 4) for g in sample_generators(0, 0, range(n))]

    def share(flags):
        return sum(flags) / n

    def near(p_hat, p):
        return abs(p_hat - p) < 4 * math.sqrt(p * (1 - p) / n)

    for k, stage in ((1, [p.stage1 for p in params]), (2, [p.stage2 for p in params])):
        o = OFFICIAL.stage(k)
        qualities = np.array([s.jpeg_quality for s in stage])
        assert o.jpeg_range[0] <= qualities.min() and qualities.max() <= o.jpeg_range[1]
        assert qualities.mean() == pytest.approx(sum(o.jpeg_range) / 2, abs=1.5)
        for kind, p in zip(("up", "down", "keep"), o.resize_prob):
            assert near(share(s.resize_kind == kind for s in stage), p)
        for s in stage:
            low, high = o.resize_range
            assert {"up": 1 <= s.resize_scale <= high, "down": low <= s.resize_scale <= 1,
                    "keep": s.resize_scale == 1}[s.resize_kind]
            noise_range = o.noise_range if s.noise == "gaussian" else o.poisson_scale_range
            assert noise_range[0] <= s.noise_amount <= noise_range[1]
        assert near(share(s.noise == "gaussian" for s in stage), o.gaussian_noise_prob)
        assert near(share(s.gray_noise for s in stage), o.gray_noise_prob)
        for mode in ("area", "bilinear", "bicubic"):
            assert near(share(s.resize_mode == mode for s in stage), 1 / 3)
    assert all(p.stage1.blur for p in params)
    assert near(share(p.stage2.blur for p in params), OFFICIAL.second_blur_prob)
    assert near(share(p.resize_first for p in params), 0.5)
    assert near(share(p.sinc_info["kind"] == "sinc" for p in params), OFFICIAL.final_sinc_prob)
    crops = np.array([p.crop for p in params])
    assert crops.min() == 0 and crops.max() == (256 - 256) // 4  # a 256 GT at gt_size 256: nothing to crop


def test_usm_sharpen_matches_opencv():
    img = photo_batch(2, 80, seed=3)
    ours = usm_sharpen(img)
    for i in range(2):
        x = img[i].permute(1, 2, 0).numpy().astype(np.float64)
        blur = cv2.GaussianBlur(x, (51, 51), 0)  # sigma 8, BORDER_REFLECT_101
        residual = x - blur
        mask = cv2.GaussianBlur((np.abs(residual) * 255 > 10).astype(np.float64), (51, 51), 0)
        sharp = np.clip(x + 0.5 * residual, 0, 1)
        expected = mask * sharp + (1 - mask) * x
        np.testing.assert_allclose(ours[i].permute(1, 2, 0).numpy(), expected, atol=2e-6)


def test_per_sample_filters_match_opencv():
    img = photo_batch(3, 40, seed=4)
    kernels = torch.stack([pad_kernel(gaussian(7, 1.0), 21), gaussian(21, 2.5, 0.8, 0.6), pulse(21)])
    out = filter_images(img, kernels)
    for i in range(3):
        x = img[i].permute(1, 2, 0).numpy().astype(np.float64)
        expected = cv2.filter2D(x, -1, kernels[i].numpy(), borderType=cv2.BORDER_REFLECT_101)
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_gt_usm_degrades_the_sharpened_gt_and_returns_both_targets():
    gt = photo_batch(3, 64, seed=5)
    sharp = degrade(gt, sample_generators(0, 0, range(3)), 2, DegradationOptions(gt_usm=True, gt_size=None))
    plain = degrade(usm_sharpen(gt), sample_generators(0, 0, range(3)), 2, DegradationOptions(gt_size=None))
    assert torch.equal(sharp.lq, plain.lq)
    assert torch.equal(sharp.gt, usm_sharpen(gt)) and torch.equal(sharp.gt_plain, gt)


def test_bad_input_is_one_clear_error():
    gt = torch.rand(2, 3, 64, 64)
    gens = sample_generators(0, 0, range(2))
    with pytest.raises(DataError, match="RGB"):
        degrade(gt[:, :1], gens, 2)
    with pytest.raises(DataError, match="one per sample"):
        degrade(gt, gens[:1], 2)
    with pytest.raises(DataError, match="divide"):
        degrade(torch.rand(2, 3, 66, 64), gens, 4, DegradationOptions(gt_size=None))
    with pytest.raises(DataError, match="too small"):
        degrade(torch.rand(2, 3, 8, 8), gens, 4, DegradationOptions(gt_size=None))
    with pytest.raises(DataError, match="gt_size"):
        degrade(gt, gens, 2)  # the official 256 patch does not fit a 64 crop
    for bad, match in [({"kernel_list": ["box"], "kernel_prob": [1]}, "unknown kernel"),
                       ({"kernel_prob": [1, 2]}, "same, non-zero length"), ({"sinc_prob": 1.5}, "probability"),
                       ({"jpeg_range": [99, 100.5]}, "<= 100"), ({"jpeg_range": [100, 100]}, "below 100"),
                       ({"resize_range": [0.5, 0.9]}, "contain 1"), ({"noise_range": [5, 1]}, "low <= high"),
                       ({"kernel_range": [7, 8]}, "odd"), ({"blur_sgima": [1, 2]}, "Unknown")]:
        with pytest.raises(ConfigError, match=match):
            DegradationOptions.from_config(bad)


def test_config_group_holds_the_official_values():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from core.cli import CONFIG_DIR

    options = instantiate(OmegaConf.load(CONFIG_DIR / "degradation" / "realesrgan.yaml"))
    assert options == OFFICIAL
