"""data.resize (MATLAB imresize, SR upsampling, modcrop), data.masks and data.synthetic (noise, blur, rain)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from data.masks import FolderMask, apply_mask, box_mask, random_pixel_mask, read_mask, stroke_mask
from data.resize import imresize, modcrop, upsample_bicubic
from data.synthetic import add_gaussian_noise, gaussian_blur, line_kernel, motion_blur, rain_layer, synthetic_rain


# ---------------------------------------------------------------------------------------------------------
# imresize
# ---------------------------------------------------------------------------------------------------------
def _keys(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _direct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """MATLAB's definition written out pixel by pixel (0-based): centre c = (o + 0.5) / s - 0.5, weight of
    input k is s * keys(s * (c - k)) when shrinking (keys(c - k) when enlarging), rows normalised to 1, and
    input positions outside the image mirrored with the edge pixel repeated."""
    s = n_out / n_in
    stretch = min(s, 1.0)
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        c = (o + 0.5) / s - 0.5
        row = {}
        for k in range(math.floor(c - 2 / stretch) - 1, math.ceil(c + 2 / stretch) + 2):
            w = stretch * _keys(stretch * (c - k))
            j = k
            while j < 0 or j >= n_in:
                j = -j - 1 if j < 0 else 2 * n_in - 1 - j
            row[j] = row.get(j, 0.0) + w
        total = sum(row.values())
        for j, w in row.items():
            m[o, j] = w / total
    return m


@pytest.mark.parametrize("n_in,n_out", [(12, 3), (10, 5), (7, 3), (5, 10), (4, 12)])
def test_imresize_weights_match_direct_computation(n_in, n_out):
    unit = np.eye(n_in, dtype=np.float64)
    columns = np.stack([imresize(unit[:, k:k + 1], size=(n_out, 1))[:, 0] for k in range(n_in)], axis=1)
    np.testing.assert_allclose(columns, _direct_matrix(n_in, n_out), atol=1e-12)


def test_imresize_interior_matches_pillow_antialiased_bicubic():
    # Pillow BICUBIC is the same a=-0.5 kernel, stretched when shrinking; only its borders (no mirror) differ.
    img = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    ours = imresize(img, 1 / 4)
    pil = np.asarray(Image.fromarray(img, mode="F").resize((10, 12), Image.BICUBIC))
    assert ours.shape == (12, 10)
    np.testing.assert_allclose(ours[2:-2, 2:-2], pil[2:-2, 2:-2], atol=1e-5)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2.0, 4.0])
def test_imresize_keeps_constants_and_sizes(scale):
    img = np.full((30, 36, 3), 0.3, np.float32)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(30 * scale - 1e-9), math.ceil(36 * scale - 1e-9), 3)
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_imresize_ramp_sampled_at_output_centres():
    # The a=-0.5 cubic reproduces linear functions; away from the mirrored border, shrinking a ramp x4 must
    # give the ramp's value at each output pixel's centre, (o + 0.5) * 4 - 0.5.
    ramp = np.tile(np.arange(64, dtype=np.float64)[:, None], (1, 8))
    out = imresize(ramp, 1 / 4)[:, 0]
    centres = (np.arange(16) + 0.5) * 4 - 0.5
    np.testing.assert_allclose(out[3:-3], centres[3:-3], atol=1e-9)


def test_imresize_numpy_and_torch_agree_and_batch():
    img = np.random.default_rng(1).random((20, 24, 3)).astype(np.float32)
    tensor = torch.from_numpy(img).permute(2, 0, 1)
    by_numpy = imresize(img, 1 / 4)
    by_torch = imresize(tensor, 1 / 4)
    assert by_torch.shape == (3, 5, 6)
    np.testing.assert_allclose(by_torch.permute(1, 2, 0).numpy(), by_numpy, atol=1e-6)
    batch = imresize(torch.stack([tensor, tensor * 0.5]), size=(10, 12))
    assert batch.shape == (2, 3, 10, 12)
    torch.testing.assert_close(batch[1], batch[0] * 0.5)
    with pytest.raises(TypeError):
        imresize((img * 255).astype(np.uint8), 0.5)


def _keys_075(x: float) -> float:
    # torch's (and OpenCV's) bicubic kernel uses a = -0.75, not MATLAB's -0.5.
    x, a = abs(x), -0.75
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x <= 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def test_upsample_bicubic_shape_interior_values_and_clamp():
    signal = np.random.default_rng(3).random(8)
    row = torch.from_numpy(signal).view(1, 1, 1, 8).expand(1, 3, 8, 8)
    up = upsample_bicubic(row[0], 4)
    assert up.shape == (3, 32, 32)
    # align_corners=False: output x samples the input at (x + 0.5) / 4 - 0.5 with the a=-0.75 cubic.
    for x in range(8, 24):
        src = (x + 0.5) / 4 - 0.5
        expected = sum(_keys_075(src - k) * signal[k] for k in range(8))
        assert float(up[1, 5, x]) == pytest.approx(expected, abs=1e-9)
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1.0
    assert upsample_bicubic(step, 2).max() > 1.0  # bicubic overshoots, as the official mu does
    assert upsample_bicubic(step, 2, clamp=True).max() == 1.0


def test_modcrop_drops_the_bottom_right_remainder_of_arrays_and_tensors():
    img = np.random.default_rng(0).random((10, 13, 3))
    np.testing.assert_array_equal(modcrop(img, 4), img[:8, :12])
    batch = torch.rand(2, 3, 10, 13)
    assert torch.equal(modcrop(batch, 4), batch[..., :8, :12]) and torch.equal(modcrop(batch, 1), batch)


# ---------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------
def _is_binary(mask: np.ndarray) -> bool:
    return mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}


def test_box_mask_is_one_rectangle_and_deterministic():
    mask = box_mask(40, 48, seed=3)
    assert mask.shape == (40, 48) and _is_binary(mask)
    rows, cols = np.nonzero(mask == 0)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 24)
    assert (mask == 0).sum() == 20 * 24
    np.testing.assert_array_equal(mask, box_mask(40, 48, seed=3))
    assert any(not np.array_equal(mask, box_mask(40, 48, seed=s)) for s in range(4, 8))


def test_stroke_mask_deterministic_binary_partial():
    mask = stroke_mask(64, 72, seed=5)
    assert mask.shape == (64, 72) and _is_binary(mask)
    assert 0.0 < (mask == 0).mean() < 0.9
    np.testing.assert_array_equal(mask, stroke_mask(64, 72, seed=5))
    assert not np.array_equal(mask, stroke_mask(64, 72, seed=6))


def test_random_pixel_mask_fraction_and_seed():
    mask = random_pixel_mask(64, 64, p=0.3, seed=1)
    assert mask.shape == (64, 64) and _is_binary(mask)
    assert abs((mask == 0).mean() - 0.3) < 0.05
    np.testing.assert_array_equal(mask, random_pixel_mask(64, 64, p=0.3, seed=1))
    assert not np.array_equal(mask, random_pixel_mask(64, 64, p=0.3, seed=2))


def test_read_mask_white_keeps_and_nearest_resize(tmp_path):
    keep = np.random.default_rng(0).random((40, 48)) > 0.5
    rgb = np.repeat((keep * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "000000.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "000000.png"), keep.astype(np.float32))
    halved = read_mask(tmp_path / "000000.png", (20, 24))
    np.testing.assert_array_equal(halved, keep[::2, ::2].astype(np.float32))
    Image.fromarray(255 - rgb).save(tmp_path / "000001.png")
    picker = FolderMask((tmp_path / "000000.png", tmp_path / "000001.png"))
    np.testing.assert_array_equal(picker(40, 48, 3), 1.0 - keep)  # seed 3 -> file 3 % 2 = 1


def test_apply_mask_keeps_known_and_whitens_missing():
    img = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32)
    mask = random_pixel_mask(6, 7, 0.5, seed=0)
    out = apply_mask(img, mask)
    known = mask == 1
    np.testing.assert_array_equal(out[known], img[known])
    assert np.all(out[~known] == 1.0)
    t_out = apply_mask(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(mask)[None, None])
    np.testing.assert_array_equal(t_out[0].permute(1, 2, 0).numpy(), out)


# ---------------------------------------------------------------------------------------------------------
# Noise, blur, rain
# ---------------------------------------------------------------------------------------------------------
def test_gaussian_noise_level_and_determinism():
    img = np.full((64, 64, 3), 0.5, np.float32)
    noisy = add_gaussian_noise(img, 25, seed=7)
    residual = noisy - img
    assert abs(residual.std() - 25 / 255) < 0.03 * 25 / 255 and abs(residual.mean()) < 0.005
    np.testing.assert_array_equal(noisy, add_gaussian_noise(img, 25, seed=7))
    assert not np.array_equal(noisy, add_gaussian_noise(img, 25, seed=8))
    clipped = add_gaussian_noise(np.zeros((8, 8, 3), np.float32), 50, seed=0, clip=True)
    assert clipped.min() == 0.0 and clipped.max() <= 1.0
    tensor = add_gaussian_noise(torch.zeros(3, 8, 8), 25, seed=1)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32


def test_gaussian_blur_matches_sampled_gaussian():
    delta = np.zeros((31, 31), np.float32)
    delta[15, 15] = 1.0
    out = gaussian_blur(delta, sigma=1.5)
    x = np.arange(-5, 6)
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()  # kernel size 2 * ceil(4.5) + 1 = 11 taps
    np.testing.assert_allclose(out[10:21, 10:21], np.outer(g, g), atol=1e-6)
    flat = gaussian_blur(torch.full((2, 3, 12, 12), 0.4), sigma=2.0)
    torch.testing.assert_close(flat, torch.full((2, 3, 12, 12), 0.4))


@pytest.mark.parametrize("angle,axis", [(0.0, "row"), (90.0, "col")])
def test_motion_blur_spreads_a_point_along_the_angle(angle, axis):
    delta = np.zeros((21, 21, 3), np.float32)
    delta[10, 10] = 1.0
    out = motion_blur(delta, length=7, angle=angle)[:, :, 0]
    line = out[10, 7:14] if axis == "row" else out[7:14, 10]
    np.testing.assert_allclose(line, np.full(7, 1 / 7), atol=1e-6)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert line.sum() == pytest.approx(1.0, abs=1e-5)
    assert line_kernel(8, 33.0).sum() == pytest.approx(1.0, abs=1e-6)


def test_synthetic_rain_brightens_deterministically_along_one_angle():
    img = np.full((64, 64, 3), 0.3, np.float32)
    rainy = synthetic_rain(img, seed=4)
    assert rainy.shape == img.shape and rainy.dtype == np.float32
    assert np.all(rainy >= img - 1e-6) and rainy.max() <= 1.0 and (rainy > img + 0.05).mean() > 0.01
    np.testing.assert_array_equal(rainy, synthetic_rain(img, seed=4))
    assert not np.array_equal(rainy, synthetic_rain(img, seed=5))
    vertical = rain_layer(96, 96, seed=1, angle=(90.0, 90.0), jitter=0.0)
    along = np.abs(np.diff(vertical, axis=0)).mean()
    across = np.abs(np.diff(vertical, axis=1)).mean()
    assert along < 0.5 * across  # streaks vary slowly along their direction
    tensor = synthetic_rain(torch.from_numpy(img).permute(2, 0, 1), seed=4)
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), rainy, atol=1e-6)
