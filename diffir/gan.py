"""Adversarial losses as BasicSR's ``GANLoss``: ``loss(pred, target_is_real, is_disc=False)``.

For discriminator logits ``x`` and the target label ``y`` (``real_label_val`` / ``fake_label_val``):

* ``vanilla``: binary cross-entropy with logits against ``y`` (mean over every element);
* ``lsgan``: mean squared error against ``y``;
* ``wgan``: ``-mean(x)`` for a real target, ``mean(x)`` for a fake one;
* ``wgan_softplus``: ``mean(softplus(-x))`` real, ``mean(softplus(x))`` fake (StyleGAN2's logistic loss);
* ``hinge``: discriminator ``mean(relu(1 - x))`` real, ``mean(relu(1 + x))`` fake; generator ``-mean(x)``.

``loss_weight`` multiplies the generator's term only (``is_disc=False``); discriminator terms are unweighted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.errors import ConfigError

GAN_TYPES = ("vanilla", "lsgan", "wgan", "wgan_softplus", "hinge")


class GANLoss:
    def __init__(
        self,
        gan_type: str = "vanilla",
        real_label_val: float = 1.0,
        fake_label_val: float = 0.0,
        loss_weight: float = 1.0,
    ) -> None:
        if gan_type not in GAN_TYPES:
            raise ConfigError(f"model.gan.gan_type={gan_type!r}: use one of {', '.join(GAN_TYPES)}")
        self.gan_type = gan_type
        self.real_label_val, self.fake_label_val = float(real_label_val), float(fake_label_val)
        self.loss_weight = float(loss_weight)

    def _target(self, pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        value = self.real_label_val if target_is_real else self.fake_label_val
        return torch.full_like(pred, value)

    def __call__(self, pred: torch.Tensor, target_is_real: bool, is_disc: bool = False) -> torch.Tensor:
        kind = self.gan_type
        if kind == "vanilla":
            loss = F.binary_cross_entropy_with_logits(pred, self._target(pred, target_is_real))
        elif kind == "lsgan":
            loss = F.mse_loss(pred, self._target(pred, target_is_real))
        elif kind == "wgan":
            loss = -pred.mean() if target_is_real else pred.mean()
        elif kind == "wgan_softplus":
            loss = F.softplus(-pred).mean() if target_is_real else F.softplus(pred).mean()
        elif is_disc:  # hinge, discriminator
            loss = F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()
        else:  # hinge, generator
            loss = -pred.mean()
        return loss if is_disc else loss * self.loss_weight


def generator_discriminator_optimizers(module) -> list[dict]:
    """Lightning's optimizer entries of a manual-optimization GAN recipe (S2-GAN, LaMa inpainting): the generator's
    trainable networks, then the discriminator, each with its optional per-step scheduler."""
    params = [p for net in module.trainable_networks() for p in net.parameters() if p.requires_grad]
    optimizers = (module.optimizer_factory(params), module.optimizer_d_factory(list(module.discriminator.parameters())))
    entries = []
    for optimizer, factory in zip(optimizers, (module.scheduler_factory, module.scheduler_d_factory)):
        entry = {"optimizer": optimizer}
        if factory is not None:
            entry["lr_scheduler"] = {"scheduler": factory(optimizer), "interval": "step"}
        entries.append(entry)
    return entries
