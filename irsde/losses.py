"""IR-SDE training objectives; pick one by name through ``LOSSES``.

Both take ``model(x_t, mu, t) -> predicted noise`` and draw (t, x_t) from the SDE's closed-form marginal.
The mu slot of the model receives ``sde.model_condition(x_t, mu)``: the degraded image, or x_t itself for
``DenoisingIRSDE``, where mu is the clean image and may be passed as None.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from irsde.sde import IRSDE

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def _distance(pred: Tensor, target: Tensor, loss_type: str, reduction: str) -> Tensor:
    if loss_type == "l1":
        per_pixel = (pred - target).abs()
    elif loss_type == "l2":
        per_pixel = (pred - target) ** 2
    else:
        raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    # Per-sample mean first, like the official MatchingLoss, so "none" gives one value per image.
    per_sample = per_pixel.flatten(1).mean(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def matching_loss(
    sde: IRSDE,
    model: Model,
    x0: Tensor,
    mu: Tensor | None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    loss_type: str = "l1",
    t: Tensor | None = None,
) -> Tensor:
    """Maximum-likelihood trajectory loss (paper eq. 15, official optimize_parameters).

    Distance between the mean of the learned reverse-SDE step from x_t and the optimal x*_{t-1} of
    Proposition 3.2.
    ``t`` (LongTensor (B,)) fixes the timesteps instead of drawing them uniformly from 1..T.
    """
    t, x_t = sde.sample_training_state(x0, mu, generator, t=t)
    noise = model(x_t, sde.model_condition(x_t, mu), t)
    score = sde.score_from_noise(noise, t)
    predicted = sde.reverse_sde_step_mean(x_t, mu, score, t)
    target = sde.reverse_optimum_step(x_t, x0, mu, t)
    return _distance(predicted, target, loss_type, reduction)


def noise_matching_loss(
    sde: IRSDE,
    model: Model,
    x0: Tensor,
    mu: Tensor | None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    loss_type: str = "l2",
    t: Tensor | None = None,
) -> Tensor:
    """Plain noise matching (paper eq. 10): predict the noise that made x_t; L2 by default (as DDPM)."""
    t, x_t, noise = sde.sample_training_state(x0, mu, generator, t=t, return_noise=True)
    predicted = model(x_t, sde.model_condition(x_t, mu), t)
    return _distance(predicted, noise, loss_type, reduction)


LOSSES: dict[str, Callable[..., Tensor]] = {"matching": matching_loss, "noise": noise_matching_loss}
