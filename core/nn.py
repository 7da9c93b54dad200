"""Small network helpers every method shares: padding to a multiple and cropping back, the channel LayerNorm,
parameter counts."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-5  # Restormer's, NAFNet's and IR-SDE's LayerNorm eps (timm's LayerNorm2d defaults to 1e-6)


def pad_by(x: Tensor, pad_h: int, pad_w: int, mode: str = "reflect") -> Tensor:
    """Pad the bottom and right of an (..., H, W) tensor by ``pad_h`` rows and ``pad_w`` columns.

    Reflection (the official test-time padding of every method here) needs the pad to be smaller than the
    side; on images that small it falls back to edge replication. ``mode`` is any ``F.pad`` mode.
    """
    if pad_h == 0 and pad_w == 0:
        return x
    h, w = x.shape[-2:]
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    # F.pad's reflect / replicate modes want a batched (N, C, H, W) tensor; add and drop dimensions as needed.
    x4 = x if x.ndim == 4 else x.reshape(-1, 1, h, w)
    return F.pad(x4, (0, pad_w, 0, pad_h), mode=mode).reshape(*x.shape[:-2], h + pad_h, w + pad_w)


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> tuple[Tensor, int, int]:
    """Pad the bottom and right (``pad_by``) so H and W become multiples of ``multiple``.

    Returns (padded, pad_h, pad_w): the amounts let a paired image at ``s`` times the size be padded alike
    (``pad_by(gt, s * pad_h, s * pad_w)``); ``crop_to`` with the input's (H, W) undoes the padding.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return pad_by(x, pad_h, pad_w, mode), pad_h, pad_w


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Keep the top-left (H, W) of an (..., H', W') tensor: undoes ``pad_to_multiple`` (times the scale)."""
    h, w = size
    return x[..., :h, :w]


def channel_layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None = None, eps: float = LN_EPS
                       ) -> Tensor:
    """LayerNorm over the channels of an NCHW map, as timm's ``LayerNorm2d`` computes it (``F.layer_norm``
    on the channels-last view): statistics in float32 for bf16/fp16 inputs too, and under autocast."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of a network."""
    return sum(p.numel() for p in module.parameters())
