"""Few-step samplers for IR-SDE: MR Sampler (Li et al., ICLR 2025), i.e. DPM-Solver++ on the mean-reverting SDE.

The forward process of ``irsde.sde.IRSDE`` is linear in y = x - mu:

    y_t = alpha_t y_0 + sigma_t eps,    alpha_t = e^{-u_t},    sigma_t = sigma_bar_t = lam sqrt(1 - e^{-2 u_t}),

(u_t = ``sde.elapsed[t]``, lam = ``sde.max_sigma``), a VP-type linear SDE dy = f y dt + g dw with f = -theta,
g^2 = 2 lam^2 theta = d sigma^2/dt - 2 f sigma^2. So the exponential integrators of DPM-Solver++ (Lu et al. 2022,
arXiv 2211.01095) apply verbatim in y, with the log-SNR clock lambda_t = log(alpha_t / sigma_t). MR Sampler
(arXiv 2502.07856) writes the same updates in x, with an extra mu term; in y that term is absorbed.

Data prediction from the noise network ``model(x_t, mu, t)``:   y0_hat = (y_t - sigma_t eps_hat) / alpha_t.

With h = lambda_s - lambda_t for a step t -> s (s < t, h > 0) and D_0 = y0_hat(t):

* ODE, order 1 (DDIM):  y_s = (sigma_s / sigma_t) y_t - alpha_s phi_1 D_0,              phi_1 = e^{-h} - 1
* ODE, order 2 (2M):    ... + alpha_s phi_2 D_1,                                        phi_2 = phi_1 / h + 1
* ODE, order 3 (3M):    ... + alpha_s phi_2 D_1 - 2 alpha_s phi_3 D_2,                  phi_3 = phi_2 / h - 1/2
* SDE, order 1:         y_s = (sigma_s / sigma_t) e^{-h} y_t + alpha_s (1 - e^{-2h}) D_0 + sigma_s sqrt(1 - e^{-2h}) z
* SDE, order 2:         ... + alpha_s (1 - (1 - e^{-2h}) / (2h)) D_1

D_1 ~ h d y0_hat / d lambda and D_2 ~ (h^2 / 2) d^2 y0_hat / d lambda^2 are backward differences of the previous
data predictions (the Taylor-type "phi" coefficients are the exact integrals of e^{lambda} (lambda - lambda_t)^k / k!
over the step, as in MR Sampler's ``step_ode_2nd/3rd`` and DPM-Solver's ``solver_type='taylor'``). Note the 2 in
the 3M term: with D_2 defined as in dpm_solver_pytorch.py (``multistep_dpm_solver_third_update``), D_2 is half the
scaled second derivative, and its coefficient ``alpha_t * phi_3`` then leaves an O(h^3) local error: only second
order overall (error slope 2.30 against 3.06 with the 2, over 64..512 steps in tests/unit/test_mr_sampler.py).

Time grid and the network's time input: the IR-SDE network was trained at integer timesteps, so ``mr_timesteps``
returns integers T = t_K > ... > t_1 > t_0 = 0 and alpha, sigma, lambda are read at them from the sde tables
(``exp(-elapsed[t])`` and ``sigma_bars[t]``, the very numbers x_t was built from in training). The model gets
t as a LongTensor of shape (B,), like every sampler in irsde/samplers.py.

* ``grid="logsnr"`` (default): K timesteps whose log-SNR is uniform between lambda_T and lambda_1, rounded to the
  nearest integer and made distinct, then 0.
* ``grid="uniform"``: ``irsde.samplers.timestep_grid`` (evenly spaced in t, the grid of the other samplers).

The last step lands on t = 0, where sigma = 0 and lambda = +inf: there the update is the h -> inf limit of the
first-order step, x_0 = mu + alpha_0 y0_hat(t_1) = x0_hat (DPM-Solver's final denoise; the posterior sampler
ends the same way). The multistep corrections have no finite limit there, so the final step is always first
order. Each sampler evaluates the network once per step: NFE = steps = len(times) - 1.

Continuous times: pass ``times`` (a decreasing list of floats) and an sde object with methods ``alpha(t)`` and
``sigma(t)`` (plus ``noisy_start`` and ``model_condition``): alpha, sigma are then read from those and the model
gets t as a float tensor. This is how the tests measure the convergence order on an exactly uniform lambda grid;
``times`` may also end at a positive time (no final denoise; the state there is returned). Such an object with
``denoising = True`` (and ``max_sigma``) is sampled as the denoising variant below, from ``mu`` at times[0].

The denoising variant (``DenoisingIRSDE``, paper section 4.3): the level is the clean image itself (mu = x0), so

    x_t = x0 + sigma_t eps,    alpha_t = 1,    sigma_t = sigma_bar_t = lam sqrt(1 - e^{-2 u_t}),

(``DenoisingIRSDE.mu_bar`` is x0, ``x0_from_noise`` is x_t - sigma_bar eps): a variance-exploding process in x
itself (y = x, no level to subtract), lambda_t = -log sigma_bar_t, data prediction x0_hat = x_t - sigma_t eps_hat.
The noisy input is the state at t*(sigma) (``DenoisingIRSDE.optimal_timestep``), where these samplers start, as
``irsde.samplers.denoise_ode`` / ``denoise_sde`` do: pass ``sigma`` (0..255 or [0, 1] units, ``to_unit_sigma``)
and the noisy image as ``mu``; steps = min(steps, t*) network evaluations (none when t* = 0: the input is
returned), on the grid above between t* and 0. The network's condition is ``sde.model_condition(x_t, None)``
(= x_t, as in ``_denoise``).

* ODE: the official denoising ODE dx = lam^2 e^{-2u} score du (``ode_reverse_drift``) is the probability-flow ODE
  of this VE process (d sigma_bar^2 / du = 2 lam^2 e^{-2u}), so mr_ode is DPM-Solver++ for VE, the formulas above
  with alpha = 1. Order 1 is DDIM, x_s = x_t - (sigma_t - sigma_s) eps_hat; ``denoise_ode`` is Euler in u on the
  same ODE, x_s = x_t - lam^2 e^{-2 u_t} (u_t - u_s) eps_hat / sigma_t: the first-order Taylor expansion in u of
  sigma_t - sigma_s, so the two agree to O(du^2) per step, not exactly. With alpha = 1 nothing damps the O(h^2)
  local error of the first-order warm-up step (on IR-SDE alpha_T = 0.005 does), so on lambda-uniform grids the
  3M solver is globally second order here; it is third order once the warm-up steps are shorter (tests).
* SDE: the official denoising reverse SDE (``DenoisingIRSDE.sde_reverse_drift`` / ``dispersion``) is not the
  standard reverse SDE of the VE process: with v = sigma_bar^2 it reads dx = -(1 + eta^2)/2 score dv + eta dw,
  eta^2 = e^{2u} = lam^2 / (lam^2 - v) (more noise than VE's eta = 1). Its linear part is solved exactly with the
  integrating factor Phi = v / sqrt(lam^2 - v); on the clock tau = -log Phi = -2 log sigma + log(lam^2 - sigma^2)/2
  (H = tau_s - tau_t) the update is the SDE-DPM-Solver++ form with rate 1:

      x_s = e^{-H} x_t + (1 - e^{-H}) D_0 [+ (H - 1 + e^{-H}) (D_0 - D_{-1}) / H_0] + std z,
      std = (sigma_s / sigma_t) lam sqrt((sigma_t^2 - sigma_s^2) / (lam^2 - sigma_s^2)),

  whose order 1 is the exact Gaussian posterior of the OU process that reverts to x0 (``reverse_optimum_step`` /
  ``reverse_optimum_std`` with x0_hat), like mr_sde order 1 on IR-SDE; order 2 takes D linear in tau.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from irsde.sde import IRSDE, DenoisingIRSDE, randn_like

if TYPE_CHECKING:  # irsde.samplers may import this module to register MR_SAMPLERS: no import cycle at runtime
    from irsde.samplers import Callback, Model

GRIDS = ("logsnr", "uniform")


# ---------------------------------------------------------------------------------------------- schedule and grid
def _continuous(sde) -> bool:
    """An sde object with its own alpha(t) / sigma(t) (continuous times) rather than the IRSDE tables."""
    return callable(getattr(sde, "alpha", None))


def _denoising(sde) -> bool:
    """The section-4.3 variant: x_t = x0 + sigma_t eps, sampled from the noisy input at t* (no level mu)."""
    return isinstance(sde, DenoisingIRSDE) or bool(getattr(sde, "denoising", False))


def alpha_sigma(sde, t: float) -> tuple[float, float]:
    """(alpha_t, sigma_t): from ``sde.alpha`` / ``sde.sigma`` when it has them, else the IRSDE tables at integer t
    (alpha = e^{-u_t} for IRSDE, 1 for DenoisingIRSDE; sigma = sigma_bar_t for both)."""
    if _continuous(sde):
        return float(sde.alpha(t)), float(sde.sigma(t))
    if t != int(t):
        raise ValueError(f"IR-SDE tables are defined at integer timesteps, got t={t}")
    sigma = float(sde.sigma_bars[int(t)])
    if isinstance(sde, DenoisingIRSDE):
        return 1.0, sigma
    return math.exp(-float(sde.elapsed[int(t)])), sigma


def log_snr(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma); +inf at sigma = 0 (t = 0)."""
    return math.log(alpha / sigma) if sigma > 0 else math.inf


def mr_timesteps(sde: IRSDE, steps: int, grid: str = "logsnr", start: int | None = None) -> list[int]:
    """Decreasing integer timesteps T = t_K > ... > t_1 > t_0 = 0 (K = steps network evaluations, at t_K..t_1);
    ``start`` (default sde.T) replaces T, e.g. t*(sigma) for the denoising variant.

    "logsnr": t_K..t_1 uniform in lambda from lambda_T to lambda_1 (so t_1 = 1), each the nearest integer to the
    time of that lambda (linear interpolation of t in lambda), then nudged apart where rounding made two equal.
    "uniform": evenly spaced in t, ``irsde.samplers.timestep_grid(T, steps)``."""
    T = sde.T if start is None else int(start)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    if not 1 <= T <= sde.T:
        raise ValueError(f"start must be in 1..{sde.T}, got {T}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    if grid == "uniform":
        from irsde.samplers import timestep_grid

        return timestep_grid(T, steps)
    if steps == 1:
        return [T, 0]
    t_int = np.arange(1, T + 1)
    lam = np.array([log_snr(*alpha_sigma(sde, int(t))) for t in t_int])  # decreasing in t
    targets = np.linspace(lam[-1], lam[0], steps)  # lambda_T .. lambda_1, increasing
    ts = np.rint(np.interp(targets, lam[::-1], t_int[::-1].astype(float))).astype(int).tolist()
    ts[0], ts[-1] = T, 1
    for k in range(steps - 2, 0, -1):  # from t_1 upwards: at least one above the next smaller one
        ts[k] = max(ts[k], ts[k + 1] + 1)
    for k in range(1, steps):  # from T downwards: at most one below the previous; keeps t_1 >= 1 since K <= T
        ts[k] = min(ts[k], ts[k - 1] - 1)
    return [int(t) for t in ts] + [0]


# ---------------------------------------------------------------------------------------------- one-step updates
def data_prediction(y: Tensor, eps: Tensor, alpha: float, sigma: float) -> Tensor:
    """y0_hat = (y_t - sigma_t eps_hat) / alpha_t, i.e. x0_hat = mu + (x_t - mu - sigma_t eps_hat) / alpha_t."""
    return (y - sigma * eps) / alpha


def ode_step_1(y: Tensor, d0: Tensor, h: float, ratio: float, alpha_s: float) -> Tensor:
    """DPM-Solver++(1) = DDIM: y_s = (sigma_s/sigma_t) y_t - alpha_s (e^{-h} - 1) D_0."""
    return ratio * y - alpha_s * math.expm1(-h) * d0


def ode_step_2(y, d0, d1, h: float, h0: float, ratio: float, alpha_s: float) -> Tensor:
    """DPM-Solver++(2M), Taylor form: + alpha_s phi_2 D_1 with D_1 = (D_0 - D_{-1}) h / h_0."""
    phi1 = math.expm1(-h)
    phi2 = phi1 / h + 1
    slope = (d0 - d1) * (h / h0)
    return ratio * y - alpha_s * phi1 * d0 + alpha_s * phi2 * slope


def ode_step_3(y, d0, d1, d2, h: float, h0: float, h1: float, ratio: float, alpha_s: float) -> Tensor:
    """DPM-Solver++(3M): D_1 ~ h y0', D_2 ~ h^2 y0'' / 2 from backward differences (h_0, h_1: previous steps)."""
    r0, r1 = h0 / h, h1 / h
    d1_0 = (d0 - d1) / r0
    d1_1 = (d1 - d2) / r1
    slope = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
    curv = (d1_0 - d1_1) / (r0 + r1)
    phi1 = math.expm1(-h)
    phi2 = phi1 / h + 1
    phi3 = phi2 / h - 0.5
    return ratio * y - alpha_s * phi1 * d0 + alpha_s * phi2 * slope - 2 * alpha_s * phi3 * curv


def sde_step(y, d0, d1, h: float, h0: float | None, ratio: float, alpha_s: float, sigma_s: float, z) -> Tensor:
    """SDE-DPM-Solver++(1) (d1 None) or (2M): y_s = (sigma_s/sigma_t) e^{-h} y_t + alpha_s (1 - e^{-2h}) D_0
    [+ alpha_s (1 - (1 - e^{-2h}) / (2h)) D_1] + sigma_s sqrt(1 - e^{-2h}) z."""
    one_m_e2 = -math.expm1(-2 * h)
    out = ratio * math.exp(-h) * y + alpha_s * one_m_e2 * d0 + sigma_s * math.sqrt(one_m_e2) * z
    if d1 is not None:
        out = out + alpha_s * (1 - one_m_e2 / (2 * h)) * (d0 - d1) * (h / h0)
    return out


def denoise_clock(sigma: float, max_sigma: float) -> float:
    """tau = -log Phi, Phi = sigma^2 / sqrt(lam^2 - sigma^2): the clock on which the official denoising reverse SDE
    has rate 1 (+inf at sigma = 0)."""
    if sigma <= 0:
        return math.inf
    return -2 * math.log(sigma) + 0.5 * math.log(max_sigma**2 - sigma**2)


def denoise_sde_std(sigma_t: float, sigma_s: float, max_sigma: float) -> float:
    """Std of the exact solution over one step: (sigma_s/sigma_t) lam sqrt((sigma_t^2 - sigma_s^2)/(lam^2 - sigma_s^2)),
    the posterior std of the OU process that reverts to x0 (``IRSDE.reverse_optimum_std``)."""
    return sigma_s / sigma_t * max_sigma * math.sqrt((sigma_t**2 - sigma_s**2) / (max_sigma**2 - sigma_s**2))


def denoise_sde_step(x, d0, d1, H: float, H0: float | None, std: float, z) -> Tensor:
    """The official denoising reverse SDE, linear part exact, D constant (d1 None) or linear in tau (2M):
    x_s = e^{-H} x_t + (1 - e^{-H}) D_0 [+ (H - 1 + e^{-H}) (D_0 - D_{-1}) / H_0] + std z."""
    one_m = -math.expm1(-H)
    out = math.exp(-H) * x + one_m * d0 + std * z
    if d1 is not None:
        out = out + ((H - one_m) / H0) * (d0 - d1)
    return out


# ---------------------------------------------------------------------------------------------- samplers
class _Run:
    """What both samplers share: the times, (alpha, sigma) at each, the start state and how to call the model.

    IR-SDE: y = x - mu from x_T (``noisy_start`` unless given), the model conditioned on mu. Denoising variant: y = x
    from the noisy input ``mu`` at t*(sigma) (or at times[0]), the model conditioned on ``model_condition(x, None)``.
    """

    def __init__(self, sde, mu, steps, grid, times, x_T, generator, sigma):
        self.sde, self.denoising = sde, _denoising(sde)
        if self.denoising:
            if x_T is not None:
                raise ValueError("the denoising variant starts from the noisy input itself (passed as mu), not x_T")
            if times is None:
                if sigma is None:
                    raise ValueError("the denoising variant needs the input's noise level: sigma=25 (0..255 units)")
                start = sde.optimal_timestep(sigma)
                if steps is not None and steps < 1:
                    raise ValueError(f"steps must be >= 1, got {steps}")
                # Like denoise_ode / denoise_sde: never more steps than t*; t* = 0 takes none.
                steps = start if steps is None else min(steps, start)
                times = mr_timesteps(sde, steps, grid, start=start) if start > 0 else [0]
            elif sigma is not None:
                raise ValueError("pass sigma (start at t*(sigma)) or times, not both")
        elif sigma is not None:
            raise ValueError("sigma= is for the denoising variant (DenoisingIRSDE); IR-SDE starts at T from mu")
        if times is None:
            times = mr_timesteps(sde, sde.T if steps is None else steps, grid)
        elif steps is not None and steps != len(times) - 1:
            raise ValueError(f"steps={steps} but {len(times) - 1} intervals in times")
        times = list(times)
        if times != [0] and (len(times) < 2 or any(a <= b for a, b in zip(times[:-1], times[1:]))):
            raise ValueError(f"times must be strictly decreasing with at least 2 entries, got {times}")
        self.times = times
        self.coeffs = [alpha_sigma(sde, t) for t in times]
        if self.denoising:
            self.level, self.cond, x = 0.0, None, mu.clone()
        else:
            self.level, self.cond = mu, mu
            x = sde.noisy_start(mu, generator) if x_T is None else x_T.clone()
        self.y = x - self.level

    def eps(self, model: Model, y: Tensor, t: float) -> Tensor:
        x = y + self.level
        return model(x, self.sde.model_condition(x, self.cond), _model_time(self.sde, t, y))


def _model_time(sde, t: float, x: Tensor) -> Tensor:
    """(B,) timesteps for the network: LongTensor on the IRSDE tables, float tensor for continuous schedules."""
    if _continuous(sde):
        return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _pairs(times: list, progress: bool, desc: str):
    pairs = list(enumerate(zip(times[:-1], times[1:])))
    if progress:
        from core.progress import bar

        return bar(pairs, desc=desc, leave=False)
    return pairs


@torch.no_grad()
def mr_ode(
    sde: IRSDE,
    model: Model,
    mu: Tensor,
    steps: int | None = None,
    order: int = 2,
    grid: str = "logsnr",
    times: Sequence[float] | None = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    sigma: float | None = None,
) -> Tensor:
    """MR Sampler-ODE = multistep DPM-Solver++(order) with data prediction on the probability-flow ODE in y.

    Orders 2 and 3 warm up with lower orders on the first steps (no earlier predictions yet); the step onto t = 0
    is the first-order limit x0_hat. ``callback(i, s, x)`` as in irsde/samplers.py. ``generator`` only draws x_T.
    DenoisingIRSDE: ``mu`` is the noisy image, ``sigma`` its noise level; the run starts at t*(sigma) (module doc)."""
    if order not in (1, 2, 3):
        raise ValueError(f"mr_ode order must be 1, 2 or 3, got {order}")
    run = _Run(sde, mu, steps, grid, times, x_T, generator, sigma)
    times, coeffs, y = run.times, run.coeffs, run.y
    lams, preds = [], []  # log-SNR and data prediction at every evaluated time, most recent last
    for i, (t, s) in _pairs(times, progress, f"MR-ODE-{order}"):
        (alpha_t, sigma_t), (alpha_s, sigma_s) = coeffs[i], coeffs[i + 1]
        eps = run.eps(model, y, t)
        lams.append(log_snr(alpha_t, sigma_t))
        preds.append(data_prediction(y, eps, alpha_t, sigma_t))
        lams, preds = lams[-order:], preds[-order:]
        if sigma_s == 0:  # h = inf: every multistep correction degenerates, the first-order limit is alpha_s D_0
            y = alpha_s * preds[-1]
        else:
            h, ratio, k = log_snr(alpha_s, sigma_s) - lams[-1], sigma_s / sigma_t, len(preds)
            if k == 1:
                y = ode_step_1(y, preds[-1], h, ratio, alpha_s)
            elif k == 2:
                y = ode_step_2(y, preds[-1], preds[-2], h, lams[-1] - lams[-2], ratio, alpha_s)
            else:
                h0, h1 = lams[-1] - lams[-2], lams[-2] - lams[-3]
                y = ode_step_3(y, preds[-1], preds[-2], preds[-3], h, h0, h1, ratio, alpha_s)
        if callback is not None:
            callback(i, s, y + run.level)
    return y + run.level


@torch.no_grad()
def mr_sde(
    sde: IRSDE,
    model: Model,
    mu: Tensor,
    steps: int | None = None,
    order: int = 2,
    grid: str = "logsnr",
    times: Sequence[float] | None = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    sigma: float | None = None,
) -> Tensor:
    """MR Sampler-SDE = multistep SDE-DPM-Solver++(order), data prediction, fresh N(0, 1) noise from ``generator``
    on every step that does not land on sigma = 0 (order 2 warms up with one first-order step).

    Order 1 is exactly the posterior sampler (irsde.samplers.reverse_posterior): the step's mean is E[y_s | y_t,
    y0_hat] and its noise std sigma_s sqrt(1 - e^{-2h}) the posterior std, so on the same grid and generator both
    give the same samples. DenoisingIRSDE (``mu`` the noisy image, ``sigma`` its noise level, start at t*): the
    exponential integrator of the official denoising reverse SDE on its clock tau (module doc); order 1 is again
    the posterior step of its forward process, with x0_hat for the unknown x0."""
    if order not in (1, 2):
        raise ValueError(f"mr_sde order must be 1 or 2, got {order}")
    run = _Run(sde, mu, steps, grid, times, x_T, generator, sigma)
    times, coeffs, y = run.times, run.coeffs, run.y
    # IR-SDE: the clock is lambda (the step's rate is 2 in it); denoising: tau, rate 1.
    max_sigma = float(sde.max_sigma) if run.denoising else None
    clocks, preds = [], []
    for i, (t, s) in _pairs(times, progress, f"MR-SDE-{order}"):
        (alpha_t, sigma_t), (alpha_s, sigma_s) = coeffs[i], coeffs[i + 1]
        eps = run.eps(model, y, t)
        clocks.append(denoise_clock(sigma_t, max_sigma) if run.denoising else log_snr(alpha_t, sigma_t))
        preds.append(data_prediction(y, eps, alpha_t, sigma_t))
        clocks, preds = clocks[-order:], preds[-order:]
        if sigma_s == 0:
            y = alpha_s * preds[-1]
            if callback is not None:
                callback(i, s, y + run.level)
            continue
        d1, h0 = (preds[-2], clocks[-1] - clocks[-2]) if len(preds) == 2 else (None, None)
        z = randn_like(y, generator)
        if run.denoising:
            H = denoise_clock(sigma_s, max_sigma) - clocks[-1]
            y = denoise_sde_step(y, preds[-1], d1, H, h0, denoise_sde_std(sigma_t, sigma_s, max_sigma), z)
        else:
            h, ratio = log_snr(alpha_s, sigma_s) - clocks[-1], sigma_s / sigma_t
            y = sde_step(y, preds[-1], d1, h, h0, ratio, alpha_s, sigma_s, z)
        if callback is not None:
            callback(i, s, y + run.level)
    return y + run.level


MR_SAMPLERS = {"mr_ode": mr_ode, "mr_sde": mr_sde}  # order= and grid= are options of both (sigma= when denoising)
