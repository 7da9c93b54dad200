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
        return self.sqrt_ab[t].view(-1, 1, 1, 1) * x0 + self.sqrt_1mab[t].view(-1, 1, 1, 1) * noise

    def predict_noise(self, net: nn.Module, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = net(x_t, t)
        return out[:, : x_t.shape[1]]  # the ε half of a learned-variance output

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = self.to_memory_format(batch["gt"]) * 2.0 - 1.0
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        eps = self.predict_noise(self.net, self.noised(x0, t, noise), t)
        return F.mse_loss(eps.float(), noise.float()), {}

    # -- validation: DiffPIR with this prior ------------------------------------------------------------------
    def restorer(self, **overrides: Any):
        from diffpir.restorer import DiffPIRRestorer

        return DiffPIRRestorer(self.eval_net, schedule=self.schedule, prior_name="this prior",
                               **{**self.val_task, **overrides})

    def prepare_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The validation task's measurement of the batch's ground truth (evaluate.py calls this too)."""
        return self.restorer().prepare_batch(batch, generator)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator(device=batch["gt"].device).manual_seed(int(batch["index"][0]))
        super().validation_step(self.prepare_batch(batch, generator), batch_idx)

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """DiffPIR restoration of measurements `lq` for the validation task (mask= / kernel= as that needs)."""
        return self.restorer().restore(lq, generator=generator, **options)

    @property
    def restore_inputs(self) -> tuple[str, ...]:
        return ("mask", "kernel")

    def nfe(self, **options: Any) -> int:
        return self.restorer().nfe(**options)

    def describe(self) -> str:
        params = sum(p.numel() for p in self.net.parameters()) / 1e6
        return (f"DDPM prior {type(self.net).__name__}, {params:.2f} M params, T={self.schedule.T}, "
                f"{'EMA' if self.use_ema else 'raw'} weights; restores with DiffPIR {self.val_task['task']}")

    def sampler_summary(self, **options: Any) -> dict:
        return self.restorer().sampler_summary(**options)
