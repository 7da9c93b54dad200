"""The DDPM over the 256-d IPR vector used by DiffIR's stage 2 (official ``ldm.ddpm.DDPM`` semantics).

* Schedule: "linear" in the latent-diffusion sense, i.e. linear on sqrt(beta): ``betas =
  linspace(sqrt(linear_start), sqrt(linear_end), T) ** 2`` in float64, T = 4, 0.1 -> 0.99. All derived
  tables are computed in float64 (``core.schedules``) and stored as float32 buffers under the official names.
* x0-parameterisation: the denoiser predicts the clean IPR from (condition c, t / (10 T), noisy IPR); each
  reverse step is the posterior mean ``coef1[t] * x0_hat + coef2[t] * x_t``. No posterior-variance noise is
  added (the official ``p_sample`` draws a Gaussian every step but returns the mean only). At t = 0, coef1 =
  1 and coef2 = 0, so the result is the denoiser's last x0 prediction.
* Training chain: start from ``q_sample(IPR_S1, t = T-1)`` and run all T reverse steps inside the autograd
  graph. Inference chain: start from ``randn(B, 256)`` (not from the stage-1 prior) and run the same T
  steps.

RNG: the official code draws one ``randn`` of the IPR's shape per reverse step and discards it. With
``match_official_rng=True`` (default) we make the same draws, so a loop over images consumes the global RNG
exactly as the official code does, and, seeded alike, both start every image from the same noise. The draws
do not change any output.

The module holds no parameters of its own: ``model`` is the denoiser (shared with ``DiffIRS2.denoise``) and
``condition`` the stage-2 CPEN (shared with ``DiffIRS2.condition``); both are registered here too only so
that the state dict carries the official ``diffusion.model.*`` / ``diffusion.condition.*`` aliases.
"""

from __future__ import annotations

import torch
from torch import nn

from core.schedules import DDPMTables, add_noise, sqrt_linear_betas
from diffir.cpen import IPR_DIM, LRELU_SLOPE

# The official module's 12 schedule buffers, in its order: the state-dict keys diffusion.betas ...
LDM_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
               "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
               "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
               "posterior_mean_coef1", "posterior_mean_coef2")


class ResMLP(nn.Module):
    """Linear + LeakyReLU. Despite the official name there is no skip (it is commented out there)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(n_feats, n_feats), nn.LeakyReLU(LRELU_SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class IPRDenoiser(nn.Module):
    """x0-predicting MLP: input cat[c (256), t / (10 T) (1), noisy IPR (256)] -> clean IPR (256)."""

    def __init__(self, n_denoise_res: int = 1, timesteps: int = 4, ipr_dim: int = IPR_DIM) -> None:
        super().__init__()
        self.max_period = timesteps * 10  # the official time scaling: t / 40 for T = 4
        layers: list[nn.Module] = [nn.Linear(2 * ipr_dim + 1, ipr_dim), nn.LeakyReLU(LRELU_SLOPE)]
        layers += [ResMLP(ipr_dim) for _ in range(n_denoise_res)]
        self.resmlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t_in = (t.float() / self.max_period).view(-1, 1).to(x.dtype)
        return self.resmlp(torch.cat([c, t_in, x], dim=1))


class IPRDiffusion(nn.Module):
    """The IPR DDPM: ``q_sample``, posterior means, the training chain and the sampling chain."""

    def __init__(self, denoise: IPRDenoiser, condition: nn.Module | None = None, timesteps: int = 4,
                 linear_start: float = 0.1, linear_end: float = 0.99, ipr_dim: int = IPR_DIM,
                 match_official_rng: bool = True) -> None:
        super().__init__()
        self.model = denoise
        if condition is not None:
            self.condition = condition
        self.num_timesteps = timesteps
        self.ipr_dim = ipr_dim
        self.match_official_rng = match_official_rng
        tables = DDPMTables(sqrt_linear_betas(timesteps, linear_start, linear_end))
        for name in LDM_BUFFERS:
            self.register_buffer(name, getattr(tables, name).float())

    def _at(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table.gather(0, t).view(-1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I); ``t`` is a (B,) long tensor."""
        if noise is None:
            noise = torch.randn_like(x0)
        return add_noise(x0, noise, t, self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0)."""
        return self._at(self.posterior_mean_coef1, t) * x0 + self._at(self.posterior_mean_coef2, t) * x_t

    def reverse_chain(self, x_start: torch.Tensor, c: torch.Tensor
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run t = T-1 .. 0 from ``x_start``; returns (final IPR, the IPR after every step)."""
        x = x_start
        steps: list[torch.Tensor] = []
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            x = self.posterior_mean(self.model(x, t, c), x, t)
            if self.match_official_rng:
                torch.randn(x.shape, device=x.device)  # drawn and discarded, as in the official p_sample
            steps.append(x)
        return x, steps

    def train_chain(self, ipr_s1: torch.Tensor, c: torch.Tensor,
                    noise: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Diffuse the stage-1 IPR to t = T-1, then denoise it in T steps (all differentiable)."""
        t_last = torch.full((ipr_s1.shape[0],), self.num_timesteps - 1, device=ipr_s1.device,
                            dtype=torch.long)
        return self.reverse_chain(self.q_sample(ipr_s1, t_last, noise), c)

    def sample(self, c: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Estimate the IPR from the condition alone, starting from ``noise`` (default: randn(B, 256))."""
        if noise is None:
            noise = torch.randn((c.shape[0], self.ipr_dim), device=c.device)
        return self.reverse_chain(noise, c)[0]
