"""DiffPIR schedule and sampler, checked with an exact prior: for Gaussian data N(m, s²I) the MMSE prediction
E[x0 | x_t] is known in closed form, so the whole deterministic sampler can be recomputed independently."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError, DataError
from diffpir.kernels import gaussian_kernel
from diffpir.operators import Blur, GenericOperator, Inpainting, SuperResolution
from diffpir.sampler import TASK_DEFAULTS, diffpir_sample
from diffpir.schedule import DDPMSchedule

T = 1000
ALPHA_BAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))  # the linear-beta DDPM schedule, computed here


def official_quad_steps(nfe: int) -> list[int]:
    seq = [int(v) for v in np.sqrt(np.linspace(0, T**2, nfe))]
    seq[-1] -= 1
    return [T - 1 - v for v in seq]


def posterior_mean(x: np.ndarray, t: int, m: float, s: float) -> np.ndarray:
    """E[x0 | x_t] for x0 ~ N(m, s²) and x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε."""
    a, b2 = np.sqrt(ALPHA_BAR[t]), 1.0 - ALPHA_BAR[t]
    return m + a * s**2 / (a**2 * s**2 + b2) * (x - a * m)


class GaussianPrior(nn.Module):
    """ε-model that is exact for Gaussian data; records its calls and can append fake learned variances."""

    def __init__(self, m: float, s: float, learned_sigma: bool = False) -> None:
        super().__init__()
        self.m, self.s, self.learned_sigma = m, s, learned_sigma
        self.calls: list[list[int]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.calls:
            self.first_input = x.clone()
        self.calls.append(t.tolist())
        self.modes.append(self.training)
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        tt = int(t[0])
        a, b = np.sqrt(ALPHA_BAR[tt]), np.sqrt(1.0 - ALPHA_BAR[tt])
        x0 = torch.from_numpy(posterior_mean(x.double().numpy(), tt, self.m, self.s))
        eps = ((x.double() - a * x0) / b).to(x.dtype)
        if self.learned_sigma:
            eps = torch.cat([eps, torch.full_like(eps, 123.0)], dim=1)
        return eps


def reference_inpainting(
    y01, mask, x_start, m, s, lam, sigma_n, nfe, last_prediction, eps_hat=True, rho_scale=1.0
):
    """Algorithm 1 with ζ = 0, written directly in float64 NumPy, per pixel."""
    y = 2.0 * y01 - 1.0
    x = x_start.copy()
    steps = official_quad_steps(nfe)
    for i, t in enumerate(steps):
        a, b = np.sqrt(ALPHA_BAR[t]), np.sqrt(1.0 - ALPHA_BAR[t])
        x0 = posterior_mean(x, t, m, s)
        model_eps = (x - a * x0) / b
        last = i == len(steps) - 1
        if last and not last_prediction:
            break
        rho = rho_scale * lam * max(sigma_n, 1e-3) ** 2 / (b / a) ** 2
        x0 = (mask * y + rho * x0) / (mask + rho)
        if last:
            x = x0
            break
        a_next, b_next = np.sqrt(ALPHA_BAR[steps[i + 1]]), np.sqrt(1.0 - ALPHA_BAR[steps[i + 1]])
        eps = (x - a * x0) / b if eps_hat else model_eps
        x = a_next * x0 + b_next * eps
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


@pytest.fixture
def inpainting_case():
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 32, 32, generator=gen) > 0.5).float()
    clean = 0.6 + 0.1 * torch.randn(2, 1, 32, 32, generator=gen)  # N(m=0.2, s=0.2) in [-1, 1] units
    y = clean * mask
    x_start = torch.randn(2, 1, 32, 32, generator=gen)
    return mask, y, x_start


# ---------------------------------------------------------------- schedule


def test_schedule_tables_rho_and_timesteps():
    sched = DDPMSchedule()
    assert np.allclose(sched.alphas_cumprod.numpy(), ALPHA_BAR, rtol=1e-12)
    nts = np.sqrt(1 - ALPHA_BAR) / np.sqrt(ALPHA_BAR)
    assert np.allclose(sched.noise_to_signal.numpy(), nts, rtol=1e-12)
    assert sched.rho(500, lam=7.0, sigma_n=0.05) == pytest.approx(7.0 * 0.05**2 / nts[500] ** 2, rel=1e-12)
    assert sched.rho(10, lam=1.0, sigma_n=0.0) == pytest.approx(1e-6 / nts[10] ** 2, rel=1e-12)
    for nfe in (2, 20, 100):
        assert sched.timesteps(nfe, "quad") == official_quad_steps(nfe)
    uniform = sched.timesteps(100, "uniform")  # official: 0, 10, ..., 990 and 999 -> t = 999, ..., 9, 0
    assert len(uniform) == 101 and uniform[:2] == [999, 989] and uniform[-2:] == [9, 0]
    assert all(t <= 500 for t in sched.timesteps(20, "quad", t_start=500))
    assert sched.nearest_timestep(float(nts[321])) == 321
    with pytest.raises(ConfigError, match="skip"):
        sched.timesteps(10, "cubic")
    with pytest.raises(ConfigError, match="nfe=600"):
        sched.timesteps(600, "quad")


# ---------------------------------------------------------------- exact prior


@pytest.mark.parametrize("last_prediction", [True, False])
def test_deterministic_inpainting_matches_algorithm_1_recomputed(inpainting_case, last_prediction):
    mask, y, x_start = inpainting_case
    model = GaussianPrior(m=0.2, s=0.2)
    args = dict(lam=1.0, sigma_n=0.1, nfe=12)
    out = diffpir_sample(model, Inpainting(mask), y, zeta=0.0, clip_denoised=False, x_init=x_start,
                         return_last_prediction=last_prediction, **args)
    ref_args = dict(m=0.2, s=0.2, nfe=12, last_prediction=last_prediction, lam=1.0, sigma_n=0.1)
    inputs = (y.double().numpy(), mask.double().numpy(), x_start.double().numpy())
    expected = reference_inpainting(*inputs, **ref_args)
    assert np.abs(out.double().numpy() - expected).max() < 1e-4
    # The same check is blind to neither a wrong ρ_t nor a wrong re-noising step:
    wrong_rho = reference_inpainting(*inputs, rho_scale=2.0, **ref_args)
    wrong_eps = reference_inpainting(*inputs, eps_hat=False, **ref_args)
    assert np.abs(out.double().numpy() - wrong_rho).max() > 1e-2
    assert np.abs(out.double().numpy() - wrong_eps).max() > 1e-2


def test_noise_free_inpainting_keeps_known_pixels_and_samples_the_prior_elsewhere():
    gen = torch.Generator().manual_seed(1)
    mask = (torch.rand(1, 1, 64, 64, generator=gen) > 0.5).float()
    y = (0.3 + 0.5 * torch.rand(1, 1, 64, 64, generator=gen)) * mask
    model = GaussianPrior(m=0.2, s=0.2)
    out = diffpir_sample(model, Inpainting(mask), y, sigma_n=0.0, lam=1.0, zeta=0.0, nfe=20,
                         clip_denoised=False, generator=torch.Generator().manual_seed(2),
                         return_last_prediction=True)
    known, unknown = mask.bool(), ~mask.bool()
    assert (out[known] - y[known]).abs().max() < 2e-3
    # Pixels are independent under this prior, so unknown pixels follow the prior N(0.6, 0.1²) in [0, 1].
    assert abs(float(out[unknown].mean()) - 0.6) < 0.01
    assert 0.06 < float(out[unknown].std()) < 0.12
    # The official return (last noisy state) is within its 1% noise of the same image.
    official = diffpir_sample(model, Inpainting(mask), y, sigma_n=0.0, lam=1.0, zeta=0.0, nfe=20,
                              clip_denoised=False, generator=torch.Generator().manual_seed(2))
    assert (official[known] - y[known]).abs().max() < 0.03


def test_batch_equals_images_one_by_one(inpainting_case):
    mask, y, x_start = inpainting_case
    model = GaussianPrior(m=0.2, s=0.2)
    kw = dict(sigma_n=0.05, lam=2.0, zeta=0.0, nfe=8)
    batch = diffpir_sample(model, Inpainting(mask), y, x_init=x_start, **kw)
    for i in range(2):
        single = diffpir_sample(model, Inpainting(mask), y[i : i + 1], x_init=x_start[i : i + 1], **kw)
        assert torch.allclose(batch[i : i + 1], single, atol=1e-6)


# ---------------------------------------------------------------- determinism, NFE count, model interface


def test_fixed_generator_gives_identical_output_and_nfe_is_exact():
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 4:] = 0
    y = torch.full((3, 1, 8, 8), 0.5) * mask
    model = GaussianPrior(m=0.0, s=0.5)
    kw = dict(sigma_n=0.05, lam=1.0, zeta=0.5, nfe=7)
    first = diffpir_sample(model, Inpainting(mask), y, generator=torch.Generator().manual_seed(3), **kw)
    assert [c[0] for c in model.calls] == official_quad_steps(7)
    assert all(len(set(c)) == 1 and len(c) == 3 for c in model.calls)
    second = diffpir_sample(model, Inpainting(mask), y, generator=torch.Generator().manual_seed(3), **kw)
    other = diffpir_sample(model, Inpainting(mask), y, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert len(model.calls) == 21

    model.calls.clear()
    diffpir_sample(model, Inpainting(mask), y, skip="uniform", generator=torch.Generator().manual_seed(0),
                   sigma_n=0.05, nfe=10)
    assert len(model.calls) == len(DDPMSchedule().timesteps(10, "uniform")) == 11
    model.calls.clear()
    diffpir_sample(model, Inpainting(mask), y, t_start=400, sigma_n=0.05, nfe=10)
    assert model.calls and all(c[0] <= 400 for c in model.calls)
    assert len(model.calls) == len([t for t in official_quad_steps(10) if t <= 400])


def test_learned_sigma_channels_are_ignored_and_training_mode_is_restored(inpainting_case):
    mask, y, x_start = inpainting_case
    kw = dict(sigma_n=0.05, lam=1.0, zeta=0.0, nfe=5, x_init=x_start)
    plain = diffpir_sample(GaussianPrior(0.2, 0.2), Inpainting(mask), y, **kw)
    learned = GaussianPrior(0.2, 0.2, learned_sigma=True).train()
    with_variances = diffpir_sample(learned, Inpainting(mask), y, **kw)
    assert torch.equal(plain, with_variances)
    assert learned.modes == [False] * 5 and learned.training


def test_super_resolution_runs_end_to_end_with_the_partial_start():
    gen = torch.Generator().manual_seed(5)
    op = SuperResolution(2)
    clean = (0.6 + 0.1 * torch.randn(2, 3, 24, 24, generator=gen)).clamp(0, 1)
    y = op.measure(clean, 0.0)
    assert y.shape == (2, 3, 12, 12)
    out = diffpir_sample(GaussianPrior(0.2, 0.2), op, y, sigma_n=0.0, lam=1.0, zeta=0.25, nfe=10, t_start=999,
                         generator=gen, return_last_prediction=True)
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # Noise-free y and ρ ≈ 0.01 at the end: the result reproduces the measurement closely.
    residual = (op.forward(2 * out - 1) + 1) / 2 - y
    assert float(residual.abs().mean()) < 1e-3  # about 0.04 without the data step


@pytest.mark.parametrize("zeta, eta", [(0.5, 0.0), (1.0, 0.0), (0.0, 1.0)])
def test_fresh_noise_share_zeta_and_official_eta(zeta, eta):
    """One step 999 -> 0 (nfe=2): x_0 = a x̂0 + sqrt(1 − ζ)(kept ε̂ + η_σ ε1) + sqrt(ζ) b ε2, so once the
    deterministic part is removed the rest is white noise of std sqrt(ζ) b (or η_σ for the eta term)."""
    gen = torch.Generator().manual_seed(10)
    mask = torch.ones(1, 1, 64, 64)
    y = 0.4 + 0.2 * torch.rand(1, 1, 64, 64, generator=gen)
    x_start = torch.randn(1, 1, 64, 64, generator=gen)
    out = diffpir_sample(GaussianPrior(0.0, 0.3), Inpainting(mask), y, sigma_n=0.05, lam=1.0, zeta=zeta,
                         eta=eta, nfe=2, clip_denoised=False, x_init=x_start, generator=gen)
    a, b = np.sqrt(ALPHA_BAR[999]), np.sqrt(1 - ALPHA_BAR[999])
    a0, b0 = np.sqrt(ALPHA_BAR[0]), np.sqrt(1 - ALPHA_BAR[0])
    x = x_start.double().numpy()
    rho = 0.05**2 / (b / a) ** 2
    x0 = ((2 * y.double().numpy() - 1) + rho * posterior_mean(x, 999, 0.0, 0.3)) / (1 + rho)
    eps_hat = (x - a * x0) / b
    eta_sigma = eta * b0 / b * np.sqrt(0.02)
    deterministic = a0 * x0 + np.sqrt(1 - zeta) * np.sqrt(b0**2 - eta_sigma**2) * eps_hat
    rest = (2 * out.double().numpy() - 1) - deterministic
    expected_std = np.sqrt(zeta * b0**2 + (1 - zeta) * eta_sigma**2)
    assert abs(rest.mean()) < 3 * expected_std / 64 + 1e-6
    assert abs(rest.std() / expected_std - 1) < 0.05


def test_output_is_clipped_to_the_unit_range():
    out = diffpir_sample(GaussianPrior(0.95, 0.3), Inpainting(torch.zeros(16, 16)), torch.zeros(1, 1, 16, 16),
                         sigma_n=0.0, zeta=0.0, nfe=5, clip_denoised=False,
                         generator=torch.Generator().manual_seed(11))
    assert float(out.max()) == 1.0 and float(out.min()) >= 0.0


def test_partial_start_follows_the_official_formulas():
    gen = torch.Generator().manual_seed(6)
    y = torch.rand(1, 3, 8, 8, generator=gen)
    t0 = [t for t in official_quad_steps(10) if t <= 300][0]
    a0, b0 = np.sqrt(ALPHA_BAR[t0]), np.sqrt(1 - ALPHA_BAR[t0])

    # Deblurring / inpainting: y counts as already noised to t_y, where sqrt(1 − ᾱ)/sqrt(ᾱ) is nearest 2σ_n.
    model = GaussianPrior(0.0, 0.5)
    diffpir_sample(model, Inpainting(torch.ones(8, 8)), y, sigma_n=0.05, nfe=10, t_start=300,
                   generator=torch.Generator().manual_seed(7))
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    t_y = int(np.argmin(np.abs(np.sqrt(1 - ALPHA_BAR) / np.sqrt(ALPHA_BAR) - 0.1)))
    ratio = a0 / np.sqrt(ALPHA_BAR[t_y])
    expected = ratio * (2 * y - 1) + np.sqrt(b0**2 - ratio**2 * (1 - ALPHA_BAR[t_y])) * noise
    assert model.calls[0][0] == t0 and torch.allclose(model.first_input, expected.float(), atol=1e-6)

    # SR: the bicubic-upsampled y, noised to t0.
    model = GaussianPrior(0.0, 0.5)
    diffpir_sample(model, SuperResolution(2), y, sigma_n=0.05, nfe=10, t_start=300,
                   generator=torch.Generator().manual_seed(8))
    noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    upsampled = F.interpolate(2 * y - 1, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.allclose(model.first_input, (a0 * upsampled + b0 * noise).float(), atol=1e-6)

    # No t_start: pure noise (Algorithm 1).
    model = GaussianPrior(0.0, 0.5)
    diffpir_sample(model, SuperResolution(2), y, sigma_n=0.05, nfe=10,
                   generator=torch.Generator().manual_seed(9))
    pure_noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    assert torch.equal(model.first_input, pure_noise)


def test_generic_operator_in_the_sampler_matches_the_closed_form():
    gen = torch.Generator().manual_seed(12)
    blur = Blur(gaussian_kernel(5, 1.0))
    y = 0.4 + 0.2 * torch.rand(1, 3, 12, 12, generator=gen)
    x_start = torch.randn(1, 3, 12, 12, generator=gen)
    # Steps t <= 100 have ρ_t >= 0.1, well-conditioned enough for float32 CG to reach the closed form (with
    # ρ ~ 1e-7, as at t = 999, CG stalls short of the exact deconvolution).
    kw = dict(sigma_n=0.05, lam=7.0, zeta=0.0, nfe=40, t_start=100, return_last_prediction=True)
    closed = diffpir_sample(GaussianPrior(0.2, 0.2), blur, y, x_init=x_start, **kw)
    # The user's function works on [0, 1] images; CG with the autograd adjoint solves the same data step.
    generic = GenericOperator(lambda v: (blur.forward(2 * v - 1) + 1) / 2, tol=1e-10, iterations=500)
    restored = diffpir_sample(GaussianPrior(0.2, 0.2), generic, y, x_init=x_start, **kw)
    assert torch.allclose(restored, closed, atol=1e-4)


def test_task_defaults_are_sampler_arguments():
    assert TASK_DEFAULTS["deblur_gaussian"]["zeta"] == 0.3 and TASK_DEFAULTS["deblur_gaussian"]["lam"] == 7.0
    assert TASK_DEFAULTS["sr"]["zeta"] == 0.25 and TASK_DEFAULTS["inpainting"]["nfe"] == 20
    mask = torch.ones(1, 1, 8, 8)
    model = GaussianPrior(0.0, 0.5)
    out = diffpir_sample(model, Inpainting(mask), torch.rand(1, 1, 8, 8), **TASK_DEFAULTS["inpainting"])
    assert out.shape == (1, 1, 8, 8) and len(model.calls) == 20


# ---------------------------------------------------------------- bad input


def test_bad_settings_and_inputs_raise_clear_errors():
    op, y = Inpainting(torch.ones(4, 4)), torch.rand(1, 1, 4, 4)
    model = GaussianPrior(0.0, 0.5)
    with pytest.raises(ConfigError, match="zeta=1.5"):
        diffpir_sample(model, op, y, sigma_n=0.0, zeta=1.5)
    with pytest.raises(ConfigError, match="lam=0"):
        diffpir_sample(model, op, y, sigma_n=0.0, lam=0)
    with pytest.raises(DataError, match="NCHW"):
        diffpir_sample(model, op, y[0], sigma_n=0.0)
    with pytest.raises(DataError, match="x_init"):
        diffpir_sample(model, op, y, sigma_n=0.0, x_init=torch.zeros(1, 1, 5, 5))

    class WrongChannels(nn.Module):
        def forward(self, x, t):
            return torch.zeros(x.shape[0], 5, *x.shape[-2:])

    with pytest.raises(ConfigError, match="5 channels"):
        diffpir_sample(WrongChannels(), op, y, sigma_n=0.0, nfe=2)
