"""Reverse-time samplers of IR-SDE: one function per sampler, the noise network passed in.

``model(x_t, mu, t) -> predicted noise`` with ``t`` a LongTensor of shape (B,). Every sampler calls the model
exactly once per step, so the number of network evaluations is NFE = steps (default ``sde.T``; for the
denoising samplers the default and the upper bound is t*(sigma)).

Skipping steps: with ``steps`` < T the timesteps are an evenly spaced, rounded sub-sequence
T = t_K > ... > t_0 = 0, and each update integrates over the whole interval (s, t]:
- Euler-type SDE/ODE steps use the reversion time elapsed over the interval, i.e. the thetas of the skipped
  steps summed (times dt), in place of theta_t dt, and a Brownian increment of variance 2 lam^2 times that sum
  (``IRSDE.sde_reverse_drift`` / ``ode_reverse_drift`` / ``dispersion`` with ``s``);
- the posterior sampler uses the exact Gaussian posterior of x_s given x_t and x0 (OU transition s -> t).
With ``steps == T`` every sampler reproduces the official one-step-at-a-time update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from irsde.mr_sampler import MR_SAMPLERS
from irsde.sde import IRSDE, DenoisingIRSDE, randn_like

Model = Callable[[Tensor, Tensor, Tensor], Tensor]
Callback = Callable[[int, int, Tensor], None]


def timestep_grid(start: int, steps: int | None = None) -> list[int]:
    """Evenly spaced integer timesteps start = t_K > ... > t_0 = 0 (K = steps, default start: every step)."""
    steps = start if steps is None else steps
    if not 1 <= steps <= start:
        raise ValueError(f"steps must be in 1..{start}, got {steps}")
    # Integer rounding of start * k / steps; the spacing is >= 1, so the timesteps are distinct.
    return [(start * k + steps // 2) // steps for k in range(steps, -1, -1)]


def _intervals(start: int, steps: int | None, progress: bool, desc: str) -> Iterable[tuple[int, int]]:
    grid = timestep_grid(start, steps)
    pairs = list(zip(grid[:-1], grid[1:]))
    if progress:
        from core.progress import bar

        return bar(pairs, desc=desc, leave=False)
    return pairs


def _batch_time(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _start(sde: IRSDE, mu: Tensor, x_T: Tensor | None, generator: torch.Generator | None) -> Tensor:
    return sde.noisy_start(mu, generator) if x_T is None else x_T.clone()


@torch.no_grad()
def reverse_sde(
    sde: IRSDE,
    model: Model,
    mu: Tensor,
    steps: int | None = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Euler-Maruyama on the reverse SDE from x_T to x_0 (official reverse_sde).

    ``callback(i, s, x)`` receives the step index and the state reached at timestep s (all samplers).
    """
    x = _start(sde, mu, x_T, generator)
    for i, (t, s) in enumerate(_intervals(sde.T, steps, progress, "IR-SDE reverse SDE")):
        score = sde.score_from_noise(model(x, sde.model_condition(x, mu), _batch_time(t, x)), t)
        x = sde.reverse_sde_step_mean(x, mu, score, t, s) + sde.dispersion(t, s) * randn_like(x, generator)
        if callback is not None:
            callback(i, s, x)
    return x


@torch.no_grad()
def reverse_ode(
    sde: IRSDE,
    model: Model,
    mu: Tensor,
    steps: int | None = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Euler steps of the probability-flow ODE (official reverse_ode); deterministic once x_T is fixed."""
    x = _start(sde, mu, x_T, generator)
    for i, (t, s) in enumerate(_intervals(sde.T, steps, progress, "IR-SDE reverse ODE")):
        score = sde.score_from_noise(model(x, sde.model_condition(x, mu), _batch_time(t, x)), t)
        x = x - sde.ode_reverse_drift(x, mu, score, t, s)
        if callback is not None:
            callback(i, s, x)
    return x


@torch.no_grad()
def reverse_posterior(
    sde: IRSDE,
    model: Model,
    mu: Tensor,
    steps: int | None = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    stochastic: bool = True,
    clip_x0: tuple[float, float] | None = None,
) -> Tensor:
    """x_s = E[x_s | x_t, x0_hat] (+ posterior std * z if ``stochastic``), x0_hat from the predicted noise.

    Official reverse_posterior. The last step (s = 0) has zero posterior variance and returns x0_hat itself.
    ``clip_x0=(lo, hi)`` clamps x0_hat (not in the official code, off by default): recovering x0 from the noise
    divides by e^{-u_t} (about 1/eps at t = T), so an imperfect network's errors are amplified; clamping to the
    image range keeps an under-trained model's trajectory bounded (the clip_denoised of DDPM samplers).
    """
    x = _start(sde, mu, x_T, generator)
    for i, (t, s) in enumerate(_intervals(sde.T, steps, progress, "IR-SDE posterior")):
        noise = model(x, sde.model_condition(x, mu), _batch_time(t, x))
        x0_hat = sde.x0_from_noise(x, noise, mu, t)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(*clip_x0)
        mean = sde.reverse_optimum_step(x, x0_hat, mu, t, s)
        x = mean + sde.reverse_optimum_std(t, s) * randn_like(x, generator) if stochastic else mean
        if callback is not None:
            callback(i, s, x)
    return x


def _denoise(
    sde: IRSDE,
    model: Model,
    noisy: Tensor,
    sigma: float,
    steps: int | None,
    generator: torch.Generator | None,
    progress: bool,
    callback: Callback | None,
    stochastic: bool,
) -> Tensor:
    if not isinstance(sde, DenoisingIRSDE):
        raise TypeError(f"the denoising samplers need a DenoisingIRSDE, got {type(sde).__name__}")
    t_star = sde.optimal_timestep(sigma)
    x = noisy.clone()
    if t_star == 0:  # noise too weak to be worth a step
        return x
    # A noise level reached in fewer than `steps` timesteps simply uses all of them.
    steps = t_star if steps is None else min(steps, t_star)
    desc = "denoising SDE" if stochastic else "denoising ODE"
    for i, (t, s) in enumerate(_intervals(t_star, steps, progress, desc)):
        score = sde.score_from_noise(model(x, sde.model_condition(x, None), _batch_time(t, x)), t)
        if stochastic:
            x = sde.reverse_sde_step_mean(x, None, score, t, s) + sde.dispersion(t, s) * randn_like(
                x, generator
            )
        else:
            x = x - sde.ode_reverse_drift(x, None, score, t, s)
        if callback is not None:
            callback(i, s, x)
    return x


@torch.no_grad()
def denoise_ode(
    sde: DenoisingIRSDE,
    model: Model,
    noisy: Tensor,
    sigma: float,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Section 4.3: treat ``noisy`` (noise std ``sigma``) as x_{t*} and run the denoising ODE down to 0.

    Official DenoisingSDE.reverse_ode from get_optimal_timestep. NFE = min(steps, t*). ``generator`` is unused
    (the ODE is deterministic) and accepted for a uniform signature.
    """
    return _denoise(sde, model, noisy, sigma, steps, generator, progress, callback, stochastic=False)


@torch.no_grad()
def denoise_sde(
    sde: DenoisingIRSDE,
    model: Model,
    noisy: Tensor,
    sigma: float,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
) -> Tensor:
    """Section 4.3 with the stochastic reverse SDE from t*(sigma) (official DenoisingSDE.reverse_sde)."""
    return _denoise(sde, model, noisy, sigma, steps, generator, progress, callback, stochastic=True)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "sde": reverse_sde,
    "ode": reverse_ode,
    "posterior": reverse_posterior,
    "denoise_ode": denoise_ode,
    "denoise_sde": denoise_sde,
    **MR_SAMPLERS,  # few-step exponential integrators (irsde/mr_sampler.py)
}


def restore(name: str, sde: IRSDE, model: Model, mu: Tensor, **kw) -> Tensor:
    """Run sampler ``name``; for the denoising ones ``mu`` is the noisy image and ``sigma`` is required."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown IR-SDE sampler {name!r}; valid names: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](sde, model, mu, **kw)
