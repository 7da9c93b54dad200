"""Real-ESRGAN blur kernels against closed forms: normalisation, isotropy, the anisotropic Gaussian's covariance,
the generalized / plateau shapes, the sinc's values (scipy's Bessel J1) and its frequency response, and the
random draws against the official option ranges and probabilities."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import special

from data.realesrgan.kernels import (
    circular_lowpass,
    gaussian,
    generalized_gaussian,
    plateau,
    pulse,
    random_blur_kernel,
    random_final_sinc,
)
from data.realesrgan.options import OFFICIAL

ALL_SHAPES = [
    lambda s: gaussian(s, 1.3),
    lambda s: gaussian(s, 2.0, 0.7, 0.4),
    lambda s: generalized_gaussian(s, 0.6, 1.5),
    lambda s: generalized_gaussian(s, 3.0, 2.5, 1.0, -1.1),
    lambda s: plateau(s, 1.7, 1.2),
    lambda s: plateau(s, 1.0, 2.5, 0.5, 2.0),
    lambda s: circular_lowpass(math.pi / 3, s),
]


def offsets(size):
    """(x, y) offsets from the centre, x along columns, computed with numpy (independent of the module)."""
    r = np.arange(size) - size // 2
    return np.meshgrid(r, r, indexing="xy")


@pytest.mark.parametrize("make", ALL_SHAPES)
@pytest.mark.parametrize("size", [7, 21])
def test_kernels_sum_to_one_and_are_point_symmetric(make, size):
    k = make(size).numpy()
    assert k.shape == (size, size)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # correlation = convolution


@pytest.mark.parametrize("make", [lambda s: gaussian(s, 1.7), lambda s: generalized_gaussian(s, 2.2, 1.7),
                                  lambda s: plateau(s, 1.4, 1.7), lambda s: circular_lowpass(1.3, s)])
def test_isotropic_kernels_depend_on_the_radius_only(make):
    k = make(21).numpy()
    c = 10
    np.testing.assert_allclose(k, k.T, atol=1e-15)
    np.testing.assert_allclose(k, np.rot90(k), atol=1e-15)
    # (3, 4), (4, 3), (5, 0), (0, -5) all lie at radius 5
    ring = [k[c + 3, c + 4], k[c + 4, c - 3], k[c, c + 5], k[c - 5, c]]
    np.testing.assert_allclose(ring, ring[0], rtol=1e-12)


@pytest.mark.parametrize(("sx", "sy", "theta"), [(2.5, 1.0, 0.0), (1.0, 2.2, 0.5), (2.0, 1.2, -2.3), (1.5, 1.5, 1.0)])
def test_anisotropic_gaussian_covariance_matches_its_parameters(sx, sy, theta):
    k = gaussian(21, sx, sy, theta).numpy()
    x, y = offsets(21)
    measured = np.array([[np.sum(k * x * x), np.sum(k * x * y)], [np.sum(k * x * y), np.sum(k * y * y)]])
    c, s = math.cos(theta), math.sin(theta)
    rotation = np.array([[c, -s], [s, c]])
    expected = rotation @ np.diag([sx**2, sy**2]) @ rotation.T
    # sampled on the integer grid and truncated at radius 10 (>= 4 sigma): moments within 1%
    np.testing.assert_allclose(measured, expected, atol=0.01 * max(sx, sy) ** 2)
    assert np.sum(k * x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.7])
def test_generalized_gaussian_and_plateau_follow_their_closed_forms(beta):
    sx, sy, theta = 2.0, 1.1, 0.7
    x, y = offsets(15)
    # the quadratic form computed from the rotated axes: q = (u / sx)^2 + (v / sy)^2
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    q = (u / sx) ** 2 + (v / sy) ** 2
    gen = np.exp(-0.5 * q**beta)
    np.testing.assert_allclose(generalized_gaussian(15, beta, sx, sy, theta).numpy(), gen / gen.sum(), rtol=1e-10)
    plat = 1.0 / (1.0 + q**beta)
    np.testing.assert_allclose(plateau(15, beta, sx, sy, theta).numpy(), plat / plat.sum(), rtol=1e-10)
    if beta == 1.0:
        np.testing.assert_allclose(gaussian(15, sx, sy, theta).numpy(), gen / gen.sum(), rtol=1e-10)


@pytest.mark.parametrize(("cutoff", "size"), [(math.pi / 5, 21), (2.0, 9)])
def test_sinc_values_match_the_bessel_closed_form(cutoff, size):
    x, y = offsets(size)
    r = np.hypot(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    np.testing.assert_allclose(circular_lowpass(cutoff, size).numpy(), k / k.sum(), rtol=1e-9, atol=1e-15)
    padded = circular_lowpass(cutoff, size, pad_to=25).numpy()
    assert padded.shape == (25, 25) and padded[:(25 - size) // 2].sum() == 0


def radial_response(kernel, n=256):
    """|H| on an n x n frequency grid and the radius (rad/pixel) of each frequency."""
    h = np.abs(np.fft.fft2(kernel, s=(n, n)))
    f = np.fft.fftfreq(n) * 2 * np.pi
    fy, fx = np.meshgrid(f, f, indexing="ij")
    return h, np.hypot(fx, fy)


@pytest.mark.parametrize("cutoff", [math.pi / 5, math.pi / 3, math.pi / 2, 0.6 * math.pi])
def test_sinc_passes_below_its_cutoff_and_stops_above(cutoff):
    # A long sinc is close to the ideal circular low-pass filter ...
    h, r = radial_response(circular_lowpass(cutoff, 201).numpy(), n=512)
    assert h[r < 0.8 * cutoff].mean() == pytest.approx(1.0, abs=0.03)
    assert h[(r > 1.2 * cutoff) & (r <= np.pi)].mean() < 0.03
    # ... the official truncations (7..21 taps) ripple but keep the band edge at the cutoff.
    for size in (13, 21):
        h, r = radial_response(circular_lowpass(cutoff, size).numpy())
        passband, stopband = h[r < 0.5 * cutoff].mean(), h[(r > 1.5 * cutoff) & (r <= np.pi)].mean()
        assert 0.65 < passband < 1.4 and stopband < 0.06


def test_pulse_is_the_identity():
    k = pulse(21)
    assert k.sum() == 1 and k[10, 10] == 1


def test_random_kernels_follow_the_official_distribution():
    blur = OFFICIAL.stage(1).blur
    g = torch.Generator().manual_seed(0)
    n = 3000
    draws = [random_blur_kernel(g, blur) for _ in range(n)]
    kinds = Counter(info["kind"] for _, info in draws)
    sizes = Counter(info["size"] for _, info in draws)
    # sinc with 0.1, else the six kinds with kernel_prob: within 4 binomial standard deviations
    expected = {"sinc": blur.sinc_prob, **{k: (1 - blur.sinc_prob) * p for k, p in zip(blur.kernel_list,
                                                                                       blur.kernel_prob)}}
    for kind, p in expected.items():
        assert abs(kinds[kind] / n - p) < 4 * math.sqrt(p * (1 - p) / n), kind
    assert set(sizes) == {7, 9, 11, 13, 15, 17, 19, 21}
    assert all(k.shape == (21, 21) and abs(float(k.sum()) - 1) < 1e-12 for k, _ in draws)
    low, high = blur.blur_sigma
    for _, info in draws:
        if info["kind"] == "sinc":
            assert (math.pi / 3 if info["size"] < 13 else math.pi / 5) <= info["cutoff"] <= math.pi
            continue
        assert low <= info["sigma_x"] <= high and low <= info["sigma_y"] <= high
        if info["kind"].endswith("aniso"):
            assert -math.pi <= info["theta"] <= math.pi
        else:
            assert info["sigma_x"] == info["sigma_y"] and info["theta"] == 0
        if "beta" in info:
            beta_range = blur.betag_range if info["kind"].startswith("generalized") else blur.betap_range
            assert beta_range[0] <= info["beta"] <= beta_range[1]
    # the second stage's narrower sigma range
    g2 = torch.Generator().manual_seed(1)
    sigmas = [info["sigma_x"] for _, info in (random_blur_kernel(g2, OFFICIAL.stage(2).blur) for _ in range(300))
              if "sigma_x" in info]
    assert min(sigmas) >= 0.2 and max(sigmas) <= 1.5 and max(sigmas) > 1.3


def test_final_sinc_is_drawn_with_its_probability():
    g = torch.Generator().manual_seed(2)
    n = 2000
    infos = [random_final_sinc(g, OFFICIAL.final_sinc_prob, OFFICIAL.kernel_range)[1] for _ in range(n)]
    share = sum(i["kind"] == "sinc" for i in infos) / n
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / n)
    assert all(math.pi / 3 <= i["cutoff"] <= math.pi for i in infos if i["kind"] == "sinc")
