"""MR Sampler (irsde/mr_sampler.py): few-step DPM-Solver++ samplers of IR-SDE against closed forms, Gaussian data.

Data: x0 ~ N(m, s²) i.i.d. per pixel and a fixed mu; in y = x - mu the forward process is y_t = α_t y_0 + σ_t ε,
so with d = m - mu

    y_t ~ N(α_t d, V_t),   V_t = α_t² s² + σ_t²,    exact noise predictor  ε̂(y_t) = σ_t (y_t - α_t d) / V_t,

and the probability-flow ODE keeps the standardised value (y_t - α_t d) / sqrt(V_t) constant: from t to t' it is
the affine map  y_t' = α_t' d + (y_t - α_t d) sqrt(V_t' / V_t).

s = 0.1 differs from λ = 0.2 on purpose: with s = λ, V_t = λ² at every t and some wrong samplers keep the right
variance by accident (Euler on the PF-ODE is exact in variance there).

Convergence orders are measured on a continuous schedule (``ContinuousMR``: u(t) = U t on [0, 1], the IR-SDE
closed forms α = e^{-u}, σ = λ sqrt(1 - e^{-2u}), exactly invertible in log-SNR), on times uniform in λ from
λ(1) to λ = 3, without the final denoise (that last step is checked separately). The official integer grid is
used for everything that compares with the suite's samplers.

Every solver step is affine in the state plus Gaussian noise, so the exact law of a stochastic solver's output
is A y_T + c + Σ_k B_k z_k. ``chain_law`` reads A, c and the B_k off the code itself by replacing its noise with
unit impulses (one pixel per noise draw), which turns the weak-order check into a deterministic one.

The denoising variant (DenoisingIRSDE, last section): x_t = x0 + σ̄_t ε, i.e. α ≡ 1, λ = -log σ̄. With
x0 ~ N(M, S²) the noisy input x_{t*} ~ N(M, S² + σ̄_{t*}²), the exact predictor is ε̂ = σ (x - M) / (S² + σ²) and
the probability-flow ODE (the official denoising ODE) keeps (x - M) / sqrt(S² + σ²) constant.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irsde import mr_sampler as mrs
from irsde import samplers
from irsde.sde import IRSDE, DenoisingIRSDE
from tests.unit.test_irsde_sde import reference_tables

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: small tensors, 2 shared cores

LAM, T = 0.2, 100
MU, M, S = 0.5, 0.8, 0.1
D = M - MU
SHAPE = (4, 1, 128, 128)  # N = 65536 i.i.d. pixels for the Monte-Carlo checks
N = math.prod(SHAPE)
SE_VAR = math.sqrt(2 / N)  # relative standard error of a sample variance: 0.0055


class ContinuousMR:
    """A continuous-time mean-reverting schedule: u(t) = U t on [0, 1], e^{-U} = 0.005 as in IR-SDE."""

    U = -math.log(0.005)

    def alpha(self, t: float) -> float:
        return math.exp(-self.U * t)

    def sigma(self, t: float) -> float:
        return LAM * math.sqrt(-math.expm1(-2 * self.U * t))

    def log_snr(self, t: float) -> float:
        return math.log(self.alpha(t) / self.sigma(t))

    def time_of(self, lam: float) -> float:
        """Inverse of log_snr: e^{-2u} (1 + λ² e^{2 lam}) = λ² e^{2 lam}  =>  u = log(1 + e^{-2 lam} / λ²) / 2."""
        return 0.5 * math.log1p(math.exp(-2 * lam) / LAM**2) / self.U

    def model_condition(self, x, mu):
        return mu

    def noisy_start(self, mu, generator=None):
        raise AssertionError("the tests always pass x_T")


def gaussian_eps(y: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """The exact noise predictor E[ε | y_t] for y_0 ~ N(d, s²)."""
    return sigma * (y - alpha * D) / (alpha**2 * S**2 + sigma**2)


def continuous_model(sched: ContinuousMR):
    def model(x, cond, t):
        assert t.dtype == torch.float64 and len(t.unique()) == 1
        t = float(t[0])
        return gaussian_eps(x - MU, sched.alpha(t), sched.sigma(t))

    return model


def float64_irsde() -> IRSDE:
    """IRSDE whose tables the samplers read (elapsed u, sigma_bars) are float64 and consistent with each other, so
    that samplers computing σ from u (the posterior) and from sigma_bars (the MR samplers) agree to 1e-15."""
    sde = IRSDE(LAM, T=T)
    ref = reference_tables(LAM, T)
    sde.elapsed = torch.tensor(ref["u"], dtype=torch.float64)
    sde.sigma_bars = torch.tensor(ref["sigma_bars"], dtype=torch.float64)
    return sde


def table_model(sde: IRSDE):
    def model(x, cond, t):
        assert t.dtype == torch.long and len(t.unique()) == 1
        t = int(t[0])
        return gaussian_eps(x - MU, math.exp(-float(sde.elapsed[t])), float(sde.sigma_bars[t]))

    return model


def marginal(alpha: float, sigma: float) -> tuple[float, float]:
    return alpha * D, alpha**2 * S**2 + sigma**2


def lambda_grid(sched: ContinuousMR, steps: int, lam_end: float = 3.0) -> list[float]:
    times = [sched.time_of(lam) for lam in np.linspace(sched.log_snr(1.0), lam_end, steps + 1)]
    times[0] = 1.0
    return times


def chain_law(monkeypatch, sampler, sde, model, start: tuple[float, float], denoising: bool = False,
              **kw) -> tuple[float, float]:
    """Exact (mean, variance) of the sampler's output y when y_T ~ N(start), its noise replaced by unit impulses:
    pixel 0 starts at 0 (gives c), pixel 1 at 1 (gives A + c), pixel 2 + k receives the k-th noise draw (B_k).
    ``denoising``: the state is x itself, passed as the noisy input (no level mu)."""
    n_draws = 330
    draws = []

    def impulse(x, generator=None):
        z = torch.zeros_like(x)
        z[..., 2 + len(draws)] = 1.0
        draws.append(1)
        return z

    y_T = torch.zeros(1, 1, 1, 2 + n_draws, dtype=torch.float64)
    y_T[..., 1] = 1.0
    mu = torch.full_like(y_T, MU)
    with monkeypatch.context() as patch:
        patch.setattr(mrs, "randn_like", impulse)
        y = sampler(sde, model, y_T, **kw) if denoising else sampler(sde, model, mu, x_T=mu + y_T, **kw) - MU
    c, a = float(y[..., 0]), float(y[..., 1] - y[..., 0])
    b2 = float(((y[..., 2:] - c) ** 2).sum())
    assert len(draws) < n_draws
    return a * start[0] + c, a**2 * start[1] + b2


def slope(steps, errors) -> float:
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])


# ---------------------------------------------------------------------------------------------- time grid


def test_logsnr_grid_is_distinct_integers_uniform_in_log_snr():
    sde = IRSDE(LAM, T=T)
    for steps in range(1, T + 1):
        grid = mrs.mr_timesteps(sde, steps)
        assert len(grid) == steps + 1 and grid[0] == T and grid[-1] == 0
        assert all(a > b for a, b in zip(grid[:-1], grid[1:])) and all(isinstance(t, int) for t in grid)
        assert steps == 1 or grid[-2] == 1  # the last evaluation at t = 1, then the x0 prediction
    assert mrs.mr_timesteps(sde, T) == list(range(T, -1, -1))
    grid = mrs.mr_timesteps(sde, 10)
    lams = [mrs.log_snr(*mrs.alpha_sigma(sde, t)) for t in grid[:-1]]
    gaps = np.diff(lams)
    # Rounding to integers moves each λ by at most half a timestep's λ-change (<= 0.27 at t = 1 here).
    assert np.all(gaps > 0) and np.ptp(gaps) < 0.5 * gaps.mean(), gaps
    assert mrs.mr_timesteps(sde, 7, grid="uniform") == samplers.timestep_grid(T, 7)
    for bad in (0, T + 1):
        with pytest.raises(ValueError):
            mrs.mr_timesteps(sde, bad)
    with pytest.raises(ValueError, match="grid"):
        mrs.mr_timesteps(sde, 5, grid="karras")


@pytest.mark.parametrize("name", sorted(mrs.MR_SAMPLERS))
def test_one_evaluation_per_step_ending_on_the_x0_prediction(name):
    sde = float64_irsde()
    oracle = table_model(sde)
    calls, states = [], {}

    def model(x, cond, t):
        calls.append(int(t[0]))
        return oracle(x, cond, t)

    mu = torch.full((2, 1, 4, 4), MU, dtype=torch.float64)
    x_T = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = mrs.MR_SAMPLERS[name](sde, model, mu, steps=6, x_T=x_T, generator=torch.Generator().manual_seed(1),
                                callback=lambda i, s, x: states.setdefault(s, x))
    grid = mrs.mr_timesteps(sde, 6)
    assert calls == grid[:-1] and sorted(states, reverse=True) == grid[1:]
    # Last step t_1 = 1 -> 0: x0_hat = mu + (y - σ ε̂) / α at t = 1, from the state reached at t = 1.
    y1 = states[1] - MU
    alpha, sigma = math.exp(-float(sde.elapsed[1])), float(sde.sigma_bars[1])
    torch.testing.assert_close(out, MU + (y1 - sigma * gaussian_eps(y1, alpha, sigma)) / alpha, rtol=0, atol=1e-12)


def test_float32_images_on_the_stored_tables_stay_float32_and_reproducible():
    sde = IRSDE(10, T=T)  # float32 tables, as trained
    model = table_model(sde)
    mu = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for name, sampler in mrs.MR_SAMPLERS.items():
        runs = [sampler(sde, model, mu, steps=8, generator=torch.Generator().manual_seed(4)) for _ in range(2)]
        assert runs[0].dtype == torch.float32 and torch.isfinite(runs[0]).all(), name
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_rejects_what_it_cannot_sample():
    mu = torch.zeros(1, 1, 2, 2)
    denoising = DenoisingIRSDE(70, T=10)
    with pytest.raises(ValueError, match="noise level: sigma="):
        mrs.mr_ode(denoising, lambda x, c, t: x, mu, steps=2)
    with pytest.raises(ValueError, match="x_T"):
        mrs.mr_sde(denoising, lambda x, c, t: x, mu, sigma=25, x_T=mu)
    with pytest.raises(ValueError, match="exceeds"):
        mrs.mr_ode(denoising, lambda x, c, t: x, mu, sigma=80)
    with pytest.raises(ValueError, match="steps"):
        mrs.mr_ode(denoising, lambda x, c, t: x, mu, sigma=25, steps=0)
    with pytest.raises(ValueError, match="denoising variant"):
        mrs.mr_ode(IRSDE(LAM, T=10), lambda x, c, t: x, mu, sigma=25)
    sde = IRSDE(LAM, T=10)
    with pytest.raises(ValueError, match="order"):
        mrs.mr_ode(sde, lambda x, c, t: x, mu, order=4)
    with pytest.raises(ValueError, match="order"):
        mrs.mr_sde(sde, lambda x, c, t: x, mu, order=3)
    with pytest.raises(ValueError, match="integer"):
        mrs.mr_ode(sde, lambda x, c, t: x, mu, times=[10, 5.5, 0])
    with pytest.raises(ValueError, match="decreasing"):
        mrs.mr_ode(sde, lambda x, c, t: x, mu, times=[10, 10, 0])


# ---------------------------------------------------------------------------------------------- the ODE solvers


@pytest.mark.parametrize("order", [1, 2, 3])
def test_mr_ode_converges_to_the_exact_flow_at_its_order(order):
    """Max error against the exact PF-ODE map, times uniform in λ over [λ(1), 3] = [-3.67, 3].

    Measured max errors at 64 / 128 / 256 / 512 steps and fitted log-log slopes:
      order 1: 6.7e-3, 3.4e-3, 1.7e-3, 8.5e-4 (slope 1.00);  order 2: 9.7e-5, 2.7e-5, 7.2e-6, 1.8e-6 (1.91);
      order 3: 3.9e-5, 4.5e-6, 5.4e-7, 6.6e-8 (3.06).
    Fewer steps are pre-asymptotic here (order 2 changes sign near 16 steps; at 4..32 steps the order-3 error is
    dominated by its two lower-order warm-up steps over wide λ intervals), hence 64..512 (0.4 s in all).
    dpm_solver_pytorch.py's 3M coefficient (alpha_t * phi_3 on D2, without the 2): slope 2.30 here."""
    sched = ContinuousMR()
    model = continuous_model(sched)
    z = torch.linspace(-3, 3, 601, dtype=torch.float64).view(1, 1, 1, -1)
    mu = torch.full_like(z, MU)
    mean_T, var_T = marginal(sched.alpha(1.0), sched.sigma(1.0))
    x_T = MU + mean_T + math.sqrt(var_T) * z
    steps, errors = [64, 128, 256, 512], []
    for k in steps:
        times = lambda_grid(sched, k)
        out = mrs.mr_ode(sched, model, mu, order=order, times=times, x_T=x_T)
        mean_e, var_e = marginal(sched.alpha(times[-1]), sched.sigma(times[-1]))
        errors.append(float((out - MU - mean_e - math.sqrt(var_e) * z).abs().max()))
    fitted = slope(steps, errors)
    assert abs(fitted - order) < 0.25, f"order {order}: errors {errors}, slope {fitted:.2f}"
    assert errors[-1] < [1.5e-3, 4e-6, 1.5e-7][order - 1], errors


def test_variable_step_updates_integrate_polynomial_data_predictions_exactly():
    """Given the data prediction as a function P(λ) along the path, the exact solutions over one step are

        ODE:  y_s = (σ_s/σ_t) y_t + α_s ∫_0^h e^{-(h-v)} P(λ_t + v) dv,
        SDE:  y_s = (σ_s/σ_t) e^{-h} y_t + 2 α_s ∫_0^h e^{-2(h-v)} P(λ_t + v) dv + noise,

    so a multistep update of order k, fed P at λ_t, λ_t - h_0, λ_t - h_0 - h_1, must be exact when P has degree
    k - 1, whatever the step sizes: this checks the step-ratio bookkeeping that λ-uniform grids cannot see
    (h = h_0 = h_1 there). Integrals by 30-point Gauss-Legendre, independent of the phi-function algebra."""
    lam_t, h, h0, h1 = 0.4, 0.9, 0.35, 1.3
    alpha_s, ratio, sigma_s = 0.8, 0.3, 0.25  # the updates are linear in these: any values will do
    nodes, weights = np.polynomial.legendre.leggauss(30)
    v, w = h * (nodes + 1) / 2, weights * h / 2
    coef = [0.7, -1.1, 0.45]

    def poly(lam, degree):
        return sum(c * (lam - 0.1) ** i for i, c in enumerate(coef[: degree + 1]))

    def integral(rate, degree):
        return float(np.sum(w * np.exp(-rate * (h - v)) * poly(lam_t + v, degree)))

    y = torch.tensor([0.37], dtype=torch.float64)

    def preds(degree):
        return [torch.tensor([poly(lam, degree)], dtype=torch.float64) for lam in (lam_t, lam_t - h0, lam_t - h0 - h1)]

    d = preds(0)
    exact = ratio * y + alpha_s * integral(1, 0)
    torch.testing.assert_close(mrs.ode_step_1(y, d[0], h, ratio, alpha_s), exact, rtol=0, atol=1e-13)
    d = preds(1)
    exact = ratio * y + alpha_s * integral(1, 1)
    torch.testing.assert_close(mrs.ode_step_2(y, d[0], d[1], h, h0, ratio, alpha_s), exact, rtol=0, atol=1e-13)
    d = preds(2)
    exact = ratio * y + alpha_s * integral(1, 2)
    out = mrs.ode_step_3(y, d[0], d[1], d[2], h, h0, h1, ratio, alpha_s)
    torch.testing.assert_close(out, exact, rtol=0, atol=1e-13)
    zero = torch.zeros_like(y)
    for degree, d1, step0 in ((0, None, None), (1, 1, h0)):
        d = preds(degree)
        exact = ratio * math.exp(-h) * y + 2 * alpha_s * integral(2, degree)
        out = mrs.sde_step(y, d[0], None if d1 is None else d[1], h, step0, ratio, alpha_s, sigma_s, zero)
        torch.testing.assert_close(out, exact, rtol=0, atol=1e-13)


def test_mr_ode_order1_is_the_ddim_step_of_the_suite_closed_forms(monkeypatch):
    """DPM-Solver++(1) y_s = (σ_s/σ_t) y_t - α_s (e^{-h} - 1) y0_hat is DDIM: x_s = mu_bar(x0_hat, s) + σ̄_s ε̂,
    written here with IRSDE.x0_from_noise / mu_bar / sigma_bar, state by state to 1e-10.

    The suite's deterministic posterior sampler is not this step: E[x_s | x_t, x0_hat] is the *mean of the SDE
    step* (SDE-DPM-Solver++(1) with z = 0, checked below), and only for a single step (straight to x0_hat at T)
    do all three coincide."""
    sde = float64_irsde()
    model = table_model(sde)
    mu = torch.full((1, 1, 8, 8), MU, dtype=torch.float64)
    x_T = mu + 0.3 * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    states = {}
    mrs.mr_ode(sde, model, mu, steps=10, order=1, x_T=x_T, callback=lambda i, s, x: states.update({s: x}))
    grid = mrs.mr_timesteps(sde, 10)
    x = x_T
    for t, s in zip(grid[:-1], grid[1:]):
        eps = model(x, mu, torch.full((1,), t))
        x = sde.mu_bar(sde.x0_from_noise(x, eps, mu, t), mu, s) + sde.sigma_bar(s) * eps
        torch.testing.assert_close(states[s], x, rtol=0, atol=1e-10)

    kw = {"steps": 10, "x_T": x_T}  # the posterior sampler's grid is the "uniform" one
    deterministic_posterior = samplers.reverse_posterior(sde, model, mu, stochastic=False, **kw)
    with monkeypatch.context() as patch:
        patch.setattr(mrs, "randn_like", lambda x, generator=None: torch.zeros_like(x))
        sde_mean = mrs.mr_sde(sde, model, mu, order=1, grid="uniform", **kw)
    torch.testing.assert_close(sde_mean, deterministic_posterior, rtol=0, atol=1e-10)
    ddim = mrs.mr_ode(sde, model, mu, order=1, grid="uniform", **kw)
    assert (ddim - deterministic_posterior).abs().max() > 1e-3
    one_step = {"steps": 1, "x_T": x_T}
    torch.testing.assert_close(mrs.mr_ode(sde, model, mu, order=1, **one_step),
                               samplers.reverse_posterior(sde, model, mu, stochastic=False, **one_step),
                               rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- the SDE solvers


def test_mr_sde_order1_is_the_posterior_sampler():
    """SDE-DPM-Solver++(1): mean (σ_s/σ_t) e^{-h} y_t + α_s (1 - e^{-2h}) y0_hat and std σ_s sqrt(1 - e^{-2h}) are
    exactly the Gaussian posterior of y_s | y_t, y0_hat; same grid, same generator: same samples to 1e-10."""
    sde = float64_irsde()
    model = table_model(sde)
    mu = torch.full((2, 1, 8, 8), MU, dtype=torch.float64)
    for steps in (3, 10):
        kw = {"steps": steps}
        ours = mrs.mr_sde(sde, model, mu, order=1, grid="uniform", generator=torch.Generator().manual_seed(5), **kw)
        theirs = samplers.reverse_posterior(sde, model, mu, generator=torch.Generator().manual_seed(5), **kw)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("order", [1, 2])
def test_mr_sde_law_converges_to_the_data_distribution_at_its_weak_order(order, monkeypatch):
    """Exact law of the output (``chain_law``) at the end time of a λ-uniform grid over [λ(1), 3], against the
    marginal N(α_e d, V_e) there. Measured Var/V_e - 1 at 10 / 20 / 40 / 80 / 160 / 320 steps:
      order 1: -0.39, -0.23, -0.12, -0.064, -0.033, -0.017 (slope 0.98 over 80..320);
      order 2: -0.060, 2.3e-3, 3.1e-3, 1.0e-3, 2.7e-4, 7.0e-5 (slope 1.93 over 80..320; sign change near 15).
    The mean is exact at every step count (every update is exact for a constant x0 prediction)."""
    sched = ContinuousMR()
    model = continuous_model(sched)
    start = marginal(sched.alpha(1.0), sched.sigma(1.0))
    steps, errors = [80, 160, 320], []
    for k in steps:
        times = lambda_grid(sched, k)
        mean, var = chain_law(monkeypatch, mrs.mr_sde, sched, model, start, order=order, times=times)
        mean_e, var_e = marginal(sched.alpha(times[-1]), sched.sigma(times[-1]))
        assert abs(mean - mean_e) < 1e-12
        errors.append(abs(var / var_e - 1))
    fitted = slope(steps, errors)
    assert abs(fitted - order) < 0.25, f"order {order}: |Var ratio - 1| {errors}, slope {fitted:.2f}"
    assert errors[-1] < [0.025, 1.5e-4][order - 1], errors


# Exact output Var / s² of the integer-grid solvers (logsnr grid, T = 100), from chain_law; see the test below.
EXPECTED_VAR_RATIO = {(1, 10): 0.424, (1, 20): 0.637, (2, 10): 1.487, (2, 20): 1.190}


@pytest.mark.parametrize(("order", "steps"), sorted(EXPECTED_VAR_RATIO))
def test_mr_sde_samples_follow_their_exact_law(order, steps, monkeypatch):
    """2^16 pixels from the exact marginal at T through the official integer grid, with real noise: the output
    mean and variance match the solver's exact law to 5 standard errors (2.8% on variances).

    Against the data distribution N(d, s²) the output mean is exact, but at 10-20 steps the variance carries the
    solver's discretisation bias (EXPECTED_VAR_RATIO; first order loses variance like the posterior sampler it
    equals, 2M overshoots and converges at second order as the previous test shows), pinned to 0.01."""
    sde = float64_irsde()
    model = table_model(sde)
    start = marginal(math.exp(-float(sde.elapsed[T])), float(sde.sigma_bars[T]))
    exp_mean, exp_var = chain_law(monkeypatch, mrs.mr_sde, sde, model, start, order=order, steps=steps)
    assert abs(exp_mean - D) < 1e-12
    assert abs(exp_var / S**2 - EXPECTED_VAR_RATIO[order, steps]) < 0.01, exp_var / S**2

    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(10 * order + steps), dtype=torch.float64)
    mu = torch.full(SHAPE, MU, dtype=torch.float64)
    x_T = mu + start[0] + math.sqrt(start[1]) * z
    out = mrs.mr_sde(sde, model, mu, steps=steps, order=order, x_T=x_T, generator=torch.Generator().manual_seed(3))
    y = out - MU
    mean, var = float(y.mean()), float(y.var())
    assert abs(var / exp_var - 1) < 5 * SE_VAR, f"Var {var:.6f} vs exact law {exp_var:.6f}"
    assert abs(mean - exp_mean) < 5 * math.sqrt(exp_var / N), f"mean {mean:.6f} vs exact law {exp_mean:.6f}"


# ---------------------------------------------------------------------------------------------- denoising variant
LAM_D, T_D, SIGMA_IN = 70 / 255, 100, 25  # the demo's DenoisingIRSDE (eps 0.04) and noise level: t* = 22


class ContinuousDenoising:
    """The denoising variant on continuous times: α = 1, σ(t) = λ sqrt(1 - e^{-2Ut}), e^{-U} = 0.04 as trained."""

    denoising = True
    max_sigma = LAM_D
    U = -math.log(0.04)

    def alpha(self, t: float) -> float:
        return 1.0

    def sigma(self, t: float) -> float:
        return LAM_D * math.sqrt(-math.expm1(-2 * self.U * t))

    def time_of(self, lam: float) -> float:
        """Inverse of λ = -log σ: 1 - e^{-2Ut} = e^{-2 lam} / λ²."""
        return -math.log1p(-math.exp(-2 * lam) / LAM_D**2) / (2 * self.U)

    def model_condition(self, x, mu):
        assert mu is None, "the denoising network never sees a level"
        return x

    def noisy_start(self, mu, generator=None):
        raise AssertionError("the denoising variant starts from the noisy input")


def denoise_eps(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[ε | x_t] for x0 ~ N(M, S²) and x_t = x0 + σ ε."""
    return sigma * (x - M) / (S**2 + sigma**2)


def continuous_denoise_model(sched: ContinuousDenoising):
    def model(x, cond, t):
        assert torch.equal(cond, x) and t.dtype == torch.float64 and len(t.unique()) == 1
        return denoise_eps(x, sched.sigma(float(t[0])))

    return model


def float64_denoising_sde(T: int = T_D) -> DenoisingIRSDE:
    sde = DenoisingIRSDE(LAM_D, T=T)
    ref = reference_tables(LAM_D, T, eps=0.04)
    sde.elapsed = torch.tensor(ref["u"], dtype=torch.float64)
    sde.sigma_bars = torch.tensor(ref["sigma_bars"], dtype=torch.float64)
    return sde


def denoise_table_model(sde: DenoisingIRSDE, calls: list | None = None):
    def model(x, cond, t):
        assert torch.equal(cond, x) and t.dtype == torch.long and len(t.unique()) == 1
        if calls is not None:
            calls.append(int(t[0]))
        return denoise_eps(x, float(sde.sigma_bars[int(t[0])]))

    return model


def denoise_lambda_grid(sched: ContinuousDenoising, steps: int, lam_end: float = 5.0, graded: bool = False):
    """Times uniform in λ = -log σ from the input's σ = 25/255 to lam_end; ``graded`` shrinks the first two
    intervals (the multistep warm-up) to h^{3/2}."""
    lam0 = -math.log(SIGMA_IN / 255)
    lams = np.linspace(lam0, lam_end, steps + 1)
    if graded:
        small = (lams[1] - lams[0]) ** 1.5
        lams = np.concatenate([[lam0, lam0 + small], np.linspace(lam0 + 2 * small, lam_end, steps - 1)])
    return [sched.time_of(lam) for lam in lams]


@pytest.mark.parametrize("name", sorted(mrs.MR_SAMPLERS))
def test_denoising_starts_at_t_star_with_at_most_t_star_evaluations(name):
    """From the noisy input at t*(sigma), like denoise_ode / denoise_sde: NFE = min(steps, t*), the grid between t*
    and 0, sigma in 0..255 or [0, 1] units, none at all when t* = 0; samplers.restore reaches it by name."""
    sde = float64_denoising_sde()
    t_star = sde.optimal_timestep(SIGMA_IN)
    assert t_star == 22 and sde.optimal_timestep(SIGMA_IN / 255) == t_star
    noisy = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for grid in mrs.GRIDS:
        for steps, nfe in [(None, t_star), (5, 5), (t_star, t_star), (1000, t_star)]:
            for sigma in (SIGMA_IN, SIGMA_IN / 255):
                calls = []
                out = samplers.restore(name, sde, denoise_table_model(sde, calls), noisy, sigma=sigma, steps=steps,
                                       grid=grid, order=2, generator=torch.Generator().manual_seed(1))
                expected_grid = mrs.mr_timesteps(sde, nfe, grid, start=t_star)
                assert calls == expected_grid[:-1] and calls[0] == t_star and expected_grid[-1] == 0
                assert out.shape == noisy.shape and torch.isfinite(out).all()
        assert mrs.mr_timesteps(sde, 5, grid, start=t_star)[0] == t_star
    assert mrs.mr_timesteps(sde, 5, "uniform", start=t_star) == samplers.timestep_grid(t_star, 5)
    calls = []
    out = samplers.restore(name, sde, denoise_table_model(sde, calls), noisy, sigma=0, steps=5)
    assert calls == [] and torch.equal(out, noisy) and out is not noisy


@pytest.mark.parametrize("name", sorted(mrs.MR_SAMPLERS))
def test_denoising_with_the_true_noise_returns_the_clean_image_in_any_number_of_steps(name):
    """α = 1 and x0_hat = x_t - σ̄_t ε̂: a network that returns the true noise (x_t - x0) / σ̄_t predicts x0 at every
    step, every update is exact for a constant prediction, so the output is x0 (denoise_ode's Euler steps are not)."""
    sde = float64_denoising_sde()
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    t_star = sde.optimal_timestep(SIGMA_IN)
    noisy = x0 + float(sde.sigma_bars[t_star]) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)

    def oracle(x, cond, t):
        return (x - x0) / float(sde.sigma_bars[int(t[0])])

    for steps, order in [(1, 1), (3, 2), (7, 1), (22, 2)]:
        out = mrs.MR_SAMPLERS[name](sde, oracle, noisy, sigma=SIGMA_IN, steps=steps, order=order,
                                    generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-12)
    assert (samplers.denoise_ode(sde, oracle, noisy, SIGMA_IN, steps=7) - x0).abs().max() > 1e-3


@pytest.mark.parametrize("order", [1, 2, 3])
def test_denoising_mr_ode_converges_to_the_exact_flow_at_its_order(order):
    """Max error against the exact PF-ODE map of the denoising process from σ = 25/255 to λ = 5 (σ = 0.0067).

    On a λ-uniform grid the 3M solver is only second order here: its first (order-1) warm-up step has an O(h²)
    local error that nothing damps (α ≡ 1; on IR-SDE the same error is multiplied by α_T = 0.005, which is why
    the IR-SDE test sees order 3 on uniform grids). Measured max errors at 32 / 64 / 128 / 256 steps:
      uniform: order 1: 3.0e-3 .. 3.8e-4 (slope 1.00); order 2: 2.3e-6 .. 7.2e-8 (1.68, near a sign change of its
      error, 1.95 over 128..512); order 3: 2.6e-4, 6.6e-5, 1.6e-5, 4.1e-6 (2.00);
      graded (the two warm-up intervals shrunk to h^{3/2}): order 1: 3.1e-3 .. 3.8e-4 (1.00); order 2: 2.8e-4,
      6.8e-5, 1.7e-5, 4.2e-6 (2.01); order 3: 3.4e-5, 4.1e-6, 5.1e-7, 6.3e-8 (3.02).
    The orders are checked on graded grids; the uniform-grid slope of order 3 is pinned near 2."""
    sched = ContinuousDenoising()
    model = continuous_denoise_model(sched)
    z = torch.linspace(-3, 3, 601, dtype=torch.float64).view(1, 1, 1, -1)

    def errors(steps_list, graded):
        out = []
        for k in steps_list:
            times = denoise_lambda_grid(sched, k, graded=graded)
            s0, s_end = sched.sigma(times[0]), sched.sigma(times[-1])
            noisy = M + math.sqrt(S**2 + s0**2) * z
            x = mrs.mr_ode(sched, model, noisy, order=order, times=times)
            out.append(float((x - M - math.sqrt(S**2 + s_end**2) * z).abs().max()))
        return out

    steps = [32, 64, 128, 256]
    graded = errors(steps, graded=True)
    fitted = slope(steps, graded)
    assert abs(fitted - order) < 0.2, f"order {order}: errors {graded}, slope {fitted:.2f}"
    assert graded[-1] < [1e-3, 5e-6, 1e-7][order - 1], graded
    if order == 3:
        uniform = errors(steps, graded=False)
        assert 1.8 < slope(steps, uniform) < 2.2, uniform


def test_denoising_mr_ode_order1_is_ddim_and_denoise_ode_its_euler_in_u():
    """mr_ode order 1 on the denoising variant is DDIM for VE: x_s = x_t - (σ̄_t - σ̄_s) ε̂. denoise_ode (official)
    is Euler in the reversion time u on the same ODE: x_s = x_t - λ² e^{-2u_t} (u_t - u_s) ε̂ / σ̄_t, where
    λ² e^{-2u} / σ̄ = dσ̄/du: the first-order Taylor expansion of σ̄_t - σ̄_s. So they agree to O(Δu²) per step, not
    exactly; both are first order (at t*, 2t*, 4t* ... steps of a finer T, each error halves). A constant noise
    prediction c makes DDIM exact (all orders give x - σ̄_{t*} c), Euler not."""
    sde = float64_denoising_sde()
    model = denoise_table_model(sde)
    gen = torch.Generator().manual_seed(0)
    t_star = sde.optimal_timestep(SIGMA_IN)
    noisy = M + math.sqrt(S**2 + float(sde.sigma_bars[t_star]) ** 2) * torch.randn(1, 1, 8, 8, generator=gen,
                                                                                      dtype=torch.float64)
    ours, theirs = {}, {}
    kw = {"sigma": SIGMA_IN, "steps": 5}
    mrs.mr_ode(sde, model, noisy, order=1, grid="uniform", callback=lambda i, s, x: ours.update({s: x}), **kw)
    samplers.denoise_ode(sde, model, noisy, callback=lambda i, s, x: theirs.update({s: x}), **kw)
    grid = samplers.timestep_grid(t_star, 5)
    assert sorted(ours, reverse=True) == sorted(theirs, reverse=True) == grid[1:]
    x_ddim, x_euler = noisy, noisy
    u, sb = sde.elapsed, sde.sigma_bars
    for t, s in zip(grid[:-1], grid[1:]):
        x_ddim = x_ddim - (sb[t] - sb[s]) * denoise_eps(x_ddim, float(sb[t]))
        x_euler = x_euler - LAM_D**2 * math.exp(-2 * u[t]) * (u[t] - u[s]) * denoise_eps(x_euler, float(sb[t])) / sb[t]
        torch.testing.assert_close(ours[s], x_ddim, rtol=0, atol=1e-12)
        torch.testing.assert_close(theirs[s], x_euler, rtol=0, atol=1e-12)
    assert (ours[0] - theirs[0]).abs().max() > 1e-3

    c = torch.full_like(noisy, 0.7)
    for order in (1, 2, 3):
        out = mrs.mr_ode(sde, lambda x, cond, t: c, noisy, order=order, **kw)
        torch.testing.assert_close(out, noisy - sb[t_star] * c, rtol=0, atol=1e-12)
    euler = sum(LAM_D**2 * math.exp(-2 * u[t]) * (u[t] - u[s]) / sb[t] for t, s in zip(grid[:-1], grid[1:]))
    torch.testing.assert_close(samplers.denoise_ode(sde, lambda x, cond, t: c, noisy, **kw), noisy - euler * c,
                               rtol=0, atol=1e-12)

    # Same ODE: on T = 1000 (t* = 230) both errors against the exact map halve as the steps double.
    fine = float64_denoising_sde(1000)
    t_fine = fine.optimal_timestep(SIGMA_IN)
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).view(1, 1, 1, -1)
    x = M + math.sqrt(S**2 + float(fine.sigma_bars[t_fine]) ** 2) * z
    fine_model = denoise_table_model(fine)
    steps = [t_fine // 4, t_fine // 2, t_fine]
    for sampler in (lambda k: mrs.mr_ode(fine, fine_model, x, sigma=SIGMA_IN, steps=k, order=1, grid="uniform"),
                    lambda k: samplers.denoise_ode(fine, fine_model, x, SIGMA_IN, steps=k)):
        errors = [float((sampler(k) - M - S * z).abs().max()) for k in steps]
        assert abs(slope(steps, errors) - 1) < 0.1 and errors[-1] < 1e-3, errors


def test_denoising_mr_sde_order1_is_the_posterior_step_of_its_forward_process():
    """SDE order 1 = the exact solution of the official denoising reverse SDE for a frozen x0_hat = the Gaussian
    posterior of x_s | x_t, x0 of the OU process reverting to x0 (IRSDE.reverse_optimum_step / _std with level
    x0_hat, what reverse_posterior's update does), state by state with the same noise, on the logsnr grid."""
    sde = float64_denoising_sde()
    model = denoise_table_model(sde)
    gen = torch.Generator().manual_seed(0)
    noisy = M + 0.15 * torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    states = {}
    mrs.mr_sde(sde, model, noisy, sigma=SIGMA_IN, steps=6, order=1, generator=torch.Generator().manual_seed(7),
               callback=lambda i, s, x: states.update({s: x}))
    grid = mrs.mr_timesteps(sde, 6, start=sde.optimal_timestep(SIGMA_IN))
    replay, x = torch.Generator().manual_seed(7), noisy
    for t, s in zip(grid[:-1], grid[1:]):
        x0_hat = sde.x0_from_noise(x, model(x, x, torch.full((2,), t)), None, t)
        x = sde.reverse_optimum_step(x, x0_hat, None, t, s)
        if s > 0:
            x = x + sde.reverse_optimum_std(t, s) * samplers.randn_like(x, replay)
        torch.testing.assert_close(states[s], x, rtol=0, atol=1e-12)


def reverse_denoising_sde(u_t: float, u_s: float, x_t: float, pred) -> tuple[float, float]:
    """(mean, variance) at u_s of the official denoising reverse SDE started at x_t (variance 0) at u_t, with the
    data prediction ``pred(u)`` in its score -(x - pred(u)) / σ(u)², integrated numerically in u (DOP853):
    x_s = x_t - (drift over the step) + (dispersion) z with drift coth(u) (x - D) du and noise variance 2 λ² du
    per unit of u (as read off DenoisingIRSDE in the test below), so

        dx/du = coth(u) (x - pred(u)),    dV/du = 2 coth(u) V - 2 λ²    (integrated from u_t down to u_s)."""
    from scipy.integrate import solve_ivp

    def rhs(u, state):
        x, v = state
        coth = 1 / math.tanh(u)
        return [coth * (x - pred(u)), 2 * coth * v - 2 * LAM_D**2]

    sol = solve_ivp(rhs, (u_t, u_s), [x_t, 0.0], method="DOP853", rtol=1e-13, atol=1e-15)
    assert sol.success, sol.message
    return float(sol.y[0, -1]), float(sol.y[1, -1])


def denoise_tau(u: float) -> float:
    """The clock of the linear part: d/du log sinh(u) = coth(u), so x / sinh(u) has no x-term and e^{-τ} ∝ sinh(u);
    the module's normalisation e^{-τ} = σ² / sqrt(λ² - σ²) = 2 λ sinh(u)."""
    return -math.log(2 * LAM_D * math.sinh(u))


def linear_in_tau(u: float) -> float:
    """A data prediction linear in the clock τ (``line`` of τ(u))."""
    return line(denoise_tau(u))


def line(tau: float) -> float:
    return 0.7 - 1.1 * (tau - 3.0)


def test_denoising_sde_step_is_exact_for_a_data_prediction_linear_in_its_clock():
    """``denoise_sde_step`` with D constant (order 1) or linear in τ (2M, fed D at τ_t and τ_t - H_0) must equal the
    exact solution of the official denoising reverse SDE's linear part for that data prediction, whatever H and H_0:
    this checks the step-ratio bookkeeping that τ-uniform grids cannot see (H = H_0 there). The exact solution is
    a numerical ODE integration in u of the SDE as DenoisingIRSDE defines it, independent of the module's τ algebra;
    ``denoise_sde_std`` is checked against the same integration's variance."""
    def f64(value: float) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.float64)

    sde = float64_denoising_sde()  # the drift and dispersion the reference ODE uses, read off the suite's SDE
    x, d = f64(0.37), 0.1
    for t in (3, 22, 60):
        u, du = float(sde.elapsed[t]), float(sde.elapsed[t] - sde.elapsed[t - 1])
        score = -(x - d) / float(sde.sigma_bars[t]) ** 2
        drift = x - sde.reverse_sde_step_mean(x, None, score, t, t - 1)
        assert float(drift) / du == pytest.approx((float(x) - d) / math.tanh(u), rel=1e-12)
        assert float(sde.dispersion(t, t - 1)) ** 2 / du == pytest.approx(2 * LAM_D**2, rel=1e-12)

    u_t, u_s = 0.35, 0.06
    sigma_t, sigma_s = (LAM_D * math.sqrt(-math.expm1(-2 * u)) for u in (u_t, u_s))
    tau_t, tau_s = denoise_tau(u_t), denoise_tau(u_s)
    assert mrs.denoise_clock(sigma_t, LAM_D) == pytest.approx(tau_t, rel=1e-12)
    assert mrs.denoise_clock(sigma_s, LAM_D) == pytest.approx(tau_s, rel=1e-12)
    H = tau_s - tau_t  # 1.78
    std = mrs.denoise_sde_std(sigma_t, sigma_s, LAM_D)
    zero, one = torch.zeros_like(x), torch.ones_like(x)

    d0 = f64(linear_in_tau(u_t))
    mean, var = reverse_denoising_sde(u_t, u_s, float(x), lambda u: float(d0))
    assert std**2 == pytest.approx(var, rel=1e-9)
    torch.testing.assert_close(mrs.denoise_sde_step(x, d0, None, H, None, std, zero), f64(mean),
                               rtol=1e-9, atol=0)
    torch.testing.assert_close(mrs.denoise_sde_step(x, d0, None, H, None, std, one) - mean,
                               f64(std), rtol=1e-9, atol=0)

    mean, _ = reverse_denoising_sde(u_t, u_s, float(x), linear_in_tau)
    for H0 in (0.4, H, 2.6):  # shorter than H, equal (the τ-uniform case), longer
        d1 = f64(line(tau_t - H0))  # the earlier prediction, H0 earlier on the clock
        out = mrs.denoise_sde_step(x, d0, d1, H, H0, std, zero)
        torch.testing.assert_close(out, f64(mean), rtol=1e-9, atol=0, msg=f"H0={H0}")


def test_denoising_mr_sde_order2_chain_keeps_the_clock_history(monkeypatch):
    """mr_sde(order=2) on two unequal steps (H_0 = 0.31, H = 1.76 on τ), noise switched off, a model whose data
    prediction is exactly linear in τ: the first-order warm-up step is the exact solution with D frozen at its start,
    the second step the exact solution for the linear D (it sees D at both evaluated times and H_0 = τ_1 - τ_0)."""
    sched = ContinuousDenoising()
    us = [0.6, 0.45, 0.08]
    times = [u / sched.U for u in us]

    def model(x, cond, t):
        t = float(t[0])
        return (x - linear_in_tau(sched.U * t)) / sched.sigma(t)  # x0_hat = x - σ ε̂ = linear_in_tau

    states = {}
    monkeypatch.setattr(mrs, "randn_like", lambda x, generator=None: torch.zeros_like(x))
    x0 = torch.full((1, 1, 1, 2), 0.37, dtype=torch.float64)
    out = mrs.mr_sde(sched, model, x0, times=times, order=2, callback=lambda i, s, x: states.update({i: x}))
    x1, _ = reverse_denoising_sde(us[0], us[1], 0.37, lambda u: linear_in_tau(us[0]))
    x2, _ = reverse_denoising_sde(us[1], us[2], x1, linear_in_tau)
    torch.testing.assert_close(states[0], torch.full_like(x0, x1), rtol=1e-9, atol=0)
    torch.testing.assert_close(out, torch.full_like(x0, x2), rtol=1e-9, atol=0)


@pytest.mark.parametrize("order", [1, 2])
def test_denoising_mr_sde_law_converges_to_the_data_distribution_at_its_weak_order(order, monkeypatch):
    """Exact output law (``chain_law``) from N(M, S² + σ_in²) on a λ-uniform grid to λ = 5, against N(M, S² + σ_e²).
    Measured |Var/V_e - 1| at 10 / 20 / 40 / 80 / 160 / 320 steps:
      order 1: 0.17, 0.092, 0.048, 0.025, 0.013, 0.0063 (slope 0.99 over 80..320);
      order 2: 0.014, 3.9e-3, 1.0e-3, 2.5e-4, 6.3e-5, 1.6e-5 (slope 2.00).
    The mean is exact at every step count."""
    sched = ContinuousDenoising()
    model = continuous_denoise_model(sched)
    steps, errors = [80, 160, 320], []
    for k in steps:
        times = denoise_lambda_grid(sched, k)
        start = (M, S**2 + sched.sigma(times[0]) ** 2)
        mean, var = chain_law(monkeypatch, mrs.mr_sde, sched, model, start, denoising=True, order=order,
                              times=times)
        assert abs(mean - M) < 1e-12
        errors.append(abs(var / (S**2 + sched.sigma(times[-1]) ** 2) - 1))
    fitted = slope(steps, errors)
    assert abs(fitted - order) < 0.2, f"order {order}: |Var ratio - 1| {errors}, slope {fitted:.2f}"
    assert errors[-1] < [0.01, 3e-5][order - 1], errors


def test_denoising_on_the_stored_float32_tables():
    sde = DenoisingIRSDE(70, T=T_D)  # float32 tables, as trained
    noisy = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def model(x, cond, t):
        return denoise_eps(x, float(sde.sigma_bars[int(t[0])]))

    for name, sampler in mrs.MR_SAMPLERS.items():
        runs = [sampler(sde, model, noisy, sigma=SIGMA_IN, steps=8, generator=torch.Generator().manual_seed(4))
                for _ in range(2)]
        assert runs[0].dtype == torch.float32 and torch.isfinite(runs[0]).all(), name
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
