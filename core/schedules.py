"""The noise schedules of every method: beta / theta schedules and the DDPM tables, in float64 on the CPU.

Numbers only (diffusers' convention): no parameters, no models. Each method keeps its process logic and casts
where it stores (float32 module buffers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

THETA_SCHEDULES = ("cosine", "linear", "constant")


def linear_betas(n: int, start: float, end: float) -> Tensor:
    """DDPM's linear betas (DiffPIR's prior: 1e-4..0.02, T = 1000)."""
    return torch.linspace(start, end, n, dtype=torch.float64)


def sqrt_linear_betas(n: int, start: float, end: float) -> Tensor:
    """Latent diffusion's "linear" betas, linear on sqrt(beta) (DiffIR's IPR diffusion: 0.1..0.99, T = 4)."""
    return torch.linspace(math.sqrt(start), math.sqrt(end), n, dtype=torch.float64) ** 2


def cosine_alphas_cumprod(n: int, s: float = 0.008) -> Tensor:
    """Improved DDPM's cosine ᾱ on the grid 0..n (n + 1 values, ᾱ_0 = 1)."""
    grid = torch.linspace(0, n, n + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos((grid / n + s) / (1 + s) * math.pi * 0.5) ** 2
    return alphas_cumprod / alphas_cumprod[0]


def theta_schedule(name: str, T: int) -> Tensor:
    """IR-SDE's official θ_t for t = 0..T (θ_0 only offsets the cumulative sum): cosine = 1 − ᾱ inside a cosine
    grid of T+2 steps, linear = DDPM's linear betas over T+1 steps scaled by 1000 / (T+1), constant = 1."""
    if name == "cosine":
        return 1 - cosine_alphas_cumprod(T + 2)[1:-1]
    if name == "linear":
        scale = 1000 / (T + 1)
        return linear_betas(T + 1, scale * 1e-4, scale * 0.02)
    if name == "constant":
        return torch.ones(T + 1, dtype=torch.float64)
    raise ValueError(f"unknown theta schedule {name!r}; valid: {', '.join(THETA_SCHEDULES)}")


class DDPMTables:
    """The DDPM tables of ``betas``, indexed by t in [0, T), under guided / latent diffusion's names (v_posterior
    = 0); ``noise_to_signal`` = σ̄_t = sqrt(1 − ᾱ_t) / sqrt(ᾱ_t), the noise std of x_t / sqrt(ᾱ_t)."""

    def __init__(self, betas: Tensor) -> None:
        self.betas = betas = betas.double()
        self.T = len(betas)
        self.alphas = alphas = 1.0 - betas
        self.alphas_cumprod = abar = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.sqrt_alphas_cumprod = abar.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - abar).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - abar)
        self.sqrt_recip_alphas_cumprod = (1.0 / abar).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / abar - 1.0).sqrt()
        self.noise_to_signal = self.sqrt_one_minus_alphas_cumprod / self.sqrt_alphas_cumprod
        self.posterior_variance = post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        self.posterior_log_variance_clipped = torch.log(post_var.clamp(min=1e-20))
        self.posterior_mean_coef1 = betas * abar_prev.sqrt() / (1.0 - abar)
        self.posterior_mean_coef2 = (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar)


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, sqrt_ab: Tensor, sqrt_1mab: Tensor) -> Tensor:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε per sample (t: (B,) long), from the caller's stored tables."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return sqrt_ab[t].view(shape) * x0 + sqrt_1mab[t].view(shape) * noise
