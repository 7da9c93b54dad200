"""Exponential moving average of a network's weights, kept as a frozen copy.

The EMA copy is a plain submodule of the LightningModule, so it is saved in every checkpoint (`ema_net.*`),
moved between devices with the module and restored on resume without extra code.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema_copy(net: nn.Module) -> nn.Module:
    ema = copy.deepcopy(net)
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net for parameters; buffers are copied."""
    ema_params = list(ema.parameters())
    net_params = [p.detach() for p in net.parameters()]
    torch._foreach_lerp_(ema_params, [p.to(e.dtype) for p, e in zip(net_params, ema_params)], 1.0 - decay)
    for e, b in zip(ema.buffers(), net.buffers()):
        e.copy_(b)
