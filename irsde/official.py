"""Loading IR-SDE / Refusion network weights: the official release files and the suite's own checkpoints.

Official releases (Algolzw/image-restoration-sde, e.g. ``lastest_EMA.pth``) are plain state dicts of
``ConditionalUNet`` or ``ConditionalNAFNet``, sometimes with the ``module.`` prefix of DataParallel. Our
networks use the official module names, so the key mapping is the identity once that prefix is gone
(:func:`core.weights.find_network` finds the network in a file). The constructor arguments are not
stored in those files, so they are read off the weights' shapes (the released inpainting UNet, for example,
is nf=32 although its yml says 64).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from core.errors import CheckpointError
from core.weights import StateDict, find_network, load_weights_file, state_dict_mismatch
from irsde.nets.nafnet import ConditionalNAFNet
from irsde.nets.unet import ConditionalUNet

UNET_SIGNATURE = "init_conv.weight"
NAFNET_SIGNATURE = "intro.weight"


class IRSDEWeightsError(CheckpointError, ValueError):
    """A file that cannot be read as IR-SDE network weights (a ValueError and a suite CheckpointError)."""


def _has_network(state_dict: StateDict) -> bool:
    return UNET_SIGNATURE in state_dict or NAFNET_SIGNATURE in state_dict


def load_state_dict_any(
    path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False
) -> StateDict:
    """The network state dict held by ``path``, with our (= the official) key names.

    Accepts a suite Lightning checkpoint (``state_dict`` with ``ema_net.``/``ema.``/``net.`` prefixed keys;
    the EMA copy wins) and official or BasicSR-style release files (a plain state dict, possibly with
    ``module.`` prefixes, or one under ``params_ema``/``params``/``state_dict``). Files are read with
    ``weights_only=True``; ``trusted=True`` allows full unpickling for files that need it. Raises
    :class:`IRSDEWeightsError` naming the file and what it holds when no IR-SDE network is recognised.
    """
    raw = load_weights_file(path, map_location, trusted, IRSDEWeightsError)
    return find_network(raw, path, _has_network, IRSDEWeightsError, "an IR-SDE network",
                        f"'{UNET_SIGNATURE}' (ConditionalUNet) or '{NAFNET_SIGNATURE}' (ConditionalNAFNet)")


def _indices(state_dict: StateDict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (a regex with one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def _require(state_dict: StateDict, key: str, what: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"not a {what} state dict: no '{key}' (keys start {list(state_dict)[:5]})")
    return state_dict[key]


def infer_unet_config(state_dict: StateDict) -> dict[str, Any]:
    """ConditionalUNet constructor kwargs (in_nc, out_nc, nf, depth, ch_mult) read off the weights' shapes."""
    init = _require(state_dict, UNET_SIGNATURE, "ConditionalUNet")
    final = _require(state_dict, "final_conv.weight", "ConditionalUNet")
    nf, in_ch2 = int(init.shape[0]), int(init.shape[1])
    levels = _indices(state_dict, r"downs\.(\d+)\.0\.")
    if not levels or levels != list(range(len(levels))):
        raise ValueError(f"ConditionalUNet state dict with encoder levels {levels}: expected 0..depth-1")
    ch_mult = []
    for i in levels:
        width = int(_require(state_dict, f"downs.{i}.3.weight", "ConditionalUNet").shape[0])
        if width % nf:
            raise ValueError(f"encoder level {i} outputs {width} channels, not a multiple of nf={nf}")
        ch_mult.append(width // nf)
    out_nc = int(final.shape[0])
    return {"in_nc": in_ch2 // 2, "out_nc": out_nc, "nf": nf, "depth": len(levels), "ch_mult": ch_mult}


def _blocks_per_stage(state_dict: StateDict, stage: str, count: int) -> list[int]:
    # A stage with no block has no keys at all, hence counting within each known stage index.
    return [len(_indices(state_dict, rf"{stage}\.{i}\.(\d+)\.")) for i in range(count)]


def infer_nafnet_config(state_dict: StateDict) -> dict[str, Any]:
    """ConditionalNAFNet kwargs (img_channel, width, middle_blk_num, enc/dec_blk_nums) from the weights."""
    intro = _require(state_dict, NAFNET_SIGNATURE, "ConditionalNAFNet")
    ending = _require(state_dict, "ending.weight", "ConditionalNAFNet")
    n_down = len(_indices(state_dict, r"downs\.(\d+)\.weight"))
    n_up = len(_indices(state_dict, r"ups\.(\d+)\.0\.weight"))
    return {
        "img_channel": int(ending.shape[0]),
        "width": int(intro.shape[0]),
        "middle_blk_num": len(_indices(state_dict, r"middle_blks\.(\d+)\.")),
        "enc_blk_nums": _blocks_per_stage(state_dict, "encoders", n_down),
        "dec_blk_nums": _blocks_per_stage(state_dict, "decoders", n_up),
    }


def build_from_state_dict(state_dict: StateDict) -> nn.Module:
    """A ConditionalUNet or ConditionalNAFNet shaped like ``state_dict`` (weights not loaded)."""
    if "latent_conv.weight" in state_dict:
        raise ValueError("this is Refusion's latent autoencoder (latent_conv), not an IR-SDE noise network: "
                         "it is model.autoencoder_ckpt= of a latent Refusion experiment")
    if UNET_SIGNATURE in state_dict:
        if "mid_attn.fn.fn.to_out.weight" in state_dict:
            raise ValueError(
                "this is the unconditional UNet of the official denoising-sde code (full attention in the "
                "middle, forward(x, t)); only the conditional networks are supported"
            )
        return ConditionalUNet(**infer_unet_config(state_dict))
    if NAFNET_SIGNATURE in state_dict:
        return ConditionalNAFNet(**infer_nafnet_config(state_dict))
    raise ValueError(
        f"neither a ConditionalUNet ('{UNET_SIGNATURE}') nor a ConditionalNAFNet ('{NAFNET_SIGNATURE}'); "
        f"{len(state_dict)} tensors, keys start {list(state_dict)[:5]}"
    )


def load_network(path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False) -> nn.Module:
    """The IR-SDE network in ``path`` (official release or suite checkpoint), loaded strictly, in eval mode.

    Raises :class:`IRSDEWeightsError` (a ValueError) naming the file when it holds no IR-SDE network or when
    its tensors do not fit the architecture inferred from it.
    """
    state_dict = load_state_dict_any(path, map_location, trusted=trusted)
    try:
        net = build_from_state_dict(state_dict)
    except ValueError as err:
        raise IRSDEWeightsError(f"{path}: not IR-SDE network weights: {err}") from err

    mismatch = state_dict_mismatch(net.state_dict(), state_dict, show=4)
    if mismatch:
        raise IRSDEWeightsError(
            f"{path}: the weights do not fit a {type(net).__name__} with the shapes inferred from them: {mismatch}"
        )
    net.load_state_dict(state_dict, strict=True)
    if isinstance(map_location, (str, torch.device)):
        net.to(map_location)
    return net.eval()
