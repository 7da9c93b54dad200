"""IR-SDE as a `core.restorer.Restorer`: a noise network + its SDE + one reverse-time sampler's options."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigError
from core.nn import count_parameters
from core.restorer import Restorer
from irsde import samplers
from irsde.parameterization import as_noise_model, check_prediction
from irsde.sde import IRSDE, DenoisingIRSDE


class IRSDERestorer(Restorer):
    """sampler: a name of irsde.samplers.SAMPLERS; steps: network evaluations (None = T, or t*(sigma) for the
    denoising samplers); sigma: the noise level of the input for the denoising samplers and for mr_ode / mr_sde
    on a denoising checkpoint (0..255 units);
    tile/overlap: run every network evaluation on overlapping tiles (the sampler state stays whole, so the noise
    is seamless); clip_x0: posterior only, clamp the x0 estimate (not official); order / grid: the mr_ode (1-3)
    and mr_sde (1-2) solvers' order and time grid (logsnr | uniform), irsde/mr_sampler.py; prediction: what the
    network outputs (irsde/parameterization.py; a property of the checkpoint, not a user option)."""

    def __init__(self, net: nn.Module, sde: IRSDE, sampler: str = "posterior", steps: int | None = None,
                 sigma: float | None = None, tile: int | None = None, overlap: int = 32,
                 clip_x0: tuple[float, float] | None = None, order: int | None = None, grid: str | None = None,
                 prediction: str = "noise", progress: bool = False) -> None:
        if sampler not in samplers.SAMPLERS:
            raise ConfigError(f"sampler={sampler}: IR-SDE samplers are {', '.join(samplers.SAMPLERS)}")
        # section 4.3: the samplers that start at t*(sigma) from the noisy input (denoise_*, and the MR solvers on
        # a denoising checkpoint) need sigma and take at most t* steps
        mr_on_denoising = sampler.startswith("mr_") and isinstance(sde, DenoisingIRSDE)
        self.denoising = sampler.startswith("denoise") or mr_on_denoising
        if self.denoising and sigma is None:
            raise ConfigError(f"sampler={sampler} needs the noise level of the input: sigma=25 (0..255 units)")
        self.net, self.sde, self.sampler = net, sde, sampler
        self.prediction = check_prediction(prediction)
        self.steps, self.sigma, self.progress = steps, sigma, progress
        self.tile, self.overlap = (int(tile) if tile else None), int(overlap if overlap is not None else 32)
        self.clip_x0 = tuple(clip_x0) if clip_x0 is not None and sampler == "posterior" else None
        self.mr = {k: v for k, v in (("order", order), ("grid", grid)) if v is not None}
        if self.mr and not sampler.startswith("mr_"):
            raise ConfigError(f"order= and grid= are options of sampler=mr_ode|mr_sde, not of sampler={sampler}")
        self.nfe()  # a bad number of steps fails here, before any image is loaded

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, *, generator: torch.Generator | None = None, **conditions) -> torch.Tensor:
        return self.sample(lq, generator).clamp(0, 1)

    def sample(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The sampler's end state from the condition `mu`, unclamped (latent Refusion samples latents)."""
        model = self.net if not self.tile else _tiled(self.net, self.tile, self.overlap, self.progress)
        model = as_noise_model(model, self.sde, self.prediction)
        extra = {"sigma": self.sigma} if self.denoising else {}  # mu is the noisy image there
        if self.clip_x0 is not None:
            extra["clip_x0"] = self.clip_x0
        extra.update(self.mr)
        return samplers.restore(self.sampler, self.sde, model, mu, steps=self.steps, generator=generator,
                                progress=self.progress, **extra)

    def nfe(self) -> int:
        start = self.sde.optimal_timestep(self.sigma) if self.denoising else self.sde.T
        steps = int(self.steps or start)
        if not 1 <= steps <= self.sde.T:
            raise ConfigError(f"steps={steps}: IR-SDE takes 1..{self.sde.T} steps (model.sde.T)")
        return min(steps, start)  # the denoising samplers start at t*(sigma), never more steps than that

    def describe(self) -> str:
        params = count_parameters(self.net) / 1e6
        predicts = "" if self.prediction == "noise" else f" ({self.prediction} prediction)"
        return (f"IR-SDE {type(self.net).__name__}{predicts}, {params:.2f} M params, sampler {self.sampler}, "
                f"{self.nfe()} NFEs")

    def settings(self) -> dict:
        return {"name": self.sampler, "steps": self.nfe(), "T": self.sde.T, **self.mr}


def _tiled(net: nn.Module, tile: int, overlap: int, progress: bool = False):
    from core.tiling import tiled_apply

    def run(x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return tiled_apply(lambda a, b: net(a, b, t), [x_t, mu], tile=tile, overlap=overlap, progress=progress)

    return run
