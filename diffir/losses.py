"""DiffIR's training losses: the pixel reconstruction loss and the IPR distillation loss of stage 2.

IPR loss (official ``KDLoss``): for the stage-1 IPR ``z1`` (teacher, detached) and the stage-2 estimate
``z2``, ``l_kd = KL(softmax(z1 / T) || softmax(z2 / T))`` averaged over the batch (no T^2 factor) and
``l_abs = mean |z2 - z1|``, both times ``weight``. Every official sub-project back-propagates ``l_abs`` only
and merely logs ``l_kd``: ``backprop="l_abs"`` (default) does the same, ``backprop="kd+l_abs"`` adds both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.errors import ConfigError

IPR_BACKPROP = ("l_abs", "kd+l_abs")


def ipr_kd_losses(ipr_s2: torch.Tensor, ipr_s1: torch.Tensor, temperature: float = 0.15,
                  weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(l_kd, l_abs) between the estimated IPR (B, D) and the stage-1 IPR, which gets no gradient."""
    teacher = ipr_s1.detach()
    student_log_p = F.log_softmax(ipr_s2 / temperature, dim=1)
    teacher_p = F.softmax(teacher / temperature, dim=1)
    l_kd = F.kl_div(student_log_p, teacher_p, reduction="batchmean")
    l_abs = F.l1_loss(ipr_s2, teacher)
    return weight * l_kd, weight * l_abs


class IPRLoss:
    """The stage-2 IPR loss as configured: returns (loss to back-propagate, values to log)."""

    def __init__(self, weight: float = 1.0, temperature: float = 0.15, backprop: str = "l_abs") -> None:
        if backprop not in IPR_BACKPROP:
            raise ConfigError(f"model.kd.backprop={backprop!r}: use one of {', '.join(IPR_BACKPROP)} "
                              "('l_abs' is the official code, 'kd+l_abs' adds the KL term)")
        self.weight, self.temperature, self.backprop = float(weight), float(temperature), backprop

    def __call__(self, ipr_s2: torch.Tensor, ipr_s1: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        l_kd, l_abs = ipr_kd_losses(ipr_s2, ipr_s1, self.temperature, self.weight)
        loss = l_abs if self.backprop == "l_abs" else l_kd + l_abs
        return loss, {"l_kd": l_kd.detach(), "l_abs": l_abs.detach()}


class PixelLoss:
    """Weighted L1 reconstruction loss.

    With a ``known`` mask (N, 1, H, W; 1 = known pixel, inpainting) each pixel's error is weighted by
    ``known_weight`` or ``missing_weight`` and the mean is taken over every element, as LaMa's
    ``masked_l1_loss`` (the official inpainting recipe uses 10 / 0 next to its adversarial and perceptual
    losses; with the L1 alone the missing region needs a weight, so the suite defaults to 1 / 1 = plain L1).
    """

    def __init__(self, weight: float = 1.0, known_weight: float = 1.0, missing_weight: float = 1.0) -> None:
        self.weight = float(weight)
        self.known_weight, self.missing_weight = float(known_weight), float(missing_weight)

    def __call__(self, restored: torch.Tensor, gt: torch.Tensor, known: torch.Tensor | None = None
                 ) -> torch.Tensor:
        error = (restored - gt).abs()
        if known is not None:
            known = known.to(error.dtype)
            error = error * (known * self.known_weight + (1.0 - known) * self.missing_weight)
        return self.weight * error.mean()
