"""The mean-reverting SDE of IR-SDE (Luo et al., ICML 2023) and its denoising variant (section 4.3).

Forward process (paper eq. 1, official ``IRSDE``), with ``lam = max_sigma`` the stationary std:

    dx = theta_t (mu - x) dt + sigma_t dw,        sigma_t^2 = 2 lam^2 theta_t.

Indexing and discretisation (exactly as the official code): integer timesteps t = 0..T, and each table below
has T+1 entries. Moving from t-1 to t integrates the drift over a step of length ``dt`` at rate ``thetas[t]``,
so the "reversion time" elapsed at t is ``u_t = thetas_cumsum[t] * dt``, where
``thetas_cumsum[t] = sum_{i=1..t} thetas[i]`` (``thetas[0]`` is subtracted from the cumulative sum, so u_0 = 0
and x_0 is the clean image). ``dt`` is chosen so that ``exp(-u_T) = eps``: at t = T the mean has travelled all
but a fraction eps of the way from x0 to mu.

Closed-form marginal (paper eq. 7-8):  x_t | x0 ~ N(mu + (x0 - mu) e^{-u_t},  lam^2 (1 - e^{-2 u_t})).

One Euler step of the reverse SDE at t (t -> t-1, official ``reverse_sde_step``):

    x_{t-1} = x_t - [theta_t (mu - x_t) - sigma_t^2 score] dt + sigma_t sqrt(dt) z.

Every step method also takes an optional earlier timestep ``s`` (default t-1) so samplers can skip steps: the
elapsed reversion time over (s, t] is then ``u_t - u_s`` (the thetas summed over the skipped steps, times dt).

``t`` may be a Python int (tables give 0-d tensors) or a LongTensor of shape (B,) (tables give (B, 1, 1, 1)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.schedules import theta_schedule

TimeIndex = int | Tensor


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator`` (on its own device) when given."""
    if generator is None:
        return torch.randn_like(x)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device)


def to_unit_sigma(sigma: float) -> float:
    """Noise levels >= 1 are read in 0..255 units (official convention), smaller ones in [0, 1] units."""
    return sigma / 255 if sigma >= 1 else sigma


class IRSDE:
    """Parameter-free mean-reverting SDE: schedules, closed forms and one-step updates.

    ``max_sigma`` is the stationary noise std ``lam`` in [0, 1] image units; a value >= 1 is divided by 255 as
    in the official code, so configs may write either 10 or 10/255.
    """

    def __init__(self, max_sigma: float, T: int = 100, schedule: str = "cosine", eps: float = 0.005):
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.max_sigma = to_unit_sigma(float(max_sigma))
        self.T = T
        self.schedule = schedule
        self.eps = eps

        thetas = theta_schedule(schedule, T)
        cumsum = torch.cumsum(thetas, dim=0) - thetas[0]
        self.dt = float(-math.log(eps) / cumsum[-1])
        lam2 = self.max_sigma**2
        # Computed in float64, stored in float32 (the official code works in float32 throughout).
        self.thetas = thetas.float()
        self.sigmas = torch.sqrt(2 * lam2 * thetas).float()
        self.thetas_cumsum = cumsum.float()
        self.sigma_bars = torch.sqrt(-lam2 * torch.expm1(-2 * cumsum * self.dt)).float()
        # Reversion time elapsed at t and during the single step t-1 -> t; closed forms use these directly.
        self.elapsed = (cumsum * self.dt).float()
        self.step_elapsed = (thetas * self.dt).float()

    _TABLES = ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "elapsed", "step_elapsed")

    def to(self, device: torch.device | str) -> IRSDE:
        """Move the tables to ``device`` (optional: lookups otherwise copy them to the input's device)."""
        for name in self._TABLES:
            setattr(self, name, getattr(self, name).to(device))
        return self

    # ------------------------------------------------------------------ lookups
    def _at(self, table: Tensor, t: TimeIndex, like: Tensor | None = None) -> Tensor:
        """table[t] as a 0-d tensor (int t) or shaped (B, 1, ..., 1) to broadcast against NCHW tensors."""
        if like is not None:
            device = like.device
        elif isinstance(t, Tensor):
            device = t.device
        else:
            device = table.device
        table = table.to(device)
        if isinstance(t, Tensor) and t.dim() > 0:
            ndim = like.dim() if like is not None else 4
            return table[t.reshape(-1).long().to(device)].view(-1, *([1] * (ndim - 1)))
        return table[int(t)]

    def _interval(
        self, t: TimeIndex, s: TimeIndex | None, like: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(reversion time elapsed over (s, t], reversion time at s); s defaults to t-1."""
        if s is None:
            return self._at(self.step_elapsed, t, like), self._at(self.elapsed, t - 1, like)
        u_s = self._at(self.elapsed, s, like)
        return self._at(self.elapsed, t, like) - u_s, u_s

    def _level(self, x0: Tensor, mu: Tensor | None) -> Tensor:
        """The level the process reverts to: the degraded image mu here, the clean image when denoising."""
        assert mu is not None, "IRSDE needs the degraded image mu"
        return mu

    def model_condition(self, x_t: Tensor, mu: Tensor | None) -> Tensor:
        """What fills the ``mu`` slot of ``model(x_t, mu, t)``: the degraded image for IR-SDE."""
        assert mu is not None, "IRSDE needs the degraded image mu"
        return mu

    # ------------------------------------------------------------------ marginals
    def mu_bar(self, x0: Tensor, mu: Tensor | None, t: TimeIndex) -> Tensor:
        """Mean of x_t | x0: mu + (x0 - mu) exp(-u_t)."""
        level = self._level(x0, mu)
        return level + (x0 - level) * torch.exp(-self._at(self.elapsed, t, x0))

    def sigma_bar(self, t: TimeIndex) -> Tensor:
        """Std of x_t | x0: lam sqrt(1 - exp(-2 u_t))."""
        return self._at(self.sigma_bars, t)

    # ------------------------------------------------------------------ drifts (increments over one step)
    def drift(self, x: Tensor, mu: Tensor, t: TimeIndex) -> Tensor:
        """Forward drift increment for the step t-1 -> t: theta_t (mu - x) dt."""
        return self._at(self.step_elapsed, t, x) * (mu - x)

    def dispersion(self, t: TimeIndex, s: TimeIndex | None = None) -> Tensor:
        """Std of the Brownian increment over (s, t]: sigma_t sqrt(dt) per step, sqrt(2 lam^2 du) overall."""
        if s is None:
            return self._at(self.sigmas, t) * math.sqrt(self.dt)
        du, _ = self._interval(t, s)
        return torch.sqrt(2 * self.max_sigma**2 * du)

    def sde_reverse_drift(
        self, x: Tensor, mu: Tensor | None, score: Tensor, t: TimeIndex, s: TimeIndex | None = None
    ) -> Tensor:
        """[theta (mu - x) - sigma^2 score] dt, summed over (s, t]: sigma^2 = 2 lam^2 theta factors out du."""
        du, _ = self._interval(t, s, x)
        return du * ((mu - x) - 2 * self.max_sigma**2 * score)

    def ode_reverse_drift(
        self, x: Tensor, mu: Tensor | None, score: Tensor, t: TimeIndex, s: TimeIndex | None = None
    ) -> Tensor:
        """Probability-flow drift [theta (mu - x) - sigma^2 score / 2] dt, summed over (s, t]."""
        du, _ = self._interval(t, s, x)
        return du * ((mu - x) - self.max_sigma**2 * score)

    def reverse_sde_step_mean(
        self, x: Tensor, mu: Tensor | None, score: Tensor, t: TimeIndex, s: TimeIndex | None = None
    ) -> Tensor:
        """Mean of one Euler-Maruyama reverse step (what the official matching loss compares)."""
        return x - self.sde_reverse_drift(x, mu, score, t, s)

    # ------------------------------------------------------------------ noise / score / x0 conversions
    def score_from_noise(self, noise: Tensor, t: TimeIndex) -> Tensor:
        return -noise / self._at(self.sigma_bars, t, noise)

    def noise_from_x0(self, x_t: Tensor, x0: Tensor, mu: Tensor | None, t: TimeIndex) -> Tensor:
        """The standard normal noise that turns x0 into x_t (official get_real_noise)."""
        return (x_t - self.mu_bar(x0, mu, t)) / self._at(self.sigma_bars, t, x_t)

    def x0_from_noise(self, x_t: Tensor, noise: Tensor, mu: Tensor | None, t: TimeIndex) -> Tensor:
        """Invert the marginal for x0 given the noise (official get_init_state_from_noise)."""
        sigma_bar = self._at(self.sigma_bars, t, x_t)
        return (x_t - mu - sigma_bar * noise) * torch.exp(self._at(self.elapsed, t, x_t)) + mu

    # ------------------------------------------------------------------ optimal reverse state (Prop. 3.2)
    def _posterior_factors(self, t: TimeIndex, s: TimeIndex | None, like: Tensor | None):
        du, u_s = self._interval(t, s, like)
        # A: decay over (s, t]; C: decay over (0, s]; B = A C: decay over (0, t]. 1 - e^{-2u} via expm1 keeps
        # precision at small t, where the variances are tiny differences of numbers close to 1.
        var_ts = -torch.expm1(-2 * du)
        var_s0 = -torch.expm1(-2 * u_s)
        var_t0 = -torch.expm1(-2 * (u_s + du))
        return torch.exp(-du), torch.exp(-u_s), var_ts, var_s0, var_t0

    def reverse_optimum_step(
        self, x_t: Tensor, x0: Tensor, mu: Tensor | None, t: TimeIndex, s: TimeIndex | None = None
    ) -> Tensor:
        """Mean of x_s | x_t, x0 (default s = t-1); for s < t-1 it uses the exact OU transition s -> t."""
        level = self._level(x0, mu)
        a, c, var_ts, var_s0, var_t0 = self._posterior_factors(t, s, x_t)
        return level + (a * var_s0 * (x_t - level) + c * var_ts * (x0 - level)) / var_t0

    def reverse_optimum_std(self, t: TimeIndex, s: TimeIndex | None = None) -> Tensor:
        """Std of x_s | x_t, x0: lam sqrt((1 - A^2)(1 - C^2) / (1 - B^2)); exactly 0 when s = 0."""
        _, _, var_ts, var_s0, var_t0 = self._posterior_factors(t, s, None)
        return self.max_sigma * torch.sqrt(torch.clamp(var_ts * var_s0 / var_t0, min=0))

    # ------------------------------------------------------------------ sampling states
    def sample_training_state(
        self,
        x0: Tensor,
        mu: Tensor | None,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        return_noise: bool = False,
    ) -> tuple[Tensor, ...]:
        """(t, x_t) with t uniform in 1..T (or the given LongTensor) and x_t = mu_bar + sigma_bar * N(0, 1).

        With ``return_noise`` the unit noise is returned as a third element.
        """
        if t is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            t = torch.randint(1, self.T + 1, (x0.shape[0],), generator=generator, device=gen_device)
        t = t.reshape(-1).long().to(x0.device)
        noise = randn_like(x0, generator)
        x_t = self.mu_bar(x0, mu, t) + self._at(self.sigma_bars, t, x0) * noise
        return (t, x_t, noise) if return_noise else (t, x_t)

    def noisy_start(self, mu: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_T = mu + lam * N(0, 1), where the reverse process starts (official noise_state)."""
        return mu + self.max_sigma * randn_like(mu, generator)


class DenoisingIRSDE(IRSDE):
    """Section 4.3 (official ``DenoisingSDE``): the process reverts to the clean image, mu = x0.

    Then x_t | x0 ~ N(x0, sigma_bar_t^2), so a noisy image of std sigma *is* a state x_{t*} with
    sigma_bar_{t*} ~ sigma, and since mu = x0 is unknown at test time, the reverse drifts replace (x0 - x) by
    sigma_bar^2 * score:

        SDE: -sigma_t^2 (1 + e^{-2 u_t}) score dt / 2,     ODE: -sigma_t^2 e^{-2 u_t} score dt / 2.

    Methods keep the ``mu`` argument for a uniform interface but ignore it (the clean image x0 plays its
    role). The official denoising network is unconditional; the ``mu`` slot of ``model(x_t, mu, t)`` receives
    x_t itself, both in the losses and in the samplers, so a conditional network never sees the clean image.
    """

    def __init__(self, max_sigma: float, T: int = 100, schedule: str = "cosine", eps: float = 0.04):
        super().__init__(max_sigma, T, schedule, eps)

    def _level(self, x0: Tensor, mu: Tensor | None) -> Tensor:
        return x0

    def model_condition(self, x_t: Tensor, mu: Tensor | None) -> Tensor:
        return x_t

    def sde_reverse_drift(
        self, x: Tensor, mu: Tensor | None, score: Tensor, t: TimeIndex, s: TimeIndex | None = None
    ) -> Tensor:
        du, _ = self._interval(t, s, x)
        decay_sq = torch.exp(-2 * self._at(self.elapsed, t, x))
        return -(self.max_sigma**2) * du * (1 + decay_sq) * score

    def ode_reverse_drift(
        self, x: Tensor, mu: Tensor | None, score: Tensor, t: TimeIndex, s: TimeIndex | None = None
    ) -> Tensor:
        du, _ = self._interval(t, s, x)
        decay_sq = torch.exp(-2 * self._at(self.elapsed, t, x))
        return -(self.max_sigma**2) * du * decay_sq * score

    def x0_from_noise(self, x_t: Tensor, noise: Tensor, mu: Tensor | None, t: TimeIndex) -> Tensor:
        return x_t - self._at(self.sigma_bars, t, x_t) * noise

    def optimal_timestep(self, sigma: float, eps: float = 1e-6) -> int:
        """The timestep t* whose marginal std matches a noise std ``sigma`` (official get_optimal_timestep).

        ``sigma`` follows the ``max_sigma`` convention (>= 1 means 0..255 units); 0 gives t* = 0 (no step).
        """
        sigma = to_unit_sigma(float(sigma))
        if sigma <= 0:
            return 0
        if sigma > self.max_sigma:
            raise ValueError(f"noise std {sigma:.4g} exceeds the SDE's max_sigma {self.max_sigma:.4g}")
        # Solve lam^2 (1 - e^{-2u}) = sigma^2 for u; eps keeps the log finite at sigma = max_sigma.
        target = -0.5 * math.log(1 - sigma**2 / self.max_sigma**2 + eps)
        return int(torch.argmin((self.elapsed.cpu().double() - target).abs()))
