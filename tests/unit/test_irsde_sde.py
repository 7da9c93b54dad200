"""IR-SDE process math and training losses, checked against independent float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irsde.losses import LOSSES, matching_loss, noise_matching_loss
from irsde.sde import IRSDE, DenoisingIRSDE


def reference_tables(max_sigma: float, T: int, schedule: str = "cosine", eps: float = 0.005) -> dict:
    """The official schedule written out from its formulas in numpy float64 (max_sigma in [0, 1] units)."""
    if schedule == "cosine":
        n = T + 2
        ac = np.cos((np.arange(n + 1) / n + 0.008) / 1.008 * np.pi / 2) ** 2
        thetas = 1 - (ac / ac[0])[1:-1]
    elif schedule == "linear":
        thetas = np.linspace(0.1 / (T + 1), 20 / (T + 1), T + 1)
    else:
        thetas = np.ones(T + 1)
    cumsum = np.cumsum(thetas) - thetas[0]
    dt = -math.log(eps) / cumsum[-1]
    return {
        "lam": max_sigma,
        "thetas": thetas,
        "sigmas": np.sqrt(2 * max_sigma**2 * thetas),
        "cumsum": cumsum,
        "dt": dt,
        "u": cumsum * dt,
        "sigma_bars": max_sigma * np.sqrt(1 - np.exp(-2 * cumsum * dt)),
    }


def ref_marginal(ref: dict, x0, mu, t: int):
    """Mean and variance of x_t | x0 from the reference tables."""
    decay = math.exp(-ref["u"][t])
    return mu + (x0 - mu) * decay, ref["sigma_bars"][t] ** 2


def ref_posterior(ref: dict, x_t, x0, mu, t: int, s: int):
    """Bayes: p(x_s | x_t, x0) ∝ N(x_s; marginal at s) * N(x_t; OU transition s -> t from x_s)."""
    m_s, v_s = ref_marginal(ref, x0, mu, s)
    a = math.exp(-(ref["u"][t] - ref["u"][s]))
    w = ref["lam"] ** 2 * (1 - a**2)
    precision = 1 / v_s + a**2 / w
    # The transition factor as a function of x_s is Gaussian with mean mu + (x_t - mu) / a, precision a^2 / w.
    mean = (m_s / v_s + (a**2 / w) * (mu + (x_t - mu) / a)) / precision
    return mean, math.sqrt(1 / precision)


def test_max_sigma_units_and_validation():
    assert IRSDE(10).max_sigma == pytest.approx(10 / 255)
    assert IRSDE(10 / 255).max_sigma == pytest.approx(10 / 255)
    with pytest.raises(ValueError, match="cosine"):
        IRSDE(10, schedule="quadratic")
    with pytest.raises(ValueError):
        IRSDE(10, eps=0)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_tables_match_formulas(schedule):
    sde = IRSDE(10, T=100, schedule=schedule)
    ref = reference_tables(10 / 255, 100, schedule)
    assert sde.thetas.shape == (101,)
    assert sde.dt == pytest.approx(ref["dt"], rel=1e-12)
    for name, key in [
        ("thetas", "thetas"),
        ("sigmas", "sigmas"),
        ("thetas_cumsum", "cumsum"),
        ("sigma_bars", "sigma_bars"),
    ]:
        np.testing.assert_allclose(getattr(sde, name).numpy(), ref[key], rtol=1e-6, atol=1e-9, err_msg=name)
    assert sde.thetas_cumsum[0] == 0 and sde.sigma_bars[0] == 0


def test_schedule_values_printed_by_the_official_code():
    # Printed by Algolzw/image-restoration-sde@2598d73 sde_utils.py (float32 maths), max_sigma=10, T=100.
    official = {
        "cosine": (
            0.10409380495548248,
            [0.0016945600509643555, 0.506156325340271, 0.9997665882110596],
            [0.0007365247583948076, 0.03657391294836998, 0.039215195924043655],
        ),
        "linear": (
            0.5272476673126221,
            [0.00296039623208344, 0.09950494021177292, 0.19801980257034302],
            [0.0021893614903092384, 0.03787669166922569, 0.039215195924043655],
        ),
        "constant": (
            0.05298317223787308,
            [1.0, 1.0, 1.0],
            [0.012434842064976692, 0.03911752253770828, 0.039215195924043655],
        ),
    }
    for schedule, (dt, thetas, sigma_bars) in official.items():
        sde = IRSDE(10, T=100, schedule=schedule)
        assert sde.dt == pytest.approx(dt, rel=1e-6)
        np.testing.assert_allclose(sde.thetas[[1, 50, 100]].numpy(), thetas, rtol=1e-4)
        np.testing.assert_allclose(sde.sigma_bars[[1, 50, 100]].numpy(), sigma_bars, rtol=1e-5)


def test_closed_form_marginal_matches_euler_maruyama_simulation():
    lam, T, substeps, n_paths = 0.5, 20, 100, 20_000
    sde = IRSDE(lam, T=T)
    ref = reference_tables(lam, T)
    x0, mu = 1.0, 0.2
    gen = torch.Generator().manual_seed(0)
    x = torch.full((n_paths,), x0, dtype=torch.float64)
    h = ref["dt"] / substeps
    checks = {3: None, 10: None, 20: None}
    for t in range(1, T + 1):
        theta = ref["thetas"][t]
        for _ in range(substeps):
            z = torch.randn(n_paths, generator=gen, dtype=torch.float64)
            x = x + theta * (mu - x) * h + math.sqrt(2 * lam**2 * theta * h) * z
        if t in checks:
            checks[t] = (x.mean().item(), x.std().item())
    x0_img = torch.full((1, 1, 2, 2), x0)
    mu_img = torch.full((1, 1, 2, 2), mu)
    for t, (sim_mean, sim_std) in checks.items():
        mean = sde.mu_bar(x0_img, mu_img, t)
        std = sde.sigma_bar(t).item()
        # Monte Carlo: 5 standard errors (std/sqrt(N) for the mean, std/sqrt(2N) for the std), plus 1% for the
        # Euler-Maruyama bias of the sub-stepped simulation (relative size ~ u * theta * h / 2 < 0.7%).
        assert torch.allclose(
            mean, torch.tensor(sim_mean), atol=5 * std / math.sqrt(n_paths) + 0.01 * abs(x0 - mu)
        )
        assert abs(std - sim_std) < 5 * std / math.sqrt(2 * n_paths) + 0.01 * std


def test_batched_timesteps_broadcast_per_sample():
    sde = IRSDE(0.3, T=50)
    ref = reference_tables(0.3, 50)
    x0, mu = torch.rand(3, 2, 4, 4), torch.rand(3, 2, 4, 4)
    t = torch.tensor([1, 17, 50])
    mean = sde.mu_bar(x0, mu, t)
    for b, tb in enumerate(t.tolist()):
        expected, _ = ref_marginal(ref, x0[b].double(), mu[b].double(), tb)
        torch.testing.assert_close(mean[b].double(), expected, rtol=1e-5, atol=1e-6)
    assert sde.sigma_bar(t).shape == (3, 1, 1, 1)


@pytest.mark.parametrize("t,s", [(7, None), (7, 6), (7, 3), (50, 20), (1, None)])
def test_reverse_optimum_matches_bayes_posterior(t, s):
    sde = IRSDE(0.4, T=50)
    ref = reference_tables(0.4, 50)
    gen = torch.Generator().manual_seed(1)
    x0, mu, x_t = (torch.rand(1, 1, 3, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    s_ref = t - 1 if s is None else s
    mean = sde.reverse_optimum_step(x_t, x0, mu, t, s)
    std = sde.reverse_optimum_std(t, s)
    if s_ref == 0:  # x_0 | x0 is a point mass: the posterior collapses onto x0
        torch.testing.assert_close(mean, x0, rtol=0, atol=1e-6)
        assert std.item() == 0
        return
    ref_mean, ref_std = ref_posterior(ref, x_t, x0, mu, t, s_ref)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-6)
    assert std.item() == pytest.approx(ref_std, rel=1e-4)


def test_reverse_optimum_with_batched_timesteps():
    sde = IRSDE(0.4, T=50)
    ref = reference_tables(0.4, 50)
    x0, mu, x_t = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2)
    t = torch.tensor([2, 25, 50])
    mean = sde.reverse_optimum_step(x_t, x0, mu, t)
    std = sde.reverse_optimum_std(t)
    for b, tb in enumerate(t.tolist()):
        ref_mean, ref_std = ref_posterior(ref, x_t[b].double(), x0[b].double(), mu[b].double(), tb, tb - 1)
        torch.testing.assert_close(mean[b].double(), ref_mean, rtol=1e-5, atol=1e-6)
        assert std[b].item() == pytest.approx(ref_std, rel=1e-4)


def test_reverse_drifts_match_official_step_and_sum_over_skipped_steps():
    sde = IRSDE(0.3, T=40)
    ref = reference_tables(0.3, 40)
    x, mu, score = torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    dt, th, sg = ref["dt"], ref["thetas"], ref["sigmas"]
    # One official step at t = 12.
    expected_sde = (th[12] * (mu - x) - sg[12] ** 2 * score) * dt
    expected_ode = (th[12] * (mu - x) - 0.5 * sg[12] ** 2 * score) * dt
    torch.testing.assert_close(
        sde.sde_reverse_drift(x, mu, score, 12), expected_sde.float(), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        sde.ode_reverse_drift(x, mu, score, 12), expected_ode.float(), rtol=1e-5, atol=1e-7
    )
    assert sde.dispersion(12).item() == pytest.approx(sg[12] * math.sqrt(dt), rel=1e-6)
    # Skipping from t = 12 to s = 5: the official per-step coefficients summed over i = 6..12 with x frozen.
    idx = range(6, 13)
    expected_sde = sum((th[i] * (mu - x) - sg[i] ** 2 * score) * dt for i in idx)
    torch.testing.assert_close(
        sde.sde_reverse_drift(x, mu, score, 12, 5), expected_sde.float(), rtol=1e-5, atol=1e-7
    )
    assert sde.dispersion(12, 5).item() == pytest.approx(
        math.sqrt(sum(sg[i] ** 2 * dt for i in idx)), rel=1e-5
    )
    torch.testing.assert_close(
        sde.reverse_sde_step_mean(x, mu, score, 12), x - sde.sde_reverse_drift(x, mu, score, 12)
    )
    # Forward drift increment of the step 11 -> 12.
    torch.testing.assert_close(sde.drift(x, mu, 12), (th[12] * (mu - x) * dt).float(), rtol=1e-5, atol=1e-7)


def test_noise_score_and_x0_conversions():
    sde = IRSDE(0.2, T=30)
    ref = reference_tables(0.2, 30)
    x0, mu, x_t = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    t = 9
    mean, var = ref_marginal(ref, x0.double(), mu.double(), t)
    noise = sde.noise_from_x0(x_t, x0, mu, t)
    torch.testing.assert_close(noise.double(), (x_t - mean) / math.sqrt(var), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        sde.score_from_noise(noise, t).double(), -(x_t - mean) / var, rtol=1e-4, atol=1e-3
    )
    torch.testing.assert_close(sde.x0_from_noise(x_t, noise, mu, t), x0, rtol=0, atol=1e-5)


def test_sample_training_state_distribution_and_reproducibility():
    sde = IRSDE(0.1, T=20)
    ref = reference_tables(0.1, 20)
    x0, mu = torch.rand(256, 1, 2, 2), torch.rand(256, 1, 2, 2)
    t, x_t, noise = sde.sample_training_state(x0, mu, torch.Generator().manual_seed(3), return_noise=True)
    t2, x_t2 = sde.sample_training_state(x0, mu, torch.Generator().manual_seed(3))
    assert t.dtype == torch.long and t.shape == (256,)
    assert torch.equal(t, t2) and torch.equal(x_t, x_t2)
    assert t.min() >= 1 and t.max() <= 20 and len(t.unique()) > 15
    for b in (0, 100, 255):
        mean, var = ref_marginal(ref, x0[b].double(), mu[b].double(), int(t[b]))
        torch.testing.assert_close(
            x_t[b].double(), mean + math.sqrt(var) * noise[b].double(), rtol=1e-5, atol=1e-6
        )
    fixed_t, _ = sde.sample_training_state(x0[:2], mu[:2], t=torch.tensor([4, 9]))
    assert fixed_t.tolist() == [4, 9]


def test_noisy_start_uses_max_sigma():
    sde = IRSDE(0.25, T=10)
    mu = torch.zeros(1, 1, 64, 64)
    x = sde.noisy_start(mu, torch.Generator().manual_seed(0))
    # 4096 samples: the std estimate is within ~5 * 0.25 / sqrt(2 * 4096) of 0.25.
    assert abs(x.std().item() - 0.25) < 0.015
    assert torch.equal(x, sde.noisy_start(mu, torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------- denoising variant (section 4.3)


def test_optimal_timestep_matches_official_outputs():
    # Printed by the official DenoisingSDE(max_sigma=70).get_optimal_timestep for sigma = 5, 15, 25, 50, 70.
    assert [DenoisingIRSDE(70, T=100).optimal_timestep(s) for s in (5, 15, 25, 50, 70)] == [
        6,
        15,
        22,
        41,
        100,
    ]
    assert [DenoisingIRSDE(70, T=1000).optimal_timestep(s) for s in (5, 15, 25, 50)] == [71, 158, 230, 414]
    sde = DenoisingIRSDE(0.5, T=100)
    t_star = sde.optimal_timestep(0.2)
    assert abs(sde.sigma_bar(t_star).item() - 0.2) < abs(sde.sigma_bar(t_star + 2).item() - 0.2)
    assert sde.optimal_timestep(0) == 0
    with pytest.raises(ValueError):
        sde.optimal_timestep(0.6)


def test_denoising_drifts_equal_irsde_drifts_with_mu_set_to_x0_under_the_true_score():
    # With mu = x0 the drift term theta (x0 - x) equals theta * sigma_bar^2 * score for the exact score, which
    # is how the denoising SDE eliminates the unknown x0; the two formulations must then agree.
    lam, T, t = 0.4, 60, 23
    base, den = IRSDE(lam, T=T, eps=0.04), DenoisingIRSDE(lam, T=T)
    ref = reference_tables(lam, T, eps=0.04)
    x0, x = torch.rand(2, 3, 4, 4, dtype=torch.float64), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    true_score = -(x - x0) / ref["sigma_bars"][t] ** 2
    for s in (None, 11):
        torch.testing.assert_close(
            den.sde_reverse_drift(x, None, true_score, t, s),
            base.sde_reverse_drift(x, x0, true_score, t, s),
            rtol=1e-5,
            atol=1e-7,
        )
        torch.testing.assert_close(
            den.ode_reverse_drift(x, None, true_score, t, s),
            base.ode_reverse_drift(x, x0, true_score, t, s),
            rtol=1e-5,
            atol=1e-7,
        )
    assert torch.equal(den.mu_bar(x0, None, t), x0)
    ref_mean, _ = ref_posterior(ref, x, x0, x0, t, t - 1)
    torch.testing.assert_close(den.reverse_optimum_step(x, x0, None, t), ref_mean, rtol=1e-5, atol=1e-6)
    noise = torch.randn_like(x)
    torch.testing.assert_close(den.x0_from_noise(x0 + ref["sigma_bars"][t] * noise, noise, None, t), x0)


# ---------------------------------------------------------------- losses


def _oracle(sde: IRSDE, x0, mu):
    """The model that returns the true noise of x_t (knows x0), computed with the reference tables."""
    ref = reference_tables(sde.max_sigma, sde.T, sde.schedule, sde.eps)

    def model(x_t, cond, t):
        rows = []
        for b, tb in enumerate(t.tolist()):
            mean, var = ref_marginal(ref, x0[b].double(), mu[b].double(), tb)
            rows.append(((x_t[b].double() - mean) / math.sqrt(var)).float())
        return torch.stack(rows)

    return model


def test_matching_loss_is_near_zero_for_the_oracle():
    sde = IRSDE(10, T=100)
    gen = torch.Generator().manual_seed(0)
    x0, mu = torch.rand(8, 3, 8, 8, generator=gen), torch.rand(8, 3, 8, 8, generator=gen)
    oracle = _oracle(sde, x0, mu)
    zero = lambda x, c, t: torch.zeros_like(x)  # noqa: E731
    small_t = torch.full((8,), 2)
    assert matching_loss(sde, oracle, x0, mu, torch.Generator().manual_seed(1), t=small_t) < 1e-6
    # Over random t the oracle's loss is the Euler discretisation gap (O(du^2)), far below a wrong model's.
    oracle_loss = matching_loss(sde, oracle, x0, mu, torch.Generator().manual_seed(1))
    zero_loss = matching_loss(sde, zero, x0, mu, torch.Generator().manual_seed(1))
    assert zero_loss > 1e-4
    assert oracle_loss < 0.05 * zero_loss


def test_matching_loss_value_by_hand():
    sde = IRSDE(0.3, T=40)
    ref = reference_tables(0.3, 40)
    x0, mu = torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    seen = {}

    def constant_model(x_t, cond, t):
        seen.update(x_t=x_t.clone(), cond=cond, t=t.clone())
        return torch.full_like(x_t, 0.3)

    t = torch.tensor([3, 30])
    loss = matching_loss(sde, constant_model, x0, mu, torch.Generator().manual_seed(2), t=t)
    assert seen["t"].tolist() == [3, 30] and seen["cond"] is mu
    total = 0.0
    for b, tb in enumerate([3, 30]):
        x = seen["x_t"][b].double()
        score = -0.3 / ref["sigma_bars"][tb]
        step_mean = x - (ref["thetas"][tb] * (mu[b] - x) - ref["sigmas"][tb] ** 2 * score) * ref["dt"]
        optimum, _ = ref_posterior(ref, x, x0[b].double(), mu[b].double(), tb, tb - 1)
        total += (step_mean - optimum).abs().mean().item() / 2
    assert loss.item() == pytest.approx(total, rel=1e-4)
    per_sample = matching_loss(
        sde, constant_model, x0, mu, torch.Generator().manual_seed(2), t=t, reduction="none"
    )
    assert per_sample.shape == (2,) and per_sample.mean().item() == pytest.approx(loss.item(), rel=1e-6)


def test_noise_matching_loss_oracle_and_by_hand():
    sde = IRSDE(0.2, T=30)
    ref = reference_tables(0.2, 30)
    x0, mu = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4)
    assert noise_matching_loss(sde, _oracle(sde, x0, mu), x0, mu, torch.Generator().manual_seed(0)) < 1e-8
    seen = {}

    def zero_model(x_t, cond, t):
        seen.update(x_t=x_t.clone(), t=t.clone())
        return torch.zeros_like(x_t)

    loss = noise_matching_loss(sde, zero_model, x0, mu, torch.Generator().manual_seed(0), loss_type="l1")
    expected = 0.0
    for b, tb in enumerate(seen["t"].tolist()):
        mean, var = ref_marginal(ref, x0[b].double(), mu[b].double(), tb)
        expected += ((seen["x_t"][b].double() - mean) / math.sqrt(var)).abs().mean().item() / 4
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError):
        noise_matching_loss(sde, zero_model, x0, mu, loss_type="huber")


def test_losses_registry_gradients_and_denoising_condition():
    assert set(LOSSES) == {"matching", "noise"}
    net = torch.nn.Conv2d(6, 3, 3, padding=1)
    model = lambda x, c, t: net(torch.cat([x, c], dim=1))  # noqa: E731
    x0, mu = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    for name, loss_fn in LOSSES.items():
        net.zero_grad()
        loss = loss_fn(IRSDE(10, T=20), model, x0, mu, torch.Generator().manual_seed(0))
        assert loss.dim() == 0 and loss.item() > 0, name
        loss.backward()
        assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0, name
    # Denoising: the clean image is the mean level, so it must not reach the network's condition slot.
    seen = {}

    def recording(x_t, cond, t):
        seen.update(x_t=x_t, cond=cond)
        return torch.zeros_like(x_t)

    for mu_arg in (None, x0):
        matching_loss(DenoisingIRSDE(0.3, T=20), recording, x0, mu_arg, torch.Generator().manual_seed(0))
        assert seen["cond"] is seen["x_t"]
