"""DiffIR stage 1 (Xia et al., ICCV 2023): CPEN_S1 and the DIRformer trained jointly with an L1 loss.

CPEN_S1 sees the low-quality input and the ground truth and produces the IPR that modulates the DIRformer,
so stage 1 restores with the ground-truth prior: ``restore(lq, gt=...)``. Its checkpoint starts stage 2
(``experiment=diffir_s2_<dataset> stage1_ckpt=<this run>/checkpoints/last.ckpt``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

from core.errors import ConfigError
from diffir.module import DiffIRModule


class DiffIRStage1Module(DiffIRModule):
    """net: ``diffir.networks.DiffIRS1``; pixel_loss: ``diffir.losses.PixelLoss`` arguments (weight, and
    known_weight / missing_weight for inpainting); the rest as ``core.training.RestorationModule``."""

    stage = 1

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lq, gt, mask = batch["lq"], batch["gt"], batch.get("mask")
        inp = self.to_memory_format(self.network_input(lq, mask))
        restored, _ = self.net.forward_train(inp, self.to_memory_format(gt))
        l_pix = self.pixel_loss(restored, gt, mask if self.inpainting else None)
        return l_pix, {"l_pix": l_pix.detach()}


class CyclicCosineLR(LRScheduler):
    """BasicSR's ``CosineAnnealingRestartCyclicLR`` (the official GoPro stage-1 schedule).

    Cycle i lasts ``periods[i]`` steps and anneals from ``restart_weights[i] * base_lr`` to ``eta_mins[i]``
    with a half cosine; ``eta_min`` may exceed the base lr (the official first cycle rises from 2e-4 to
    2.85e-4). After the last cycle the last minimum stays. Closed form, so a resumed run gets the same lr.
    Steps are counted as BasicSR's iterations, from 1: the k-th optimizer step (``last_epoch`` k - 1) uses
    the official lr of iteration k.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, periods: Sequence[int],
                 restart_weights: Sequence[float] = (1.0,), eta_mins: Sequence[float] = (0.0,),
                 last_epoch: int = -1) -> None:
        if not (len(periods) == len(restart_weights) == len(eta_mins)):
            raise ConfigError("model.scheduler: periods, restart_weights and eta_mins need one entry per "
                              "cycle")
        self.periods, self.restart_weights = list(periods), list(restart_weights)
        self.eta_mins = list(eta_mins)
        self.ends = [sum(self.periods[: i + 1]) for i in range(len(self.periods))]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, iteration: int, base_lr: float) -> float:
        """The lr of a 1-based iteration."""
        cycle = next((i for i, end in enumerate(self.ends) if iteration <= end), None)
        if cycle is None:
            return self.eta_mins[-1]
        start = self.ends[cycle] - self.periods[cycle]
        eta_min, weight = self.eta_mins[cycle], self.restart_weights[cycle]
        progress = (iteration - start) / self.periods[cycle]
        return eta_min + weight * 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch + 1, base) for base in self.base_lrs]
