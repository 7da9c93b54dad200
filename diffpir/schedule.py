"""The DDPM noise schedule DiffPIR samples with, and the official sub-sequences of timesteps.

The prior is a guided-diffusion model trained with linear betas 1e-4..0.02 over T = 1000 steps. DiffPIR reads
that schedule through σ̄_t = sqrt(1 − ᾱ_t) / sqrt(ᾱ_t), the noise-to-signal ratio of x_t: dividing x_t by
sqrt(ᾱ_t) turns it into "clean image + Gaussian noise of std σ̄_t", which is what ties the diffusion step to
the plug-and-play denoising step and gives ρ_t = λ σ_n² / σ̄_t².
"""

from __future__ import annotations

import numpy as np
import torch

from core.errors import ConfigError
from core.schedules import DDPMTables, linear_betas

SKIP_TYPES = ("quad", "uniform")


class DDPMSchedule(DDPMTables):
    """Linear-beta DDPM schedule: the tables of DDPMTables (float64, CPU, indexed by t in [0, T)) and DiffPIR's ρ_t."""

    def __init__(self, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if T < 2:
            raise ConfigError(f"DDPMSchedule: T={T}; it needs at least 2 timesteps")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ConfigError(
                f"DDPMSchedule: betas need 0 < beta_start <= beta_end < 1, got {beta_start}..{beta_end}"
            )
        super().__init__(linear_betas(T, beta_start, beta_end))  # σ̄_t = noise_to_signal: increasing in t

    def rho(self, t: int, lam: float, sigma_n: float) -> float:
        """ρ_t = λ σ² / σ̄_t² with σ = max(0.001, σ_n); the floor keeps the data step finite for a clean y."""
        sigma = max(0.001, float(sigma_n))
        return lam * sigma**2 / float(self.noise_to_signal[t]) ** 2

    def nearest_timestep(self, noise_to_signal: float) -> int:
        """The t whose σ̄_t is closest to the given value (the official `find_nearest`)."""
        return int(torch.argmin((self.noise_to_signal - noise_to_signal).abs()))

    def timesteps(self, nfe: int, skip: str = "quad", t_start: int | None = None) -> list[int]:
        """The decreasing timesteps the sampler visits, one model evaluation each, as in the official code.

        quad: s_i = int(sqrt(linspace(0, T², nfe))_i) with the last one lowered by 1, visited as
        t = T − 1 − s_i, so the steps are dense near t = 0; it gives exactly `nfe` steps from T − 1 down to 0.
        uniform: s_i = i·(T // nfe) for i < nfe, plus T − 1 when T // nfe > 1 (official), i.e. t = T − 1,
        T − 1 − skip, ... and a final t = 0: nfe + 1 steps whenever T // nfe > 1, as the official loop.
        t_start: steps with t > t_start are dropped (the official partial start), so fewer evaluations remain.
        """
        if skip not in SKIP_TYPES:
            raise ConfigError(f"skip={skip!r} is not a known timestep spacing; use one of {SKIP_TYPES}")
        if not 2 <= nfe <= self.T:
            raise ConfigError(f"nfe={nfe} is out of range; it must be between 2 and T={self.T}")
        T = self.T
        if skip == "quad":
            offsets = [int(s) for s in np.sqrt(np.linspace(0.0, float(T) ** 2, nfe))]
            offsets[-1] -= 1
        else:
            stride = T // nfe
            offsets = [i * stride for i in range(nfe)]
            if stride > 1:
                offsets.append(T - 1)
        steps = [T - 1 - s for s in offsets]
        if len(set(steps)) != len(steps):
            # int(sqrt(.)) repeats values once nfe exceeds about T/2: a repeated t is a wasted evaluation.
            raise ConfigError(
                f"nfe={nfe} with skip='{skip}' repeats timesteps for T={T}; use at most {T // 2} "
                f"evaluations with 'quad', or skip='uniform'"
            )
        if t_start is not None:
            if not 0 <= t_start < T:
                raise ConfigError(f"t_start={t_start} is out of range; it must be in [0, {T - 1}]")
            steps = [t for t in steps if t <= t_start]
            if not steps:
                raise ConfigError(f"t_start={t_start} leaves no timestep of the {skip} steps with nfe={nfe}")
        return steps

    def coefficients(self, t: int) -> tuple[float, float]:
        """(sqrt(ᾱ_t), sqrt(1 − ᾱ_t)) as Python floats, for mixing tensors of any dtype."""
        return float(self.sqrt_alphas_cumprod[t]), float(self.sqrt_one_minus_alphas_cumprod[t])

