"""Loading DiffPIR's diffusion prior: guided-diffusion release files and the suite's own checkpoints.

Release files (``ffhq_10m.pt``, ``256x256_diffusion_uncond.pt``, guided-diffusion's ``ema_*.pt``) are plain
state dicts of ``UNetModel``; our :class:`~diffpir.prior.unet.GuidedUNet` uses the same names, so the key
mapping is the identity (after DataParallel's ``module.``). Suite Lightning checkpoints keep the network under
``net.`` and its EMA copy under ``ema_net.`` (the EMA copy is loaded when present) and store the run config.

Release files hold no constructor arguments. :func:`infer_config` reads everything that shapes the weights off
the tensors; the rest cannot be seen in them (the attention head split, the q/k/v channel order, dropout, the
nominal image size) and defaults to the released unconditional priors' values, unless a preset or the
config stored in a suite checkpoint gives them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError
from core.weights import StateDict, find_network, load_weights_file, state_dict_mismatch, strip_module
from diffpir.prior.unet import PRESETS, GuidedUNet

SIGNATURE = "input_blocks.0.0.weight"
# What the weights cannot tell, as in the released unconditional priors (all use 64-channel heads).
UNSEEN_DEFAULTS: dict[str, Any] = {
    "image_size": 256, "dropout": 0.0, "num_heads": 4, "num_head_channels": 64, "num_heads_upsample": -1,
    "use_new_attention_order": False,
}
SHAPE_FIELDS = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
                "channel_mult", "use_scale_shift_norm", "resblock_updown")


class PriorWeightsError(CheckpointError, ValueError):
    """A file that cannot be read as a guided-diffusion prior (a ValueError and a suite CheckpointError)."""


def unet_kwargs_in_config(config: Any) -> dict[str, Any] | None:
    """The GuidedUNet keyword arguments in a stored run config: the first node targeting GuidedUNet."""
    if isinstance(config, Mapping):
        if str(config.get("_target_", "")).endswith("GuidedUNet"):
            # checkpointing is a training option (activation recomputation), not part of the architecture
            return {str(k): v for k, v in config.items() if k not in ("_target_", "_partial_", "checkpointing")}
        children = config.values()
    elif isinstance(config, Sequence) and not isinstance(config, (str, bytes)):  # lists, ListConfig
        children = config
    else:
        return None
    for child in children:
        found = unet_kwargs_in_config(child)
        if found is not None:
            return found
    return None


def _indices(state_dict: StateDict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (a regex with one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def _require(state_dict: StateDict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"not a guided-diffusion UNet: no '{key}' (keys start {list(state_dict)[:4]})")
    return state_dict[key]


def _as_number(ratio: float) -> float | int:
    return int(ratio) if float(ratio).is_integer() else ratio


def _normalise(field: str, value: Any) -> Any:
    if field in ("attention_resolutions", "channel_mult"):
        return tuple(_as_number(v) for v in value)
    return value


def infer_config(
    state_dict: Mapping[str, torch.Tensor], hints: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """GuidedUNet keyword arguments for ``state_dict``, read off its keys and tensor shapes.

    Inferred: in/out channels, model_channels, channel_mult, num_res_blocks, the downsampling factors with
    attention, use_scale_shift_norm, resblock_updown. The fields the weights do not determine (image_size,
    dropout, the head split, use_new_attention_order) come from ``hints`` (a preset or a stored config), else
    from :data:`UNSEEN_DEFAULTS` (the released priors' values; without hints, attention widths that are not
    multiples of 64 fall back to 4 heads). A shape field in ``hints`` that contradicts the weights raises
    ValueError.
    """
    sd = strip_module(dict(state_dict))
    if "label_emb.weight" in sd:
        raise ValueError("a class-conditional guided-diffusion model (label_emb); DiffPIR needs an "
                         "unconditional one")
    stem = _require(sd, SIGNATURE)
    model_channels = int(_require(sd, "time_embed.0.weight").shape[1])
    out_channels = int(_require(sd, "out.2.weight").shape[0])
    n_out = len(_indices(sd, r"output_blocks\.(\d+)\."))
    if not n_out:
        raise ValueError("no output_blocks: this looks like guided-diffusion's noisy-image classifier")

    # The decoder closes every level but the finest with an upsampling layer after its first ResBlock
    # (an up-ResBlock, or an Upsample holding a `conv`); their spacing gives num_res_blocks + 1.
    up_ress = _indices(sd, r"output_blocks\.(\d+)\.[1-9]\d*\.in_layers\.")
    up_convs = _indices(sd, r"output_blocks\.(\d+)\.[1-9]\d*\.conv\.weight")
    if up_ress and up_convs:
        raise ValueError("the decoder mixes ResBlock and convolution upsampling")
    ups = up_ress or up_convs
    period = ups[0] + 1 if ups else n_out
    levels = n_out // period
    if n_out % period or ups != [period * (i + 1) - 1 for i in range(levels - 1)]:
        raise ValueError(f"{n_out} decoder blocks with upsampling in blocks {ups}: not a UNetModel layout")

    channel_mult, attention = [], []
    for k in range(0, n_out, period):
        level = levels - 1 - k // period
        width = int(_require(sd, f"output_blocks.{k}.0.out_layers.3.weight").shape[0])
        channel_mult.append(_as_number(width / model_channels))
        if f"output_blocks.{k}.1.qkv.weight" in sd:
            attention.append(2**level)
    emb_width = int(_require(sd, "output_blocks.0.0.emb_layers.1.weight").shape[0])
    top_width = int(sd["output_blocks.0.0.out_layers.3.weight"].shape[0])

    config: dict[str, Any] = {
        "in_channels": int(stem.shape[1]),
        "model_channels": model_channels,
        "out_channels": out_channels,
        "num_res_blocks": period - 1,
        "attention_resolutions": tuple(sorted(attention)),
        "channel_mult": tuple(reversed(channel_mult)),
        "use_scale_shift_norm": emb_width == 2 * top_width,
        "resblock_updown": bool(up_ress),
    }
    hints = dict(hints or {})
    learn_sigma = hints.pop("learn_sigma", None)
    if "out_channels" in hints and hints["out_channels"] is None:  # the constructor derives it
        hints["out_channels"] = config["in_channels"] * (1 if learn_sigma is False else 2)
    reachable = {2**level for level in range(levels)}
    for field in SHAPE_FIELDS:
        if field not in hints:
            continue
        given = _normalise(field, hints.pop(field))
        if field == "attention_resolutions":  # factors beyond the deepest level have no effect
            given = tuple(sorted(a for a in given if a in reachable))
        if field == "resblock_updown" and levels == 1:  # no resampling at all: either value fits
            config[field] = given
        elif given != config[field]:
            raise ValueError(f"the config says {field}={given} but the weights have {config[field]}")

    unseen = dict(UNSEEN_DEFAULTS)
    widths = [int(sd[k].shape[1]) for k in sd if k.endswith(".qkv.weight")]
    if "num_head_channels" not in hints and "num_heads" not in hints and any(w % 64 for w in widths):
        unseen["num_head_channels"] = -1
    unknown = set(hints) - set(unseen)
    if unknown:
        raise ValueError(f"unknown GuidedUNet arguments in the config: {sorted(unknown)}")
    unseen.update(hints)
    return {**config, **unseen}


def _preset_kwargs(preset: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(preset, Mapping):
        return dict(preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown prior preset {preset!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[preset])


def build_prior(
    state_dict: StateDict, config: Mapping[str, Any], device: torch.device | str = "cpu"
) -> GuidedUNet:
    """A GuidedUNet of ``config`` holding ``state_dict`` (loaded strictly), in eval mode.

    The network is created on the meta device and materialised empty before the copy, which skips the random
    initialisation (seconds for the 552 M-parameter model). GuidedUNet has no buffers, so the state dict
    covers every tensor.
    """
    with torch.device("meta"):
        net = GuidedUNet(**config)
    net = net.to_empty(device=device)
    mismatch = state_dict_mismatch(net.state_dict(), state_dict)
    if mismatch:
        raise ValueError(mismatch)
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def load_prior(
    path: str | os.PathLike,
    preset: str | Mapping[str, Any] | None = None,
    map_location: Any = "cpu",
    *,
    trusted: bool = False,
) -> GuidedUNet:
    """The diffusion prior in ``path`` as a GuidedUNet in eval mode, called as ``net(x_t, t)``
    (:func:`load_prior_with_config` also returns a suite checkpoint's run config)."""
    return load_prior_with_config(path, preset, map_location, trusted=trusted)[0]


def load_prior_with_config(
    path: str | os.PathLike,
    preset: str | Mapping[str, Any] | None = None,
    map_location: Any = "cpu",
    *,
    trusted: bool = False,
) -> tuple[GuidedUNet, dict | None]:
    """(the prior in ``path`` as a GuidedUNet in eval mode, the run config a suite checkpoint stores or None),
    from one read of the file.

    ``path``: a guided-diffusion state dict or a suite checkpoint (``ema_net.`` preferred over ``net.``).
    ``preset``: a name in :data:`~diffpir.prior.unet.PRESETS` or a dict of GuidedUNet arguments; without it
    the configuration is inferred from the weights (:func:`infer_config`), completed by the GuidedUNet
    arguments in a suite checkpoint's stored config. Files are read with ``weights_only=True``;
    ``trusted=True`` allows full unpickling. Raises :class:`PriorWeightsError` naming the file when it holds
    no guided-diffusion UNet or the weights do not fit.
    """
    path = Path(path)
    raw = load_weights_file(path, map_location, trusted, PriorWeightsError, mmap=True)
    state_dict = find_network(raw, path, lambda sd: SIGNATURE in sd, PriorWeightsError, "a guided-diffusion UNet",
                              f"'{SIGNATURE}'", "; DiffPIR needs an unconditional diffusion prior (e.g. "
                              "ffhq_10m.pt or 256x256_diffusion_uncond.pt, or a suite DDPM prior checkpoint)")
    stored = raw.get("config") if isinstance(raw, Mapping) else None
    stored = dict(stored) if isinstance(stored, Mapping) else None
    try:
        if preset is not None:
            config = _preset_kwargs(preset)
        else:
            config = infer_config(state_dict, unet_kwargs_in_config(stored))
    except ValueError as err:
        raise PriorWeightsError(f"{path}: {err}") from err

    on_device = isinstance(map_location, (str, torch.device))
    device = torch.device(map_location) if on_device else torch.device("cpu")
    try:
        return build_prior(state_dict, config, device), stored
    except ValueError as err:
        if preset is None:
            source = "the configuration inferred from them"
        else:
            source = f"preset {preset!r}" if isinstance(preset, str) else "the given arguments"
        message = f"{path}: the weights do not fit {source}: {err}"
        if preset is not None:
            try:
                message += f"; the weights look like {infer_config(state_dict)}"
            except ValueError:
                pass
        raise PriorWeightsError(message) from err
