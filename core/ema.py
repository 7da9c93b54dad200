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


# What RestorationModule fills in for keys a config leaves out (`{**EMA_DEFAULTS, **ema}`).
EMA_DEFAULTS: dict = {
    "style": "plain",
    "decay": 0.999,
    "every": 1,
    "start": 0,
    "warmup": False,
    "update_after_step": 100,
    "inv_gamma": 1.0,
    "power": 2 / 3,
    "min_value": 0.0,
}
EMA_STYLES = ("plain", "ema_pytorch")
_PLAIN_ONLY = ("start", "warmup")
_EMA_PYTORCH_ONLY = ("update_after_step", "inv_gamma", "power", "min_value")


def ema_decay(step: int, cfg: dict) -> float | None:
    """The EMA decay to apply after optimizer step `step`, or None when the EMA is not updated at this step.

    `step` counts completed optimizer steps (Lightning's `global_step` in `on_train_batch_end`: 1 after the first
    step). 0.0 means "copy the weights". `cfg` is the full EMA config (`{**EMA_DEFAULTS, **ema}`); keys:

    - `style`: `plain` (this suite's own schedule) or `ema_pytorch` (lucidrains' `ema_pytorch.EMA`, as used by
      the official IR-SDE code: `EMA(model, beta=0.995, update_every=10)`).
    - `decay`: the decay (ema_pytorch's `beta`, the upper bound of its warm-up); None or <= 0 disables the EMA.
    - `every`: update every this many steps (ema_pytorch's `update_every`).
    - `start` (plain only): copy the weights up to this step.
    - `warmup` (plain only): decay at most (1 + n) / (10 + n), n steps after `start`.
    - `update_after_step` (ema_pytorch only): copy the weights on the updates of the first
      `update_after_step + 1` steps, and once more on the first update after them (ema_pytorch <= 0.6.3's
      lazy `initted` copy).
    - `inv_gamma`, `power`, `min_value` (ema_pytorch only): after that, at step s the decay is
      clamp(1 - (1 + n / inv_gamma) ** -power, min_value, decay) with n = s - 1 - update_after_step.

    With ema_pytorch's defaults (100, 1, 2/3, 0) and `every` 10 the updates happen after steps 1, 11, 21, ...;
    they copy up to step 111 and reach `decay` 0.995 at step 2931. A key of the other style must keep its
    default value (ValueError otherwise): it would have no effect.
    """
    unknown = set(cfg) - set(EMA_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown EMA config keys {sorted(unknown)}; known: {sorted(EMA_DEFAULTS)}")
    style = cfg.get("style", EMA_DEFAULTS["style"])
    if style not in EMA_STYLES:
        raise ValueError(f"EMA style must be one of {EMA_STYLES}, got {style!r}")
    unused = _EMA_PYTORCH_ONLY if style == "plain" else _PLAIN_ONLY
    ignored = [k for k in unused if k in cfg and cfg[k] != EMA_DEFAULTS[k]]
    if ignored:
        raise ValueError(f"EMA keys {ignored} have no effect with style {style!r}")
    decay, every = cfg.get("decay", EMA_DEFAULTS["decay"]), int(cfg.get("every", EMA_DEFAULTS["every"]))
    if decay is None or decay <= 0:
        return None
    decay = float(decay)

    if style == "plain":
        if step % every != 0:
            return None
        n = step - cfg.get("start", EMA_DEFAULTS["start"])
        if n <= 0:
            return 0.0
        return min(decay, (1 + n) / (10 + n)) if cfg.get("warmup", EMA_DEFAULTS["warmup"]) else decay

    # ema_pytorch: EMA.update() runs after every optimizer step and counts its calls in `step`, read before the
    # increment, so its counter is ours - 1; it acts only when that counter is a multiple of update_every.
    calls = step - 1
    if calls < 0 or calls % every != 0:
        return None
    after = int(cfg.get("update_after_step", EMA_DEFAULTS["update_after_step"]))
    if calls <= after:
        return 0.0
    if calls == (after // every + 1) * every:  # the first update past the copy phase: `initted` copy
        return 0.0
    # get_current_decay reads the incremented counter: epoch = (calls + 1) - update_after_step - 1.
    n = calls - after
    inv_gamma = float(cfg.get("inv_gamma", EMA_DEFAULTS["inv_gamma"]))
    power = float(cfg.get("power", EMA_DEFAULTS["power"]))
    value = 1.0 - (1.0 + n / inv_gamma) ** -power
    return min(max(value, float(cfg.get("min_value", EMA_DEFAULTS["min_value"]))), decay)
