"""Training DiffPIR's prior: an unconditional DDPM (LightningModule) on any data module's clean images.

The recipe of guided-diffusion's unconditional models with L_simple (Ho et al. 2020): x0 in [-1, 1], t uniform
in [0, T), x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, loss = mean ||ε − ε_θ(x_t, t)||², linear betas 1e-4..0.02,
T = 1000, EMA of the weights. A network with learned-variance channels (out_channels = 2C, like the released
priors) is trained on its ε half only; DiffPIR ignores the other half (guided-diffusion's hybrid loss would
train it with the variational bound: not needed for DiffPIR's sampler).

Validation restores the validation images with DiffPIR (`val_task`, measurements simulated from the ground
truth, few NFEs), so val/psnr tracks what the prior is for.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.schedules import add_noise
from core.training import RestorationModule
from diffpir.schedule import DDPMSchedule


class DDPMPriorModule(RestorationModule):
    """net: an ε-network `net(x_t, t)` (diffpir.prior.unet.GuidedUNet); schedule: DDPMSchedule arguments;
    val_task: diffpir.restorer.DiffPIRRestorer arguments for validation (task, nfe, noise level ...)."""

    def __init__(self, net: nn.Module, schedule: dict | None = None, val_task: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.schedule_cfg = dict(schedule or {})
        self.schedule = DDPMSchedule(**self.schedule_cfg)
        # float32 copies for training, moved with the module; the float64 tables stay in self.schedule
        self.register_buffer("sqrt_ab", self.schedule.sqrt_alphas_cumprod.float(), persistent=False)
        self.register_buffer("sqrt_1mab", self.schedule.sqrt_one_minus_alphas_cumprod.float(), persistent=False)
        self.val_task = {"task": "inpainting", "mask": "box", "nfe": 20, **dict(val_task or {})}
        self.setup_ema()

    # -- training ---------------------------------------------------------------------------------------------
    def noised(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, per image."""
        return add_noise(x0, noise, t, self.sqrt_ab, self.sqrt_1mab)

    def predict_noise(self, net: nn.Module, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = net(x_t, t)
        return out[:, : x_t.shape[1]]  # the ε half of a learned-variance output

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = self.to_memory_format(batch["gt"]) * 2.0 - 1.0
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        eps = self.predict_noise(self.net, self.noised(x0, t, noise), t)
        return F.mse_loss(eps.float(), noise.float()), {}

    # -- restoration: DiffPIR with this prior -----------------------------------------------------------------
    def restorer(self, steps: int | None = None, tile: int | None = None, overlap: int | None = None,
                 progress: bool = False, net: nn.Module | None = None):
        """DiffPIR with this prior for `val_task` (the validation task, or evaluate.py's model=diffpir task);
        steps = NFEs."""
        from core.errors import ConfigError
        from diffpir.restorer import DiffPIRRestorer

        if tile:
            raise ConfigError("DiffPIR restores whole images (its data step is global): drop tile=")
        task = {"prior_name": "this prior", **self.val_task, **({"nfe": int(steps)} if steps else {})}
        return DiffPIRRestorer(net if net is not None else self.eval_net, schedule=self.schedule,
                               progress=progress, **task)
