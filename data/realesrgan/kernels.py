"""Real-ESRGAN's blur kernels (basicsr/data/degradations.py), as float64 torch tensors, and their random draws.

Shapes, for an offset d = (x, y) from the kernel centre (x along columns, y along rows) and the covariance
Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T (isotropic: sigma_x = sigma_y, theta = 0),
with q = d^T Sigma^-1 d:
    Gaussian              exp(-q / 2)
    generalized Gaussian  exp(-q^beta / 2)        (beta = 1: the Gaussian)
    plateau               1 / (1 + q^beta)
    sinc (circular low-pass, cutoff omega_c in radians per pixel)
                          omega_c J1(omega_c r) / (2 pi r),  omega_c^2 / (4 pi) at r = 0
each normalised to sum 1. Every random draw takes a torch.Generator (one per sample, see data.realesrgan.degrade).
"""

from __future__ import annotations

import math

import torch
from scipy import special

from data.realesrgan.options import BlurOptions

DTYPE = torch.float64


# ----------------------------------------------------------------------------------------------------------
# Deterministic kernels
# ----------------------------------------------------------------------------------------------------------


def mesh(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) offsets from the centre of a size x size kernel: x grows along columns, y along rows."""
    axis = torch.arange(size, dtype=DTYPE) - (size - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y


def covariance(sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T."""
    c, s = math.cos(theta), math.sin(theta)
    rotation = torch.tensor([[c, -s], [s, c]], dtype=DTYPE)
    return rotation @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=DTYPE)) @ rotation.T


def _quadratic(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """q = d^T Sigma^-1 d on the kernel grid."""
    x, y = mesh(size)
    inv = torch.linalg.inv(covariance(sigma_x, sigma_y, theta))
    return inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y


def _normalised(kernel: torch.Tensor) -> torch.Tensor:
    return kernel / kernel.sum()


def gaussian(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """Bivariate Gaussian; isotropic when sigma_y is None."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(torch.exp(-0.5 * _quadratic(size, sigma_x, sigma_y, theta)))


def generalized_gaussian(size: int, beta: float, sigma_x: float, sigma_y: float | None = None,
                         theta: float = 0.0) -> torch.Tensor:
    """exp(-q^beta / 2): flatter top and sharper fall than a Gaussian for beta > 1, heavier tails below 1."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(torch.exp(-0.5 * _quadratic(size, sigma_x, sigma_y, theta) ** beta))


def plateau(size: int, beta: float, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """1 / (1 + q^beta): a plateau-shaped kernel with polynomial tails."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    return _normalised(1.0 / (_quadratic(size, sigma_x, sigma_y, theta) ** beta + 1.0))


def circular_lowpass(cutoff: float, size: int, pad_to: int = 0) -> torch.Tensor:
    """The 2-D sinc (ideal circular low-pass filter of `cutoff` rad/pixel) truncated to size x size, normalised,
    then zero-padded to pad_to x pad_to."""
    x, y = mesh(size)
    r = torch.sqrt(x * x + y * y)
    centre = r == 0
    safe_r = torch.where(centre, torch.ones_like(r), r)
    # scipy's J1 is exact to double precision; torch.special.bessel_j1 is off by up to 4e-7
    bessel = torch.from_numpy(special.j1((cutoff * safe_r).numpy()))
    kernel = cutoff * bessel / (2 * math.pi * safe_r)
    kernel = torch.where(centre, torch.full_like(r, cutoff**2 / (4 * math.pi)), kernel)  # the r -> 0 limit
    return pad_kernel(_normalised(kernel), max(pad_to, size))


def pulse(size: int) -> torch.Tensor:
    """The identity kernel (a centred 1): filtering with it changes nothing."""
    kernel = torch.zeros(size, size, dtype=DTYPE)
    kernel[size // 2, size // 2] = 1.0
    return kernel


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad an odd square kernel to size x size (centred): the filter is unchanged, the shape common."""
    pad = (size - kernel.shape[-1]) // 2
    return torch.nn.functional.pad(kernel, (pad, pad, pad, pad)) if pad > 0 else kernel


# ----------------------------------------------------------------------------------------------------------
# Random draws (official distributions)
# ----------------------------------------------------------------------------------------------------------


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from U[low, high) (low when low == high, as numpy's uniform gives)."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=DTYPE))


def choice(generator: torch.Generator, weights: tuple[float, ...]) -> int:
    """An index drawn with probability proportional to `weights` (random.choices)."""
    return int(torch.multinomial(torch.tensor(weights, dtype=DTYPE), 1, generator=generator))


def _beta(generator: torch.Generator, beta_range: tuple[float, float]) -> float:
    # Official: half the time below 1, half above, whatever the range's proportions.
    if uniform(generator, 0.0, 1.0) < 0.5:
        return uniform(generator, beta_range[0], 1.0)
    return uniform(generator, 1.0, beta_range[1])


def random_mixed_kernel(generator: torch.Generator, blur: BlurOptions, size: int) -> tuple[torch.Tensor, dict]:
    """One of blur.kernel_list, drawn with blur.kernel_prob, with its sigma(s), rotation and beta drawn as the
    official random_mixed_kernels does (sigma_x, sigma_y ~ U(blur_sigma), theta ~ U(-pi, pi); isotropic kinds
    use sigma_x only). Returns (size x size kernel, its parameters)."""
    kind = blur.kernel_list[choice(generator, blur.kernel_prob)]
    sigma_x = uniform(generator, *blur.blur_sigma)
    sigma_y, theta = sigma_x, 0.0
    if kind.endswith("aniso"):
        sigma_y = uniform(generator, *blur.blur_sigma)
        theta = uniform(generator, -math.pi, math.pi)
    info = {"kind": kind, "size": size, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta": theta}
    if kind in ("iso", "aniso"):
        return gaussian(size, sigma_x, sigma_y, theta), info
    if kind.startswith("generalized"):
        info["beta"] = _beta(generator, blur.betag_range)
        return generalized_gaussian(size, info["beta"], sigma_x, sigma_y, theta), info
    info["beta"] = _beta(generator, blur.betap_range)
    return plateau(size, info["beta"], sigma_x, sigma_y, theta), info


def random_blur_kernel(generator: torch.Generator, blur: BlurOptions) -> tuple[torch.Tensor, dict]:
    """A stage's blur kernel as the official dataset draws it: a size from kernel_range; with sinc_prob a sinc
    (cutoff ~ U(pi/3, pi) below size 13, U(pi/5, pi) from 13 on), else a mixed kernel; zero-padded to the
    largest size."""
    size = blur.kernel_range[int(torch.randint(len(blur.kernel_range), (), generator=generator))]
    full = max(blur.kernel_range)
    if uniform(generator, 0.0, 1.0) < blur.sinc_prob:
        cutoff = uniform(generator, math.pi / 3 if size < 13 else math.pi / 5, math.pi)
        return circular_lowpass(cutoff, size, pad_to=full), {"kind": "sinc", "size": size, "cutoff": cutoff}
    kernel, info = random_mixed_kernel(generator, blur, size)
    return pad_kernel(kernel, full), info


def random_final_sinc(generator: torch.Generator, probability: float,
                      kernel_range: tuple[int, ...]) -> tuple[torch.Tensor, dict]:
    """The final sinc filter: with `probability` a sinc of a random size and cutoff ~ U(pi/3, pi), else the
    identity (pulse), both of the largest kernel size."""
    full = max(kernel_range)
    if uniform(generator, 0.0, 1.0) < probability:
        size = kernel_range[int(torch.randint(len(kernel_range), (), generator=generator))]
        cutoff = uniform(generator, math.pi / 3, math.pi)
        return circular_lowpass(cutoff, size, pad_to=full), {"kind": "sinc", "size": size, "cutoff": cutoff}
    return pulse(full), {"kind": "pulse", "size": full}
