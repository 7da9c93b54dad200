"""DiffPIR degradation operators and kernels: forwards against direct computations, adjoints, closed-form data
steps against an independent conjugate-gradient solve, and the errors for bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from core.errors import DataError
from diffpir.kernels import (
    bicubic_kernel,
    gaussian_kernel,
    load_kernel,
    motion_kernel,
    official_gaussian_sigma,
)
from diffpir.operators import BackProjectionSR, Blur, GenericOperator, Inpainting, SuperResolution


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _circular_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[i] = Σ_j k[j] x[i − (j − origin)], origin = size // 2, written as a sum of shifted copies."""
    kh, kw = kernel.shape
    out = torch.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            out += kernel[a, b] * torch.roll(x, shifts=(a - kh // 2, b - kw // 2), dims=(-2, -1))
    return out


def _cg_prox(op, z: torch.Tensor, y: torch.Tensor, rho: float, iters: int = 500) -> torch.Tensor:
    """Reference: solve (H^T H + ρ I) x = H^T y + ρ z by plain conjugate gradients on the whole batch."""
    b = op.adjoint(y) + rho * z
    x = torch.zeros_like(z)
    r = b - (op.adjoint(op.forward(x)) + rho * x)
    p = r.clone()
    rs = (r * r).sum()
    for _ in range(iters):
        ap = op.adjoint(op.forward(p)) + rho * p
        alpha = rs / (p * ap).sum()
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum()
        if rs_new.sqrt() < 1e-13:
            break
        p = r + rs_new / rs * p
        rs = rs_new
    return x


def _check_adjoint(op, x_shape, y_shape) -> None:
    x, y = _rand(*x_shape, seed=1), _rand(*y_shape, seed=2)
    lhs = (op.forward(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-9, atol=1e-9), (float(lhs), float(rhs))


# ---------------------------------------------------------------- forwards against direct computations


def test_blur_forward_is_the_circular_convolution():
    kernel = torch.rand(5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kernel /= kernel.sum()
    x = _rand(2, 3, 12, 10)
    expected = _circular_conv(x, kernel)
    assert torch.allclose(Blur(kernel).forward(x), expected, atol=1e-12)
    # The official degradation: ndimage.convolve with mode 'wrap' (odd kernel).
    official = ndimage.convolve(x[0, 0].numpy(), kernel.numpy(), mode="wrap")
    assert np.allclose(Blur(kernel).forward(x)[0, 0].numpy(), official, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_forward_is_blur_then_upper_left_decimation(scale):
    kernel = gaussian_kernel(7, 1.3).double()
    x = _rand(1, 2, 6 * scale, 24)
    expected = _circular_conv(x, kernel)[..., ::scale, ::scale]
    got = SuperResolution(scale, kernel).forward(x)
    assert got.shape == (1, 2, x.shape[-2] // scale, 24 // scale)
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_sr_kernel_is_antialiased_bicubic_downscaling_away_from_borders(scale):
    x = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = SuperResolution(scale).forward(x)
    reference = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    border = 3  # the support reaches 2·scale HR pixels: 3 LR pixels on each side are affected by wrapping
    inner = (..., slice(border, -border), slice(border, -border))
    assert torch.allclose(ours[inner], reference[inner], atol=1e-6)


def test_inpainting_forward_masks_and_broadcasts():
    mask = (torch.rand(6, 5, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    x = _rand(2, 3, 6, 5)
    assert torch.equal(Inpainting(mask).forward(x), x * mask.double())
    assert torch.equal(Inpainting(mask.bool()).forward(x), x * mask.double())


# ---------------------------------------------------------------- adjoints and closed-form data steps


@pytest.mark.parametrize(
    "op, x_shape, y_shape",
    [
        (Inpainting(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])), (2, 3, 2, 3), (2, 3, 2, 3)),
        (Blur(gaussian_kernel(5, 1.0)), (2, 3, 8, 10), (2, 3, 8, 10)),
        (Blur(motion_kernel(9, 0.7, seed=1)), (1, 1, 12, 12), (1, 1, 12, 12)),
        (SuperResolution(2), (2, 3, 16, 12), (2, 3, 8, 6)),
        (SuperResolution(3), (1, 1, 18, 15), (1, 1, 6, 5)),
        (SuperResolution(4), (1, 2, 24, 20), (1, 2, 6, 5)),
        (BackProjectionSR(2), (1, 1, 8, 8), (1, 1, 4, 4)),
        (GenericOperator(lambda v: v[..., ::2, ::2], fn_range="minus_one_one", image_shape=(1, 6, 6)),
         (1, 1, 6, 6), (1, 1, 3, 3)),
    ],
)
def test_adjoint_is_the_true_adjoint(op, x_shape, y_shape):
    _check_adjoint(op, x_shape, y_shape)


@pytest.mark.parametrize("rho", [0.05, 1.0])
@pytest.mark.parametrize(
    "op, x_shape, y_shape",
    [
        (Inpainting(torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])), (2, 3, 2, 4), (2, 3, 2, 4)),
        (Blur(gaussian_kernel(5, 1.2)), (2, 3, 10, 8), (2, 3, 10, 8)),
        (Blur(motion_kernel(9, 0.5, seed=2)), (1, 1, 12, 12), (1, 1, 12, 12)),
        (SuperResolution(2), (2, 3, 12, 10), (2, 3, 6, 5)),
        (SuperResolution(4), (1, 2, 24, 20), (1, 2, 6, 5)),
    ],
)
def test_closed_form_prox_matches_conjugate_gradients(op, x_shape, y_shape, rho):
    _check_adjoint(op, x_shape, y_shape)
    z, y = _rand(*x_shape, seed=6), _rand(*y_shape, seed=7)
    expected = _cg_prox(op, z, y, rho)
    got = op.prox(z, y, rho)
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    # float32 in, float32 out, same answer.
    got32 = op.prox(z.float(), y.float(), rho)
    assert got32.dtype == torch.float32
    assert torch.allclose(got32.double(), expected, atol=1e-4)


def test_prox_accepts_one_rho_per_image():
    op = SuperResolution(2)
    z, y = _rand(2, 1, 12, 12, seed=8), _rand(2, 1, 6, 6, seed=9)
    both = op.prox(z, y, torch.tensor([0.1, 2.0]))
    assert torch.allclose(both[:1], op.prox(z[:1], y[:1], 0.1), atol=1e-12)
    assert torch.allclose(both[1:], op.prox(z[1:], y[1:], 2.0), atol=1e-12)


def test_generic_operator_cg_prox_equals_the_blur_closed_form_in_both_ranges():
    kernel = gaussian_kernel(5, 1.0)
    blur = Blur(kernel)
    z, y = _rand(1, 2, 10, 10, seed=10), _rand(1, 2, 10, 10, seed=11)
    expected = blur.prox(z, y, 0.3)
    for fn_range in ("minus_one_one", "zero_one"):
        generic = GenericOperator(blur.forward, fn_range=fn_range, tol=1e-12, iterations=300)
        assert torch.allclose(generic.prox(z, y, 0.3), expected, atol=1e-6)


def test_generic_operator_affine_in_the_sampler_range_is_solved_exactly():
    """A [0, 1] mask operator becomes affine in [-1, 1]; CG must account for the offset H(0)."""
    mask = (torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(12)) > 0.5).double()
    generic = GenericOperator(lambda v: v * mask, fn_range="zero_one", tol=1e-12)
    z = _rand(1, 1, 6, 6, seed=13)
    y_01 = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(14), dtype=torch.float64) * mask
    y = 2 * y_01 - 1  # the sampler's view of a [0, 1] measurement
    # In [-1, 1] the operator is x ↦ m x + m − 1: known pixels give (y + ρ z)/(1 + ρ), unknown ones keep z.
    expected = torch.where(mask > 0, (y + 0.5 * z) / 1.5, z)
    assert torch.allclose(generic.prox(z, y, 0.5), expected, atol=1e-8)


def test_gradient_prox_is_the_papers_first_order_step():
    blur = Blur(gaussian_kernel(5, 1.0))
    generic = GenericOperator(blur.forward, fn_range="minus_one_one", prox_method="gradient")
    z, y = _rand(1, 1, 8, 8, seed=15), _rand(1, 1, 8, 8, seed=16)
    rho = 4.0
    expected = z - blur.adjoint(blur.forward(z) - y) / rho
    assert torch.allclose(generic.prox(z, y, rho), expected, atol=1e-10)


def test_back_projection_step_follows_the_official_update():
    op = BackProjectionSR(2, gamma=0.05, iterations=2)
    z, y = _rand(1, 1, 8, 8, seed=17), _rand(1, 1, 4, 4, seed=18)
    x = z
    for _ in range(2):
        down = F.interpolate(x, size=(4, 4), mode="bicubic", antialias=True, align_corners=False)
        x = x + 0.05 * (y - down).repeat_interleave(2, -2).repeat_interleave(2, -1) / (1 + 0.7)
    assert torch.allclose(op.prox(z, y, 0.7), x, atol=1e-12)


def test_measure_adds_noise_of_std_two_sigma_in_model_units():
    blur = Blur(gaussian_kernel(3, 0.8))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(19))
    y = blur.measure(x, 0.1, generator=torch.Generator().manual_seed(0))
    residual = (2 * y - 1) - blur.forward(2 * x - 1)  # noise seen in [-1, 1]
    assert abs(float(residual.std()) - 0.2) < 0.01
    again = blur.measure(x, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    y_in = Inpainting(mask).measure(x, 0.0)
    assert torch.allclose(y_in[..., :32], x[..., :32], atol=1e-6) and bool((y_in[..., 32:] == 0).all())


# ---------------------------------------------------------------- kernels


def test_gaussian_kernel_is_the_normalised_sampled_gaussian():
    k = gaussian_kernel(7, 1.5).double()
    r = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    assert torch.allclose(k, g / g.sum(), atol=1e-7)
    assert abs(official_gaussian_sigma(0) - 3 * abs(2 * np.random.RandomState(0).rand() + 1)) < 1e-12
    assert all(3.0 <= official_gaussian_sigma(i) < 9.0 for i in range(20))


def test_motion_kernel_is_normalised_centred_reproducible_and_straight_at_zero_intensity():
    k = motion_kernel(31, 0.6, seed=3)
    assert k.shape == (31, 31) and abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) >= 0
    assert torch.equal(k, motion_kernel(31, 0.6, seed=3))
    assert not torch.equal(k, motion_kernel(31, 0.6, seed=4))
    idx = torch.arange(31, dtype=torch.float32)
    centroid = ((k.sum(1) * idx).sum(), (k.sum(0) * idx).sum())
    assert abs(float(centroid[0]) - 15) < 0.5 and abs(float(centroid[1]) - 15) < 0.5

    def spread_ratio(kernel: torch.Tensor) -> float:
        rows, cols = torch.meshgrid(idx, idx, indexing="ij")
        pts = torch.stack([rows.flatten(), cols.flatten()], 1).double()
        w = kernel.flatten().double()
        mean = (w[:, None] * pts).sum(0)
        cov = ((pts - mean).T * w) @ (pts - mean)
        eig = torch.linalg.eigvalsh(cov)
        return float(eig[0] / eig[1])

    assert spread_ratio(motion_kernel(31, 0.0, seed=5)) < 0.02  # a straight streak
    assert spread_ratio(motion_kernel(31, 1.0, seed=5)) > 0.05  # a wandering path


@pytest.mark.parametrize("scale, size", [(2, 9), (3, 13), (4, 19)])
def test_bicubic_kernel_weights(scale, size):
    k = bicubic_kernel(scale)
    assert k.shape == (size, size) and abs(float(k.sum()) - 1) < 1e-6
    # For x2 the 1-D weights around the half-pixel centre are cubic(±1/4)/2, cubic(±3/4)/2, ...
    if scale == 2:
        row = k.sum(0)
        assert abs(float(row[4]) - 0.43359375) < 1e-6 and abs(float(row[3]) - 0.43359375) < 1e-6
        assert abs(float(row[2]) - 0.11328125) < 1e-6 and abs(float(row[1]) + 0.03515625) < 1e-6


def test_load_kernel_npy_and_png(tmp_path):
    k = gaussian_kernel(5, 1.0).numpy()
    np.save(tmp_path / "k.npy", k)
    assert torch.allclose(load_kernel(tmp_path / "k.npy"), torch.from_numpy(k))
    from PIL import Image

    Image.fromarray((k / k.max() * 255).astype(np.uint8)).save(tmp_path / "k.png")
    loaded = load_kernel(tmp_path / "k.png", normalize=True)
    assert abs(float(loaded.sum()) - 1) < 1e-6 and torch.allclose(loaded, torch.from_numpy(k), atol=2e-3)


# ---------------------------------------------------------------- bad input


def test_kernel_not_summing_to_one_is_rejected_with_the_fix(tmp_path):
    np.save(tmp_path / "bad.npy", np.ones((3, 3)))
    with pytest.raises(DataError, match=r"sums to 9.*normalize=True"):
        load_kernel(tmp_path / "bad.npy")
    assert abs(float(load_kernel(tmp_path / "bad.npy", normalize=True).sum()) - 1) < 1e-6
    with pytest.raises(DataError, match="sums to"):
        Blur(torch.ones(3, 3))
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 3)) / 18)
    with pytest.raises(DataError, match="2-D"):
        load_kernel(tmp_path / "cube.npy")
    with pytest.raises(DataError, match="does not exist"):
        load_kernel(tmp_path / "missing.npy")


def test_mask_of_the_wrong_size_is_rejected():
    op = Inpainting(torch.ones(8, 8))
    with pytest.raises(DataError, match=r"mask is 8x8 but the image is 6x8"):
        op.forward(torch.zeros(1, 3, 6, 8))
    with pytest.raises(DataError, match="mask"):
        op.prox(torch.zeros(1, 3, 8, 6), torch.zeros(1, 3, 8, 6), 1.0)


def test_scale_that_does_not_divide_the_image_is_rejected():
    with pytest.raises(DataError, match=r"height 30 is not divisible by the scale factor 4"):
        SuperResolution(4).forward(torch.zeros(1, 3, 30, 32))
    with pytest.raises(DataError, match=r"width 10 is not divisible by the scale factor 3"):
        BackProjectionSR(3).forward(torch.zeros(1, 3, 9, 10))
    with pytest.raises(DataError, match=r"width 26 is not divisible by the scale factor 4"):
        SuperResolution(4).prox(torch.zeros(1, 3, 28, 26), torch.zeros(1, 3, 7, 6), 1.0)


def test_kernel_larger_than_image_is_rejected():
    with pytest.raises(DataError, match="does not fit"):
        Blur(gaussian_kernel(9, 2.0)).forward(torch.zeros(1, 1, 8, 8))
