"""core.schedules: every method's schedule tables against the official formulas, written out here in numpy
float64 (IR-SDE sde_utils.py, latent diffusion's make_beta_schedule / register_schedule, DiffPIR's linear betas),
plus values pinned from the tables as they were before the schedules moved here, and the module buffers (names,
order, dtype, persistence) that released weights and old checkpoints depend on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.schedules import (
    THETA_SCHEDULES,
    DDPMTables,
    add_noise,
    cosine_alphas_cumprod,
    linear_betas,
    sqrt_linear_betas,
    theta_schedule,
)
from diffir.ipr_diffusion import IPRDenoiser, IPRDiffusion
from diffpir.prior.module import DDPMPriorModule
from diffpir.schedule import DDPMSchedule
from irsde.sde import IRSDE

RTOL = 1e-12
# the buffer names and order of the official ldm.ddpm.DDPM (the state-dict keys diffusion.betas ... of S2 files)
LDM_KEYS = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
            "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]


def official_thetas(name: str, T: int) -> np.ndarray:
    """Algolzw/image-restoration-sde codes/utils/sde_utils.py, IRSDE._initialize, in float64."""
    timesteps = T + 1
    if name == "constant":
        return np.ones(timesteps)
    if name == "linear":
        scale = 1000 / timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, timesteps)
    timesteps = T + 2
    x = np.linspace(0, timesteps, timesteps + 1)
    alphas_cumprod = np.cos(((x / timesteps) + 0.008) / (1 + 0.008) * math.pi * 0.5) ** 2
    return 1 - (alphas_cumprod / alphas_cumprod[0])[1:-1]


def official_ddpm(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Zj-BinXia/DiffIR ldm/ddpm.py DDPM.register_schedule (v_posterior = 0), plus DiffPIR's σ̄_t."""
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    return {
        "betas": betas, "alphas": alphas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "noise_to_signal": np.sqrt(1.0 - ac) / np.sqrt(ac),  # DiffPIR's reduced_alpha_cumprod
    }


def ldm_linear_betas(n: int, start: float, end: float) -> np.ndarray:
    """ldm.util make_beta_schedule("linear"): linear on sqrt(beta)."""
    return np.linspace(start**0.5, end**0.5, n) ** 2


@pytest.mark.parametrize("T", [1, 4, 100, 1000])
@pytest.mark.parametrize("name", THETA_SCHEDULES)
def test_irsde_thetas_follow_the_official_formulas(name, T):
    thetas = theta_schedule(name, T)
    assert thetas.dtype == torch.float64 and thetas.shape == (T + 1,)
    np.testing.assert_allclose(thetas.numpy(), official_thetas(name, T), rtol=RTOL, atol=0)


def test_cosine_alphas_cumprod_and_unknown_theta_schedules():
    abar = cosine_alphas_cumprod(10)
    assert abar.shape == (11,) and abar[0] == 1.0 and abs(float(abar[-1])) < 1e-15 and bool((abar.diff() < 0).all())
    with pytest.raises(ValueError, match="cosine, linear, constant"):
        theta_schedule("quadratic", 10)


@pytest.mark.parametrize(("betas", "reference"), [
    (sqrt_linear_betas(4, 0.1, 0.99), ldm_linear_betas(4, 0.1, 0.99)),  # DiffIR's IPR diffusion
    (sqrt_linear_betas(7, 1e-4, 2e-2), ldm_linear_betas(7, 1e-4, 2e-2)),
    (linear_betas(1000, 1e-4, 0.02), np.linspace(0.1 / 1000, 20 / 1000, 1000)),  # DiffPIR's prior (in float64)
    (linear_betas(10, 0.1, 0.2), np.linspace(0.1, 0.2, 10)),
])
def test_ddpm_tables_follow_the_official_formulas(betas, reference):
    tables = DDPMTables(betas)
    assert tables.T == len(reference)
    for name, expected in official_ddpm(reference).items():
        got = getattr(tables, name)
        assert got.dtype == torch.float64, name
        np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL, atol=0, err_msg=name)


def test_values_pinned_from_the_tables_before_they_moved():
    """Printed (repr) by the suite's own irsde/sde.py, diffir/ipr_diffusion.py and diffpir/schedule.py."""
    assert theta_schedule("cosine", 100)[[1, 50, 100]].tolist() == pytest.approx(
        [0.001694615641964492, 0.5061564095593623, 0.9997665724804802], rel=RTOL)
    ipr = DDPMTables(sqrt_linear_betas(4, 0.1, 0.99))
    assert ipr.betas.tolist() == pytest.approx([0.1, 0.29428562420046467, 0.5909522908671312, 0.99], rel=RTOL)
    assert ipr.sqrt_alphas_cumprod.tolist() == pytest.approx(
        [0.9486832980505138, 0.7969585548945326, 0.509709489661159, 0.05097094896611592], rel=RTOL)
    assert ipr.posterior_mean_coef2.tolist() == pytest.approx(
        [0.0, 0.23024580474748482, 0.3152556410339387, 0.07421243030210603], rel=RTOL, abs=1e-300)
    pir = DDPMSchedule()
    assert pir.alphas_cumprod[999].item() == pytest.approx(4.0358297653756754e-05, rel=RTOL)
    assert pir.noise_to_signal[[0, 999]].tolist() == pytest.approx([0.010000500037502573, 157.40728081040757],
                                                                    rel=RTOL)


def test_irsde_stores_the_shared_thetas():
    for name in THETA_SCHEDULES:
        sde = IRSDE(10, T=100, schedule=name)
        assert torch.equal(sde.thetas, theta_schedule(name, 100).float())


def test_diffir_buffers_keep_the_official_names_order_dtype_and_values():
    """Released S2 weights carry these 12 persistent float32 buffers: their keys and values must not change."""
    diffusion = IPRDiffusion(IPRDenoiser(timesteps=4), timesteps=4)
    keys = [k for k in diffusion.state_dict() if not k.startswith("model.")]
    assert keys == LDM_KEYS
    assert not diffusion._non_persistent_buffers_set
    reference = official_ddpm(ldm_linear_betas(4, 0.1, 0.99))
    for name in LDM_KEYS:
        buffer = getattr(diffusion, name)
        assert buffer.dtype == torch.float32, name
        assert torch.equal(buffer, torch.from_numpy(reference[name]).float()), name


def test_diffpir_prior_training_buffers_are_float32_copies_outside_the_state_dict():
    module = DDPMPriorModule(torch.nn.Conv2d(3, 3, 1), schedule={"T": 1000}, ema={"decay": 0})
    assert module._non_persistent_buffers_set == {"sqrt_ab", "sqrt_1mab"}
    assert not any("sqrt" in k for k in module.state_dict())
    reference = official_ddpm(np.linspace(1e-4, 0.02, 1000))
    assert torch.equal(module.sqrt_ab, torch.from_numpy(reference["sqrt_alphas_cumprod"]).float())
    assert torch.equal(module.sqrt_1mab, torch.from_numpy(reference["sqrt_one_minus_alphas_cumprod"]).float())


def test_add_noise_is_the_ddpm_marginal_per_sample():
    tables = DDPMTables(linear_betas(50, 1e-3, 0.05))
    sqrt_ab, sqrt_1mab = tables.sqrt_alphas_cumprod.float(), tables.sqrt_one_minus_alphas_cumprod.float()
    t = torch.tensor([0, 17, 49])
    for shape in [(3, 5), (3, 2, 4, 4)]:
        x0, noise = torch.randn(shape), torch.randn(shape)
        got = add_noise(x0, noise, t, sqrt_ab, sqrt_1mab)
        for i, ti in enumerate(t.tolist()):
            abar = float(tables.alphas_cumprod[ti])
            expected = math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * noise[i]
            torch.testing.assert_close(got[i], expected, rtol=1e-6, atol=1e-6)
