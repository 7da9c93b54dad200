"""Tests of core.metrics against an independent BasicSR-style reference written here with scipy."""

from __future__ import annotations

import logging
import math
import os
import socket
import urllib.request

import numpy as np
import pytest
import torch
from scipy import signal

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from core import (
    evaluation,  # noqa: E402
    metrics,  # noqa: E402
)
from core.evaluation import ImageMetrics  # noqa: E402
from core.metrics import (  # noqa: E402
    calculate_psnr,
    calculate_ssim,
    psnr_ssim,
    quantize_8bit,
    rgb_to_y,
)

# ----------------------------------------------------------------------------------------------------
# Independent reference (BasicSR's algorithm, written out with numpy / scipy)
# ----------------------------------------------------------------------------------------------------


def ref_y(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma of a uint8 RGB image in float64: 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def ref_prepare(img: np.ndarray, crop: int, y: bool) -> np.ndarray:
    if crop:
        img = img[crop:-crop, crop:-crop]
    if y:
        return ref_y(img)[..., None]
    return img.astype(np.float64)


def ref_psnr(a: np.ndarray, b: np.ndarray, crop: int, y: bool) -> float:
    mse = np.mean((ref_prepare(a, crop, y) - ref_prepare(b, crop, y)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ref_ssim_channel(x: np.ndarray, z: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(m: np.ndarray) -> np.ndarray:  # symmetric window: convolution == correlation; 'valid' region
        return signal.fftconvolve(m, window, mode="valid")

    mu_x, mu_z = filt(x), filt(z)
    var_x = filt(x * x) - mu_x**2
    var_z = filt(z * z) - mu_z**2
    cov = filt(x * z) - mu_x * mu_z
    num = (2 * mu_x * mu_z + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_z**2 + c1) * (var_x + var_z + c2)
    return float(np.mean(num / den))


def ref_ssim(a: np.ndarray, b: np.ndarray, crop: int, y: bool) -> float:
    pa, pb = ref_prepare(a, crop, y), ref_prepare(b, crop, y)
    return float(np.mean([ref_ssim_channel(pa[..., c], pb[..., c]) for c in range(pa.shape[-1])]))


# ----------------------------------------------------------------------------------------------------
# Test images
# ----------------------------------------------------------------------------------------------------


def _pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1234)
    rand_a = rng.integers(0, 256, (40, 47, 3), dtype=np.uint8)
    rand_b = rng.integers(0, 256, (40, 47, 3), dtype=np.uint8)
    # Structured: smooth colour ramps with a square, and a noisy version of it.
    yy, xx = np.mgrid[0:45, 0:52]
    smooth = np.stack([xx * 4.0, yy * 5.0, (xx + yy) * 2.5], axis=-1)
    smooth[10:30, 15:35] = [200, 40, 90]
    clean = np.clip(smooth, 0, 255).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, 6, clean.shape), 0, 255).astype(np.uint8)
    blurred = np.clip(signal.fftconvolve(clean.astype(float), np.ones((3, 3, 1)) / 9, mode="same"), 0, 255)
    return [("random", rand_a, rand_b), ("noisy", noisy, clean), ("blurred", blurred.astype(np.uint8), clean)]


PAIRS = _pairs()


@pytest.mark.parametrize("name,img,gt", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("crop", [0, 4])
@pytest.mark.parametrize("y", [False, True])
def test_psnr_ssim_match_reference(name: str, img: np.ndarray, gt: np.ndarray, crop: int, y: bool) -> None:
    assert calculate_psnr(img, gt, crop_border=crop, test_y_channel=y) == pytest.approx(
        ref_psnr(img, gt, crop, y), abs=1e-3
    )
    assert calculate_ssim(img, gt, crop_border=crop, test_y_channel=y) == pytest.approx(
        ref_ssim(img, gt, crop, y), abs=1e-4
    )


def test_crop_border_changes_the_value() -> None:
    # Errors only in the border: with crop 4 they are ignored entirely.
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img = gt.copy()
    img[:3] = 0
    assert math.isfinite(calculate_psnr(img, gt, crop_border=0))
    assert calculate_psnr(img, gt, crop_border=4) == float("inf")
    assert calculate_ssim(img, gt, crop_border=4) == pytest.approx(1.0, abs=1e-12)


def test_known_values() -> None:
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)  # at most 254, so +1 does not clip
    plus_one = img + np.uint8(1)
    assert calculate_psnr(img, plus_one) == pytest.approx(20 * math.log10(255), abs=1e-12)
    # On Y, a +1 step on every channel moves Y by (65.481 + 128.553 + 24.966) / 255 = 219 / 255.
    assert calculate_psnr(img, plus_one, test_y_channel=True) == pytest.approx(
        20 * math.log10(255 * 255 / 219), abs=1e-5
    )
    assert calculate_psnr(img, img) == float("inf")
    assert calculate_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    # Constant images: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 100.0, 140.0
    c1 = (0.01 * 255) ** 2
    const_a = np.full((16, 16, 3), a, dtype=np.uint8)
    const_b = np.full((16, 16, 3), b, dtype=np.uint8)
    assert calculate_ssim(const_a, const_b) == pytest.approx(
        (2 * a * b + c1) / (a * a + b * b + c1), abs=1e-10
    )


def test_ssim_rejects_images_smaller_than_window() -> None:
    img = np.zeros((12, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        calculate_ssim(img, img, crop_border=1)


# ----------------------------------------------------------------------------------------------------
# rgb_to_y
# ----------------------------------------------------------------------------------------------------


def test_rgb_to_y_matlab_coefficients() -> None:
    pixels = np.array(
        [[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 77]]], dtype=np.uint8
    )
    expected = [
        16.0,
        235.0,
        16 + 65.481,
        16 + 128.553,
        16 + 24.966,
        16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 77) / 255,
    ]
    y = rgb_to_y(pixels)
    assert y.shape == (1, 6, 1)
    np.testing.assert_allclose(y[0, :, 0], expected, atol=1e-4)  # float32 result, as BasicSR's
    # Float input in [0, 1] gives Y in [0, 1].
    y01 = rgb_to_y(pixels.astype(np.float64) / 255)
    np.testing.assert_allclose(y01[0, :, 0], np.array(expected) / 255, atol=1e-12)


def test_rgb_to_y_tensor_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    expected = np.stack([ref_y(i) for i in img])[:, None]  # (N, 1, H, W)
    as_u8 = torch.from_numpy(img).permute(0, 3, 1, 2)
    y_u8 = rgb_to_y(as_u8)
    assert tuple(y_u8.shape) == (2, 1, 9, 7)
    np.testing.assert_allclose(y_u8.numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(y_u8.numpy()[0, 0], rgb_to_y(img[0])[..., 0])
    y_float = rgb_to_y(as_u8.to(torch.float64) / 255)
    np.testing.assert_allclose(y_float.numpy(), expected / 255, atol=1e-12)
    assert tuple(rgb_to_y(as_u8[0].float() / 255).shape) == (1, 9, 7)


# ----------------------------------------------------------------------------------------------------
# Batched torch version
# ----------------------------------------------------------------------------------------------------


def _to_uint8_like_png(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x.astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8)


@pytest.mark.parametrize("y", [False, True])
@pytest.mark.parametrize("crop", [0, 3])
def test_batched_equals_numpy(y: bool, crop: int) -> None:
    rng = np.random.default_rng(11)
    gt = rng.random((3, 3, 26, 31), dtype=np.float32)
    restored = gt + rng.normal(0, 0.05, gt.shape).astype(np.float32)  # goes below 0 and above 1: clamped
    psnr, ssim = psnr_ssim(torch.from_numpy(restored), torch.from_numpy(gt), y_channel=y, crop_border=crop)
    assert psnr.shape == (3,) and ssim.shape == (3,) and psnr.dtype == torch.float64
    for i in range(3):
        r8 = _to_uint8_like_png(restored[i].transpose(1, 2, 0))
        g8 = _to_uint8_like_png(gt[i].transpose(1, 2, 0))
        assert psnr[i].item() == pytest.approx(calculate_psnr(r8, g8, crop, y), abs=1e-9)
        assert ssim[i].item() == pytest.approx(calculate_ssim(r8, g8, crop, y), abs=1e-12)
        assert psnr[i].item() == pytest.approx(ref_psnr(r8, g8, crop, y), abs=1e-3)


def test_quantize_8bit_rounds_like_png() -> None:
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 0.49, 1.0, 1.3])
    expected = np.round(np.clip(x.numpy(), 0, 1) * np.float32(255))
    np.testing.assert_array_equal(quantize_8bit(x).numpy(), expected)
    assert quantize_8bit(x).tolist() == [0.0, 0.0, 0.0, 2.0, 125.0, 255.0, 255.0]


def test_identical_batch_gives_inf_psnr() -> None:
    x = torch.rand(2, 3, 16, 16)
    psnr, ssim = psnr_ssim(x, x, y_channel=True, crop_border=0)
    assert torch.isinf(psnr).all()
    torch.testing.assert_close(ssim, torch.ones(2, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------
# ImageMetrics
# ----------------------------------------------------------------------------------------------------


def _dataset(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(n, 3, 20, 20, generator=gen)
    noise_levels = torch.linspace(0.01, 0.2, n).view(n, 1, 1, 1)  # every image gets a different PSNR
    restored = (gt + noise_levels * torch.randn(n, 3, 20, 20, generator=gen)).clamp(0, 1)
    return restored, gt


def _numpy_scores(
    restored: torch.Tensor, gt: torch.Tensor, crop: int, y: bool
) -> tuple[list[float], list[float]]:
    psnrs, ssims = [], []
    for r, g in zip(restored, gt):
        r8 = _to_uint8_like_png(r.permute(1, 2, 0).numpy())
        g8 = _to_uint8_like_png(g.permute(1, 2, 0).numpy())
        psnrs.append(calculate_psnr(r8, g8, crop, y))
        ssims.append(calculate_ssim(r8, g8, crop, y))
    return psnrs, ssims


def test_image_metrics_deduplicates_repeated_indices() -> None:
    restored, gt = _dataset(5)
    metric = ImageMetrics(y_channel=True, crop_border=2)
    # Two "ranks" worth of batches: indices 0 and 1 come back as padding, as a DistributedSampler would do.
    for batch in ([0, 1, 2], [3, 4, 0], [1]):
        idx = torch.tensor(batch)
        metric.update(restored[idx], gt[idx], idx)
    psnrs, ssims = _numpy_scores(restored, gt, crop=2, y=True)
    result = metric.compute()
    assert set(result) == {"psnr", "ssim"}
    assert result["psnr"].item() == pytest.approx(sum(psnrs) / 5, abs=1e-9)
    assert result["ssim"].item() == pytest.approx(sum(ssims) / 5, abs=1e-12)
    # Counting the repeats would move the mean (images differ), so the check above can fail.
    assert abs(result["psnr"].item() - (sum(psnrs) + psnrs[0] + psnrs[1]) / 7) > 1e-3

    rows = metric.per_image()
    assert [row["index"] for row in rows] == [0, 1, 2, 3, 4]
    for row in rows:
        assert row["psnr"] == pytest.approx(psnrs[row["index"]], abs=1e-9)
        assert row["ssim"] == pytest.approx(ssims[row["index"]], abs=1e-12)

    metric.reset()
    assert metric.per_image() == []


class _FakeLpipsNet(torch.nn.Module):
    """Stands in for the LPIPS network: mean absolute difference per image (inputs in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(3))

    def forward(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        assert normalize and a.min() >= 0 and a.max() <= 1
        return (a - b).abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


class _FakeLpipsMetric:
    def __init__(self) -> None:
        self.net = _FakeLpipsNet()


def test_image_metrics_lpips_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "make_lpips", lambda device="cpu", net="alex": _FakeLpipsMetric())
    restored, gt = _dataset(4)
    metric = ImageMetrics(y_channel=False, crop_border=0, perceptual=True)
    for batch in ([0, 1], [2, 3], [3, 0]):
        idx = torch.tensor(batch)
        metric.update(restored[idx], gt[idx], idx)
    expected = [
        (quantize_8bit(r) / 255 - quantize_8bit(g) / 255).abs().mean().item() for r, g in zip(restored, gt)
    ]
    result = metric.compute()
    assert result["lpips"].item() == pytest.approx(sum(expected) / 4, abs=1e-6)
    assert [row["lpips"] for row in metric.per_image()] == pytest.approx(expected, abs=1e-6)
    # The perceptual network must stay out of checkpoints.
    assert not any("dummy" in key for key in metric.state_dict())


# ----------------------------------------------------------------------------------------------------
# Optional LPIPS / FID: never download, warn once
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def offline_empty_torch_home(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(metrics, "_WARNED", set())

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "core.metrics" and r.levelno == logging.WARNING]


def test_make_lpips_missing_weights(offline_empty_torch_home, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="core.metrics")
    assert not metrics.lpips_available()
    assert metrics.make_lpips("cpu") is None
    assert metrics.make_lpips("cpu") is None
    records = _warnings(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "alexnet-owt-7be5be79.pth" in message and str(offline_empty_torch_home) in message
    assert "skipped" in message and "\n" not in message
    # With the metric asked for but unavailable, ImageMetrics still works, without an LPIPS column.
    metric = ImageMetrics(y_channel=False, crop_border=0, perceptual=True)
    x = torch.rand(1, 3, 16, 16)
    metric.update(x, x, torch.tensor([0]))
    assert {"psnr", "ssim"} <= set(metric.compute()) and "lpips" not in metric.compute()  # (NIQE: when installed)
    assert len([r for r in _warnings(caplog) if "LPIPS" in r.getMessage()]) == 1  # (and one for FID)


def test_lpips_available_when_file_present(offline_empty_torch_home) -> None:
    checkpoints = offline_empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "vgg16-397923af.pth").write_bytes(b"")
    assert metrics.lpips_available("vgg") and not metrics.lpips_available("alex")


def test_make_fid_missing(offline_empty_torch_home, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="core.metrics")
    assert not metrics.fid_available()
    assert metrics.make_fid("cpu") is None
    assert metrics.make_fid("cpu") is None
    records = _warnings(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "weights-inception-2015-12-05-6726825d.pth" in message and "FID skipped" in message
