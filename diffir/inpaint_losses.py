"""The LaMa losses DiffIR-inpainting trains with, besides the masked L1 (``diffir.losses.PixelLoss`` with known /
missing weights 10 / 0) and the high-receptive-field perceptual loss (``diffir.hrf_perceptual``).

Masks here are LaMa's ``missing`` masks: N x 1 x H x W, 1 = pixel to fill (the suite's batches carry the opposite,
``known = 1 - missing``).

* Non-saturating adversarial loss with R1 (LaMa's ``NonSaturatingWithR1``, saicinpainting/training/losses/
  adversarial.py), for logits ``D(.)``:
  generator ``weight * mean(softplus(-D(fake)))``;
  discriminator ``mean(softplus(-D(real))) + gp_coef * R1 + mean(m * softplus(D(fake)) + (1 - m) *
  softplus(-D(fake)))`` with ``R1 = mean_n ||d sum D(real) / d real_n||^2``. With ``mask_as_fake_target`` the
  discriminator learns to call only the filled pixels fake (``m`` = the missing mask resized to the logits with
  ``mask_scale_mode``); without it every fake pixel is fake. The discriminator term carries no weight.
* Feature matching (LaMa's ``feature_matching_loss`` without a mask): the mean over the discriminator's blocks of
  the mean squared difference between its features of the fake and of the real image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from core.errors import ConfigError

MASK_SCALE_MODES = ("nearest", "maxpool", "bilinear", "bicubic", "area")


def scale_mask(mask: torch.Tensor, shape: Sequence[int], mode: str = "nearest") -> torch.Tensor:
    """The mask at the logits' size (LaMa's ``interpolate_mask`` with allow_scale_mask)."""
    if tuple(mask.shape[-2:]) == tuple(shape):
        return mask
    if mode == "maxpool":
        return F.adaptive_max_pool2d(mask, tuple(shape))
    return F.interpolate(mask, size=tuple(shape), mode=mode)


def r1_penalty(real_pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared gradient norm of sum D(real) w.r.t. each real image (in the graph, so
    the discriminator's step differentiates it; ``real`` must require grad)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    return grad.flatten(1).norm(2, dim=1).pow(2).mean()


def feature_matching_loss(fake_features: Sequence[torch.Tensor], real_features: Sequence[torch.Tensor]
                          ) -> torch.Tensor:
    """Mean over blocks of mean((fake - real)^2); the real features act as constants."""
    terms = [F.mse_loss(fake, real.detach()) for fake, real in zip(fake_features, real_features, strict=True)]
    return torch.stack(terms).mean()


class NonSaturatingR1:
    """LaMa's adversarial loss as configured (official: weight 10, gp_coef 0.001, mask_as_fake_target true,
    allow_scale_mask true with LaMa's default mask_scale_mode 'nearest')."""

    def __init__(self, weight: float = 10.0, gp_coef: float = 0.001, mask_as_fake_target: bool = True,
                 mask_scale_mode: str = "nearest") -> None:
        if mask_scale_mode not in MASK_SCALE_MODES:
            raise ConfigError(f"model.adversarial.mask_scale_mode={mask_scale_mode!r}: use one of "
                              f"{', '.join(MASK_SCALE_MODES)}")
        self.weight, self.gp_coef = float(weight), float(gp_coef)
        self.mask_as_fake_target, self.mask_scale_mode = bool(mask_as_fake_target), mask_scale_mode

    def generator_loss(self, fake_pred: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake_pred).mean() * self.weight

    def discriminator_loss(self, real_pred: torch.Tensor, fake_pred: torch.Tensor, real: torch.Tensor,
                           missing: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, values to log); ``real`` is the image ``real_pred`` was computed from, requiring grad."""
        r1 = r1_penalty(real_pred, real)
        fake_loss = F.softplus(fake_pred)
        if self.mask_as_fake_target:
            m = scale_mask(missing.to(fake_pred.dtype), fake_pred.shape[-2:], self.mask_scale_mode)
            fake_loss = m * fake_loss + (1.0 - m) * F.softplus(-fake_pred)
        real_loss = F.softplus(-real_pred).mean()
        fake_loss = fake_loss.mean()
        loss = real_loss + self.gp_coef * r1 + fake_loss
        return loss, {"l_d_real": real_loss.detach(), "l_d_fake": fake_loss.detach(), "r1": r1.detach()}
