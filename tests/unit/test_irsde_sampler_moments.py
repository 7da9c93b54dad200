"""IR-SDE samplers checked at the distribution level against closed forms, with Gaussian data.

Data: x0 ~ N(m, s²) i.i.d. per pixel, a fixed mu, and y = x - mu. The forward process is an OU process on y,

    y_t | y_0 ~ N(e^{-u_t} y_0, σ̄_t²),   σ̄_t² = λ² (1 - e^{-2 u_t}),   u_t = the reversion time at t,

so with y_0 ~ N(d, s²), d = m - mu, the marginal is exactly

    y_t ~ N(M_t, V_t),   M_t = e^{-u_t} d,   V_t = e^{-2 u_t} s² + σ̄_t².

Its score is -(y - M_t) / V_t, and the MMSE noise predictor (what a perfectly trained network returns: E[ε | x_t]
for x_t = mu + e^{-u_t} y_0 + σ̄_t ε) is  ε̂(x_t) = σ̄_t (y_t - M_t) / V_t = -σ̄_t · score.

Each sampler is started from the exact marginal at T and run on 2^16 i.i.d. pixels; every state it reaches is
compared with
* the forward marginal N(M_s, V_s) (the property a reverse-time sampler exists for), within a documented
  tolerance for the discretisation bias of T = 100 steps, and
* the exact Gaussian law of the sampler's own chain (every update is affine in the state plus Gaussian noise, so
  mean and variance propagate in closed form), derived here from the paper's formulas (Euler-Maruyama on the
  reverse SDE; Bayes' rule for the posterior), within 5 Monte-Carlo standard errors.
With N = 65536 samples the standard error of a variance is sqrt(2/N) = 0.55% of it.
"""

from __future__ import annotations

import math

import pytest
import torch

from irsde import samplers
from irsde.sde import IRSDE
from tests.unit.test_irsde_sde import reference_tables

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: small tensors, 2 shared cores

LAM, T = 0.2, 100  # max_sigma < 1 is read in [0, 1] units
MU, M, S = 0.5, 0.8, 0.2  # x0 ~ N(0.8, 0.2²), mu = 0.5: y_0 ~ N(d = 0.3, s² = 0.04)
SHAPE = (4, 1, 128, 128)  # N = 65536 i.i.d. pixels
N = math.prod(SHAPE)
SE_VAR = math.sqrt(2 / N)  # relative standard error of a sample variance: 0.0055


class GaussianData:
    """Closed forms of the forward process for y_0 ~ N(d, s²), from float64 tables written out independently."""

    def __init__(self, lam: float = LAM, T: int = T, m: float = M, s: float = S, mu: float = MU) -> None:
        self.ref = reference_tables(lam, T)
        self.u = self.ref["u"]
        self.lam, self.d, self.s, self.mu = lam, m - mu, s, mu

    def marginal(self, t: int) -> tuple[float, float]:
        """(M_t, V_t) of y_t = x_t - mu."""
        decay = math.exp(-self.u[t])
        return decay * self.d, decay**2 * self.s**2 + self.lam**2 * (1 - decay**2)

    def sigma_bar(self, t: int) -> float:
        return self.lam * math.sqrt(1 - math.exp(-2 * self.u[t]))

    def noise_model(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact MMSE noise predictor E[ε | x_t] = σ̄_t (y_t - M_t) / V_t."""
        assert t.dtype == torch.long and len(t.unique()) == 1
        mean, var = self.marginal(int(t[0]))
        return self.sigma_bar(int(t[0])) * (x_t - self.mu - mean) / var

    def start(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu image, x_T drawn from the exact marginal at T)."""
        mean, var = self.marginal(T)
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return torch.full(SHAPE, self.mu, dtype=torch.float64), self.mu + mean + math.sqrt(var) * z

    # ---------------------------------------------------------------- exact laws of the samplers' chains
    def _grid(self, steps: int | None) -> list[tuple[int, int]]:
        steps = T if steps is None else steps
        grid = [(T * k + steps // 2) // steps for k in range(steps, -1, -1)]  # evenly spaced, rounded
        return list(zip(grid[:-1], grid[1:]))

    def euler_maruyama_law(self, steps: int | None = None, score_factor: float = 2.0) -> dict[int, tuple]:
        """Law of Euler-Maruyama on the reverse SDE  dy = [-θ y - σ² ∇log p_t(y)] dt + σ dw̄,  σ² = 2λ²θ:
        over (s, t] with du = u_t - u_s,  y_s = y_t + du y_t + 2 λ² du · score_t(y_t) + sqrt(2 λ² du) z.
        score_factor=1 gives the probability-flow ODE drift plus the same noise (the breakage to catch)."""
        mean, var = self.marginal(T)
        law = {}
        for t, s in self._grid(steps):
            du = self.u[t] - self.u[s]
            m_t, v_t = self.marginal(t)  # the score's own constants
            gain = 1 + du - score_factor * self.lam**2 * du / v_t
            mean = gain * mean + score_factor * self.lam**2 * du * m_t / v_t
            var = gain**2 * var + 2 * self.lam**2 * du
            law[s] = (mean, var)
        return law

    def posterior_law(self, steps: int | None = None) -> dict[int, tuple]:
        """Law of the posterior sampler: y0_hat = Tweedie's E[y_0 | y_t] = e^{u_t}(y_t + σ̄_t² score_t(y_t)),
        then y_s ~ p(y_s | y_t, y0_hat) by Bayes: prior y_s | y_0 ~ N(c y_0, λ²(1 - c²)), c = e^{-u_s};
        likelihood y_t | y_s ~ N(a y_s, λ²(1 - a²)), a = e^{-(u_t - u_s)}. At s = 0 it is y0_hat itself."""
        mean, var = self.marginal(T)
        law = {}
        for t, s in self._grid(steps):
            m_t, v_t = self.marginal(t)
            sb2 = self.sigma_bar(t) ** 2
            g, h = math.exp(self.u[t]) * (1 - sb2 / v_t), math.exp(self.u[t]) * sb2 * m_t / v_t  # y0_hat = g y + h
            if s == 0:
                alpha, beta, post_var = 0.0, 1.0, 0.0
            else:
                c, a = math.exp(-self.u[s]), math.exp(-(self.u[t] - self.u[s]))
                prec_prior, prec_lik = 1 / (self.lam**2 * (1 - c**2)), a**2 / (self.lam**2 * (1 - a**2))
                post_var = 1 / (prec_prior + prec_lik)
                alpha, beta = post_var * prec_lik / a, post_var * prec_prior * c  # mean = α y_t + β y0_hat
            mean = (alpha + beta * g) * mean + beta * h
            var = (alpha + beta * g) ** 2 * var + post_var
            law[s] = (mean, var)
        return law


def run_and_record(name: str, steps: int | None = None, seed: int = 0, **kw) -> tuple[dict[int, tuple], dict]:
    """Run sampler ``name`` from the exact marginal at T; returns ({s: (mean, var) of y_s}, final stats)."""
    data = GaussianData()
    mu, x_T = data.start(seed)
    sde = IRSDE(LAM, T=T)
    stats: dict[int, tuple] = {}

    def record(i: int, s: int, x: torch.Tensor) -> None:
        y = x - MU
        stats[s] = (y.mean().item(), y.var().item())

    out = samplers.restore(name, sde, data.noise_model, mu, steps=steps, x_T=x_T,
                           generator=torch.Generator().manual_seed(seed + 1), callback=record, **kw)
    assert out.dtype == torch.float64
    return stats, data


@pytest.fixture(scope="module")
def sde_run():
    return run_and_record("sde")


@pytest.fixture(scope="module")
def posterior_run():
    return run_and_record("posterior")


def _mean_tol(var: float) -> float:
    return 5 * math.sqrt(var / N)


# ---------------------------------------------------------------- the reverse SDE (Euler-Maruyama)


def test_reverse_sde_samples_the_data_distribution_and_every_marginal(sde_run):
    """Exact score, x_T from the exact marginal: every state y_s must follow N(M_s, V_s), the output N(d, s²).

    Expected (exact laws computed by GaussianData.euler_maruyama_law, T = 100 cosine):
      correct SDE drift (score factor σ²):  Var/V within [1.000, 1.051] over all s, 1.0156 at the output; mean
      bias at most 0.012 sd.
      ODE drift + noise (score factor σ²/2): Var/V = 1.21 already at s = 99, 11.6 at the output (0.46 vs 0.04).
    Tolerance 7% on Var/V (the Euler bias 5.1% + 5 standard errors would need 2.8%, so 7% is generous)."""
    stats, data = sde_run
    assert sorted(stats) == list(range(T))
    for s, (mean, var) in stats.items():
        m_s, v_s = data.marginal(s)
        assert abs(var / v_s - 1) < 0.07, f"s={s}: Var {var:.5f} vs marginal {v_s:.5f} (ratio {var / v_s:.4f})"
        assert abs(mean - m_s) < 0.02 * math.sqrt(v_s) + _mean_tol(v_s), f"s={s}: mean {mean:.5f} vs {m_s:.5f}"
    mean, var = stats[0]
    assert abs(var / S**2 - 1) < 0.03, f"output Var {var:.5f} vs data s² = {S**2}"  # 1.0156 expected
    assert abs(mean - (M - MU)) < 0.02 * S + _mean_tol(S**2)


def test_reverse_sde_follows_the_exact_law_of_its_euler_maruyama_chain(sde_run):
    """Tighter: the affine-Gaussian chain's own law, to 5 standard errors (2.8% on variances). The ODE-drift
    breakage is a factor ~10 off; a wrong noise scale or drift constant of a few percent is caught too."""
    stats, data = sde_run
    law = data.euler_maruyama_law()
    wrong = data.euler_maruyama_law(score_factor=1.0)
    assert wrong[0][1] / law[0][1] > 10  # what the ODE-drift breakage would give (0.464 vs 0.0406)
    for s, (mean, var) in stats.items():
        exp_mean, exp_var = law[s]
        assert abs(var / exp_var - 1) < 5 * SE_VAR, f"s={s}: Var {var:.6f} vs exact law {exp_var:.6f}"
        assert abs(mean - exp_mean) < _mean_tol(exp_var), f"s={s}: mean {mean:.6f} vs exact law {exp_mean:.6f}"


# ---------------------------------------------------------------- the posterior sampler


def test_posterior_sampler_samples_the_data_distribution_and_every_marginal(posterior_run):
    """Exact noise, x_T from the exact marginal: the states follow N(M_s, V_s) and the output N(d, s²).

    Expected (GaussianData.posterior_law): the mean is exact at every s (posterior means are unbiased); Var/V
    is 1.000 down to s = 80 and drifts to 0.931 at the output, because each step draws the posterior variance
    of x_s | x_t, x0 but not the uncertainty of x0_hat (per step O(du²), about 7% over 100 cosine steps).
    Without the posterior noise: Var/V = 0.81 at s = 99, 0.018 at s = 80, 0.0000 at the output (every sample
    collapses onto E[x0 | x_t])."""
    stats, data = posterior_run
    assert sorted(stats) == list(range(T))
    for s, (mean, var) in stats.items():
        m_s, v_s = data.marginal(s)
        tol = 0.03 if s >= 60 else 0.09  # >= 0.997 down to s = 60 (+ 5 SE = 2.8%); 0.931 at the output
        assert abs(var / v_s - 1) < tol, f"s={s}: Var {var:.6f} vs marginal {v_s:.6f} (ratio {var / v_s:.4f})"
        assert abs(mean - m_s) < _mean_tol(v_s), f"s={s}: mean {mean:.5f} vs {m_s:.5f}"
    mean, var = stats[0]
    assert 0.88 < var / S**2 < 1.03, f"output Var {var:.6f} vs data s² = {S**2}"  # 0.931 expected
    assert abs(mean - (M - MU)) < _mean_tol(S**2)


@pytest.mark.parametrize("steps", [None, 10])
def test_posterior_sampler_follows_the_exact_law_of_its_chain(steps, posterior_run):
    """The Bayes-rule law of the chain to 5 standard errors (2.8% on variances). With steps=10 every update
    is the exact OU posterior over a 10-step interval: the bias against the marginal grows (output Var 0.022
    against s² = 0.04, since the uncertainty of x0_hat is dropped over far larger steps) but the law is the
    same closed form; without the posterior noise the variance collapses (0.005 against 0.040 after the first
    interval)."""
    stats, data = posterior_run if steps is None else run_and_record("posterior", steps=steps, seed=7)
    law = data.posterior_law(steps)
    assert sorted(stats) == sorted(law)
    for s, (mean, var) in stats.items():
        exp_mean, exp_var = law[s]
        assert abs(var / exp_var - 1) < 5 * SE_VAR, f"s={s}: Var {var:.6f} vs exact law {exp_var:.6f}"
        assert abs(mean - exp_mean) < _mean_tol(exp_var), f"s={s}: mean {mean:.6f} vs exact law {exp_mean:.6f}"
