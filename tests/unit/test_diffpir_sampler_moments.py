"""DiffPIR's diffusion steps checked at the distribution level with exact Gaussian priors.

The prior is x0 ~ N(m, s²) i.i.d. per pixel (s = 0: a point mass), x_t = a_t x0 + b_t ε with a_t = sqrt(ᾱ_t),
b_t = sqrt(1 - ᾱ_t), so x_t ~ N(a_t m, V_t), V_t = a_t² s² + b_t², and the MMSE noise predictor (a perfectly
trained ε-network) is  E[ε | x_t] = b_t (x_t - a_t m) / V_t;  for s = 0 it implies x̃0 = m exactly.

The data step is made the identity with an inpainting mask of zeros (x̂0 = (0·y + ρ x̃0) / (0 + ρ) = x̃0), so one
DiffPIR step from t to t' is the re-noising  x_{t'} = a' x̂0 + b' (sqrt(1 - ζ) ε̂ + sqrt(ζ) ε),  ε̂ = (x_t - a x̂0) / b
(paper Algorithm 1, official `x = sqrt(ᾱ') x0 + sqrt(1 - ᾱ') (sqrt(1 - ζ) ε̂ + sqrt(ζ) ε)`). The states are read
where the sampler hands them over: the prior network records the input of every call, i.e. x_t at every visited t.
With N = 65536 pixels the standard error of a sample variance is sqrt(2/N) = 0.55% of it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffpir.operators import Inpainting
from diffpir.sampler import diffpir_sample

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: small tensors, 2 shared cores

T = 1000
ALPHA_BAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))  # the linear-beta DDPM schedule, written out here
SHAPE = (4, 1, 128, 128)
N = math.prod(SHAPE)
SE_VAR = math.sqrt(2 / N)  # 0.0055


def ab(t: int) -> tuple[float, float]:
    return math.sqrt(ALPHA_BAR[t]), math.sqrt(1 - ALPHA_BAR[t])


def quad_steps(nfe: int) -> list[int]:
    seq = [int(v) for v in np.sqrt(np.linspace(0, T**2, nfe))]
    seq[-1] -= 1
    return [T - 1 - v for v in seq]


class StopSampling(Exception):
    """Raised by the prior after the calls a test needs, to skip the rest of the chain."""


class ExactGaussianPrior(nn.Module):
    """ε-model exact for x0 ~ N(m, s²); records (t, mean, var) of every input state."""

    def __init__(self, m: float, s: float, max_calls: int | None = None) -> None:
        super().__init__()
        self.m, self.s, self.max_calls = m, s, max_calls
        self.seen: list[tuple[int, float, float]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = int(t[0])
        assert (t == tt).all()
        self.seen.append((tt, x.mean().item(), x.var().item()))
        if self.max_calls is not None and len(self.seen) >= self.max_calls:
            raise StopSampling
        a, b = ab(tt)
        return b * (x - a * self.m) / (a**2 * self.s**2 + b**2)


class RecordingIdentityStep(Inpainting):
    """Inpainting with every pixel unknown, so the data step returns its input; records (min, max, share of
    pixels at ±1) of what it is given."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__(torch.zeros(height, width))
        self.inputs: list[tuple[float, float, float]] = []

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho) -> torch.Tensor:
        self.inputs.append((float(z.min()), float(z.max()), float((z.abs() == 1.0).double().mean())))
        out = super().prox(z, y, rho)
        assert torch.allclose(out[0, 0, 0], z[0, 0, 0], rtol=1e-12, atol=0)  # the identity, as claimed
        return out


def run(prior: ExactGaussianPrior, zeta: float, nfe: int, seed: int = 0, **kw) -> RecordingIdentityStep:
    """x_init drawn from the exact marginal of the prior at t = 999; float64 throughout."""
    gen = torch.Generator().manual_seed(seed)
    a, b = ab(T - 1)
    var = a**2 * prior.s**2 + b**2
    x_init = a * prior.m + math.sqrt(var) * torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    op = RecordingIdentityStep(*SHAPE[-2:])
    y = torch.zeros(SHAPE, dtype=torch.float64)
    try:
        diffpir_sample(prior, op, y, sigma_n=0.05, lam=1.0, zeta=zeta, nfe=nfe, x_init=x_init, generator=gen,
                       **kw)
    except StopSampling:
        pass
    assert [c[0] for c in prior.seen] == quad_steps(nfe)[: len(prior.seen)]
    return op


# ---------------------------------------------------------------- the noise mixing sqrt(1 - ζ) / sqrt(ζ)


@pytest.mark.parametrize("zeta", [0.1, 0.3, 0.6])
def test_renoising_keeps_the_exact_marginal_of_point_mass_data(zeta):
    """Point-mass data (s = 0): x̂0 = m exactly and ε̂ = (x_t - a m)/b ~ N(0, 1) whenever x_t ~ N(a m, b²), so
    sqrt(1 - ζ) ε̂ + sqrt(ζ) ε has unit variance and every visited state is exactly N(a_t m, b_t²), for any ζ
    and any step size. With (1 - ζ) in place of sqrt(1 - ζ) the variance ratio per step becomes
    (1 - ζ)² r + ζ: 0.91 / 0.79 / 0.76 after the first step for ζ = 0.1 / 0.3 / 0.6, tending to 1/(2 - ζ)
    (0.53 / 0.59 / 0.71) -- against a tolerance of 5 standard errors (2.8%)."""
    prior = ExactGaussianPrior(m=0.2, s=0.0)
    run(prior, zeta, nfe=10)
    for t, mean, var in prior.seen:
        a, b = ab(t)
        assert abs(var / b**2 - 1) < 5 * SE_VAR, f"t={t}: Var {var:.5f} vs b² = {b**2:.5f} ({var / b**2:.4f})"
        assert abs(mean - a * 0.2) < 5 * b / math.sqrt(N), f"t={t}: mean {mean:.5f} vs a m = {a * 0.2:.5f}"


@pytest.mark.parametrize("zeta", [0.3, 0.5])
def test_steps_at_large_t_are_alpha_bar_consistent_for_gaussian_data(zeta):
    """Gaussian data N(0.1, 0.5²), x_999 from the exact marginal, nfe = 17 (t = 999 -> 749 -> 646 -> 566).

    x̂0 = m + k (x - a m), k = a s² / V, is affine, so one step maps N(a m, V) to N(a' m, v') with
        v' = (a' k + b' sqrt(1 - ζ) (1 - a k) / b)² V + ζ b'²   (computed here, checked to 5 SE),
    and for these small steps v' is within 1.5% of the DDPM marginal V' = ᾱ' s² + 1 - ᾱ' (0.9993 after the first
    step). With (1 - ζ) in place of sqrt(1 - ζ): v'/V' = 0.79 (ζ = 0.3) / 0.75 (ζ = 0.5) after the first step."""
    m, s = 0.1, 0.5
    prior = ExactGaussianPrior(m, s, max_calls=4)  # the rest of the chain is not needed
    run(prior, zeta, nfe=17)
    checked = prior.seen  # x̂0 = m + k(x - a m) with k <= 0.1 here: far inside [-1, 1], so no clipping
    assert [t for t, _, _ in checked] == [999, 749, 646, 566]
    law_var = checked[0][2]  # the start, empirical
    for (t, _, _), (t_next, mean, var) in zip(checked[:-1], checked[1:]):
        a, b = ab(t)
        a_next, b_next = ab(t_next)
        k = a * s**2 / (a**2 * s**2 + b**2)
        law_var = (a_next * k + b_next * math.sqrt(1 - zeta) * (1 - a * k) / b) ** 2 * law_var + zeta * b_next**2
        marginal = a_next**2 * s**2 + b_next**2
        assert abs(var / law_var - 1) < 5 * SE_VAR, f"t={t_next}: Var {var:.5f} vs law {law_var:.5f}"
        assert abs(var / marginal - 1) < 0.015 + 5 * SE_VAR, f"t={t_next}: Var {var:.5f} vs {marginal:.5f}"
        assert abs(mean - a_next * m) < 5 * math.sqrt(marginal / N), f"t={t_next}: mean {mean:.5f}"


# ---------------------------------------------------------------- clipping the predicted x0 (clip_denoised)


def test_data_step_only_sees_predictions_in_the_image_range():
    """A prior whose ε implies x̃0 = 3 everywhere (point mass at 3): guided-diffusion's clip_denoised (on by
    default) hands the data step x̃0 = 1, never 3; without the clip it would see 3 at every step."""
    prior = ExactGaussianPrior(m=3.0, s=0.0)
    op = run(prior, zeta=0.3, nfe=6, return_last_prediction=True)
    assert len(op.inputs) == 6
    for low, high, _ in op.inputs:
        assert low == 1.0 and high == 1.0, (low, high)
    # A wide prior, N(0, 1.5²): many predictions fall outside [-1, 1] and all of them are clipped.
    wide = ExactGaussianPrior(m=0.0, s=1.5)
    op = run(wide, zeta=0.3, nfe=6, seed=1, return_last_prediction=True)
    low, high, clipped = op.inputs[-1]
    assert low == -1.0 and high == 1.0
    assert clipped > 0.1  # P(|x0| > 1) = 0.50 for the prior: the clip is exercised
    assert all(-1.0 <= low and high <= 1.0 for low, high, _ in op.inputs)
    # The switch is what the check is about: clip_denoised=False lets 3 through.
    unclipped = run(ExactGaussianPrior(m=3.0, s=0.0), zeta=0.3, nfe=6, clip_denoised=False,
                    return_last_prediction=True)
    assert all(low == pytest.approx(3.0) and high == pytest.approx(3.0) for low, high, _ in unclipped.inputs)


def test_with_fresh_noise_every_state_is_the_clipped_prediction_renoised():
    """ζ = 1 (the official inpainting setting): x_{t'} = a' clip(x̃0) + b' ε exactly, so for the point mass at 3
    each visited state is N(a', b'²) -- the forward marginal of the *clipped* data 1 -- and not N(3 a', b'²).
    The means differ by 2 a' (0.21 at t = 666, 1.9 at t = 57) against a standard error b'/256 <= 0.004."""
    prior = ExactGaussianPrior(m=3.0, s=0.0)
    run(prior, zeta=1.0, nfe=10)
    for t, mean, var in prior.seen[1:]:
        a, b = ab(t)
        assert abs(mean - a * 1.0) < 5 * b / math.sqrt(N), f"t={t}: mean {mean:.5f}, a = {a:.5f}, 3a = {3 * a:.5f}"
        assert abs(var / b**2 - 1) < 5 * SE_VAR, f"t={t}: Var {var:.6f} vs b² = {b**2:.6f}"
