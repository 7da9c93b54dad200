"""IR-SDE samplers: exact-score recovery, step skipping, reproducibility and network-evaluation counts."""

from __future__ import annotations

import math

import pytest
import torch

from irsde import samplers
from irsde.sde import IRSDE, DenoisingIRSDE
from tests.unit.test_irsde_sde import ref_marginal, reference_tables


def exact_noise_model(sde: IRSDE, x0, mu):
    """Oracle for point-mass data at x0: x_t | x0 is Gaussian, so its noise is known exactly."""
    ref = reference_tables(sde.max_sigma, sde.T, sde.schedule, sde.eps)
    level = x0 if isinstance(sde, DenoisingIRSDE) else mu

    def model(x_t, cond, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        assert len(t.unique()) == 1
        mean, var = ref_marginal(ref, x0.double(), level.double(), int(t[0]))
        return ((x_t.double() - mean) / math.sqrt(var)).float()

    return model


class CountingModel:
    """Wraps a model and records the timesteps it was called with."""

    def __init__(self, model=None):
        self.model = model or (lambda x, c, t: torch.zeros_like(x))
        self.calls: list[int] = []

    def __call__(self, x, cond, t):
        self.calls.append(int(t[0]))
        return self.model(x, cond, t)


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 6, 6, generator=gen)
    mu = 1 - x0  # far from x0, so recovering x0 is not an accident
    return x0, mu


def test_timestep_grid():
    assert samplers.timestep_grid(100, 10) == list(range(100, -1, -10))
    assert samplers.timestep_grid(5) == [5, 4, 3, 2, 1, 0]
    assert samplers.timestep_grid(10, 3) == [10, 7, 3, 0]
    assert samplers.timestep_grid(7, 1) == [7, 0]
    for bad in (0, 11):
        with pytest.raises(ValueError):
            samplers.timestep_grid(10, bad)


@pytest.mark.parametrize("steps", [None, 10, 3])
@pytest.mark.parametrize("stochastic", [False, True])
def test_posterior_sampler_with_exact_noise_returns_x0(problem, steps, stochastic):
    # With the exact noise, x0_hat = x0 at every step and the last posterior (s = 0) is the point mass at x0.
    x0, mu = problem
    sde = IRSDE(10, T=100)
    out = samplers.reverse_posterior(
        sde,
        exact_noise_model(sde, x0, mu),
        mu,
        steps=steps,
        generator=torch.Generator().manual_seed(1),
        stochastic=stochastic,
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_reverse_ode_with_exact_score_recovers_x0(problem):
    x0, mu = problem
    sde = IRSDE(10, T=100)
    model = exact_noise_model(sde, x0, mu)
    x_T = sde.noisy_start(mu, torch.Generator().manual_seed(2))
    start_error = (x_T - x0).abs().mean().item()
    errors = {}
    for steps in (100, 10):
        out = samplers.reverse_ode(sde, model, mu, steps=steps, x_T=x_T)
        errors[steps] = (out - x0).abs().max().item()
    # Euler on the mean reversion has a local error ~ |x0 - mu| e^{-u} du^2 / 2: with 100 steps du <= 0.11,
    # so a few 1e-3 in total; with 10 steps du reaches ~0.9 and the error grows to a few 1e-2, still far
    # below the starting distance (~0.33 on average here).
    assert start_error > 0.2
    assert errors[100] < 0.01
    assert errors[10] < 0.1
    assert errors[100] < errors[10]


def test_reverse_sde_with_exact_score_recovers_x0(problem):
    x0, mu = problem
    sde = IRSDE(10, T=100)
    out = samplers.reverse_sde(
        sde, exact_noise_model(sde, x0, mu), mu, generator=torch.Generator().manual_seed(3)
    )
    # Residual noise of the last Euler-Maruyama steps (~1e-3, like sigma_bar_1) plus the Euler drift error.
    assert (out - x0).abs().max().item() < 0.02


@pytest.mark.parametrize("name", ["sde", "posterior"])
def test_fixed_generator_gives_identical_samples(problem, name):
    _, mu = problem
    sde = IRSDE(10, T=20)
    model = lambda x, c, t: 0.1 * x  # noqa: E731
    first = samplers.restore(name, sde, model, mu, generator=torch.Generator().manual_seed(5))
    again = samplers.restore(name, sde, model, mu, generator=torch.Generator().manual_seed(5))
    other = samplers.restore(name, sde, model, mu, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_denoise_sde_reproducible():
    sde = DenoisingIRSDE(0.5, T=50)
    noisy = torch.rand(1, 3, 6, 6)
    model = lambda x, c, t: 0.1 * x  # noqa: E731
    runs = [
        samplers.denoise_sde(sde, model, noisy, 0.2, generator=torch.Generator().manual_seed(k))
        for k in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


@pytest.mark.parametrize("name", ["sde", "ode", "posterior"])
@pytest.mark.parametrize("steps", [None, 7, 1])
def test_model_called_once_per_step(problem, name, steps):
    _, mu = problem
    sde = IRSDE(10, T=20)
    model = CountingModel()
    visited = []
    samplers.restore(
        name,
        sde,
        model,
        mu,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
        callback=lambda i, s, x: visited.append((i, s)),
    )
    grid = samplers.timestep_grid(20, steps)
    assert model.calls == grid[:-1]
    assert visited == list(enumerate(grid[1:]))


@pytest.mark.parametrize("name", ["denoise_ode", "denoise_sde"])
def test_denoising_samplers_count_and_start_at_optimal_timestep(name):
    sde = DenoisingIRSDE(0.5, T=100)
    t_star = sde.optimal_timestep(0.2)
    noisy = torch.rand(1, 3, 4, 4)
    for steps, nfe in [(None, t_star), (5, 5), (1000, t_star)]:
        model = CountingModel()
        samplers.restore(
            name, sde, model, noisy, sigma=0.2, steps=steps, generator=torch.Generator().manual_seed(0)
        )
        assert len(model.calls) == nfe and model.calls[0] == t_star
    model = CountingModel()
    assert torch.equal(samplers.restore(name, sde, model, noisy, sigma=0), noisy) and model.calls == []
    with pytest.raises(TypeError):
        samplers.restore(name, IRSDE(0.5), model, noisy, sigma=0.2)


@pytest.mark.parametrize("name", ["denoise_ode", "denoise_sde"])
def test_denoising_with_exact_noise_recovers_clean_image(name):
    sde = DenoisingIRSDE(0.5, T=100)
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(2, 3, 6, 6, generator=gen)
    noisy = x0 + 0.2 * torch.randn(x0.shape, generator=gen)
    model = exact_noise_model(sde, x0, x0)
    for steps, tolerance in [(None, 0.05), (10, 0.1)]:
        out = samplers.restore(name, sde, model, noisy, sigma=0.2, steps=steps, generator=gen)
        # The noisy input is ~0.2 * |z| away (max ~0.8); the remaining error is Euler discretisation.
        assert (out - x0).abs().max().item() < tolerance


def test_restore_dispatch_and_unknown_name(problem):
    _, mu = problem
    sde = IRSDE(10, T=10)
    model = lambda x, c, t: 0.1 * x  # noqa: E731
    x_T = sde.noisy_start(mu, torch.Generator().manual_seed(0))
    assert torch.equal(
        samplers.restore("ode", sde, model, mu, x_T=x_T), samplers.reverse_ode(sde, model, mu, x_T=x_T)
    )
    assert set(samplers.SAMPLERS) == {"sde", "ode", "posterior", "denoise_ode", "denoise_sde", "mr_ode", "mr_sde"}
    with pytest.raises(ValueError, match="posterior"):
        samplers.restore("ddim", sde, model, mu)


def test_skipped_ode_step_integrates_the_whole_interval(problem):
    # One ODE step from T to 0 must apply the drift summed over all T official steps (x frozen at x_T).
    x0, mu = problem
    sde = IRSDE(0.3, T=12)
    ref = reference_tables(0.3, 12)
    x_T = sde.noisy_start(mu, torch.Generator().manual_seed(0))
    noise = torch.full_like(x_T, 0.5)
    out = samplers.reverse_ode(sde, lambda x, c, t: noise, mu, steps=1, x_T=x_T)
    score = -0.5 / ref["sigma_bars"][12]
    drift = sum(
        (ref["thetas"][i] * (mu - x_T) - 0.5 * ref["sigmas"][i] ** 2 * score) * ref["dt"]
        for i in range(1, 13)
    )
    torch.testing.assert_close(out, x_T - drift, rtol=1e-5, atol=1e-6)


def test_skipped_sde_step_draws_noise_over_the_whole_interval():
    # One SDE step from T to 0 with a zero-noise model: x_0 = x_T - u_T (mu - x_T) + sqrt(2 lam^2 u_T) z.
    lam, T = 0.3, 12
    sde = IRSDE(lam, T=T)
    ref = reference_tables(lam, T)
    mu = torch.full((1, 1, 64, 64), 0.5)
    x_T = sde.noisy_start(mu, torch.Generator().manual_seed(0))
    zero = lambda x, c, t: torch.zeros_like(x)  # noqa: E731
    out = samplers.reverse_sde(sde, zero, mu, steps=1, x_T=x_T, generator=torch.Generator().manual_seed(1))
    residual = out - (x_T - ref["u"][T] * (mu - x_T))
    expected_std = math.sqrt(2 * lam**2 * ref["u"][T])
    # 4096 samples: mean within 5 std/sqrt(N), std within 5 std/sqrt(2N) (~5.5%).
    assert abs(residual.mean().item()) < 5 * expected_std / 64
    assert abs(residual.std().item() / expected_std - 1) < 0.06


def test_one_step_denoising_ode_matches_hand_formula():
    # From t* to 0 in one step, score = -noise / sigma_bar: x_0 = x - lam^2 u e^{-2u} noise / sigma_bar.
    lam, T = 0.5, 100
    sde = DenoisingIRSDE(lam, T=T)
    ref = reference_tables(lam, T, eps=0.04)
    t_star = sde.optimal_timestep(0.2)
    noisy = torch.rand(1, 3, 4, 4)
    out = samplers.denoise_ode(sde, lambda x, c, t: torch.full_like(x, 0.7), noisy, 0.2, steps=1)
    u = ref["u"][t_star]
    expected = noisy - lam**2 * u * math.exp(-2 * u) * 0.7 / ref["sigma_bars"][t_star]
    torch.testing.assert_close(out, expected.float(), rtol=1e-5, atol=1e-6)
