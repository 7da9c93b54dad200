"""Loading DiffIR network weights: official release files and the suite's own checkpoints.

Official files come in two shapes. BasicSR sub-projects (deblurring, SR) save ``{'params': ..., 'params_ema':
...}``; the inpainting sub-project saves Lightning checkpoints whose ``state_dict`` prefixes the network with
``generator.`` (its ``S1forS2.py`` strips that prefix into a plain dict). The suite's Lightning checkpoints
keep the network under ``net.`` and its EMA copy under ``ema_net.``. In every case our module names equal the
official ones, so the key mapping is the identity once the container, the prefix and DataParallel's
``module.`` are gone. EMA weights are preferred wherever a file holds both.

Release files store no constructor arguments, so :func:`infer_config` reads them off the weights' shapes.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from torch import nn

from core.errors import CheckpointError
from core.weights import StateDict, find_network, load_weights_file
from diffir.networks import DiffIRS1, DiffIRS2

G_SIGNATURE = "G.patch_embed.proj.weight"
S1_SIGNATURE = "E.E.0.weight"
S2_SIGNATURES = ("condition.E.0.weight", "diffusion.condition.E.0.weight")
DEFAULT_HEADS = (1, 2, 4, 8)
LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
# Stage-2 modules that the official DDPM registers a second time under ``diffusion.``.
S2_ALIASES = (("denoise.", "diffusion.model."), ("condition.", "diffusion.condition."))


class DiffIRWeightsError(CheckpointError, ValueError):
    """A file that cannot be read as DiffIR network weights (a ValueError and a suite CheckpointError)."""


def _is_diffir(state_dict: StateDict) -> bool:
    if G_SIGNATURE not in state_dict:
        return False
    return S1_SIGNATURE in state_dict or any(s in state_dict for s in S2_SIGNATURES)


def load_state_dict_any(path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False
                        ) -> StateDict:
    """The DiffIR network state dict in ``path``, with official (= our) key names.

    Accepts BasicSR files (``params_ema`` preferred over ``params``), suite Lightning checkpoints
    (``ema_net.`` preferred over ``net.``), official inpainting Lightning checkpoints (``generator.``), plain
    state dicts, and ``module.`` prefixes. Raises :class:`DiffIRWeightsError` naming the file otherwise.
    """
    raw = load_weights_file(path, map_location, trusted, DiffIRWeightsError)
    return find_network(raw, path, _is_diffir, DiffIRWeightsError, "a DiffIR network",
                        f"'{G_SIGNATURE}' with a CPEN 'E.*' or 'condition.*'")


def _count(state_dict: StateDict, pattern: str) -> int:
    """Number of distinct indices i for which some key matches ``pattern`` (a regex with one group)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := rx.match(k))})


def _ffn_factor(pairs: list[tuple[int, int]]) -> float:
    """The shortest decimal f with int(d * f) == hidden for every (d, hidden) pair (official sizing)."""
    lo = max(h / d for d, h in pairs)
    hi = min((h + 1) / d for d, h in pairs)
    for digits in range(9):
        f = math.ceil(lo * 10**digits - 1e-9) / 10**digits
        if f < hi and all(int(d * f) == h for d, h in pairs):
            return f
    raise ValueError(f"no FFN expansion factor fits the hidden widths {pairs}")


def infer_config(state_dict: StateDict) -> dict[str, Any]:
    """Constructor arguments of the network that ``state_dict`` belongs to, plus ``stage`` (1 or 2)."""
    sd = state_dict
    if not _is_diffir(sd):
        raise ValueError("not a DiffIR state dict (needs G.* and E.* or condition.* keys)")
    stage = 1 if S1_SIGNATURE in sd else 2
    patch = sd[G_SIGNATURE]
    dim, patch_in = patch.shape[0], patch.shape[1]
    cfg: dict[str, Any] = {"stage": stage, "dim": dim}
    if "G.tail.1.weight" in sd:  # the DiffIR-SRGAN head
        out_channels = sd["G.tail.1.weight"].shape[0]
        factor = math.isqrt(patch_in // out_channels)
        if factor * factor * out_channels != patch_in or factor not in (1, 2, 4):
            raise ValueError(f"SR head with {patch_in} input channels, {out_channels} outputs: unknown scale")
        cfg.update(inp_channels=out_channels, out_channels=out_channels, scale=4 // factor, residual=True)
    else:
        out_channels = sd["G.output.weight"].shape[0]
        cfg.update(inp_channels=patch_in, out_channels=out_channels, scale=None,
                   residual=patch_in == out_channels)
    cfg["num_blocks"] = [_count(sd, rf"G\.{level}\.(\d+)\.") for level in LEVELS]
    cfg["num_refinement_blocks"] = _count(sd, r"G\.refinement\.(\d+)\.")
    heads = []
    for i, level in enumerate(LEVELS):
        key = f"G.{level}.0.attn.temperature"
        heads.append(sd[key].shape[0] if key in sd else DEFAULT_HEADS[i])
    cfg["heads"] = heads
    pairs = [(w.shape[0], w.shape[1]) for k, w in sd.items() if k.startswith("G.") and
             k.endswith(".ffn.project_out.weight")]
    cfg["ffn_expansion_factor"] = _ffn_factor(pairs) if pairs else 2.0
    cfg["bias"] = any(k.startswith("G.") and k.endswith(".attn.qkv.bias") for k in sd)
    norm_keys = [k for k in sd if k.startswith("G.") and ".norm1.body." in k]
    with_bias = any(k.endswith(".norm1.body.bias") for k in norm_keys)
    cfg["LayerNorm_type"] = "WithBias" if with_bias or not norm_keys else "BiasFree"
    cpen = "E." if stage == 1 else ("condition." if "condition.E.0.weight" in sd else "diffusion.condition.")
    cfg["n_encoder_res"] = _count(sd, rf"{re.escape(cpen)}E\.(\d+)\.body\.")
    if stage == 2:
        denoise = "denoise." if "denoise.resmlp.0.weight" in sd else "diffusion.model."
        cfg["n_denoise_res"] = _count(sd, rf"{re.escape(denoise)}resmlp\.(\d+)\.resmlp\.")
        betas = sd.get("diffusion.betas")
        if betas is not None:
            cfg.update(timesteps=betas.numel(), linear_start=round(betas[0].item(), 6),
                       linear_end=round(betas[-1].item(), 6))
    return cfg


def build_network(config: dict[str, Any]) -> DiffIRS1 | DiffIRS2:
    """A fresh network from an :func:`infer_config`-style dict (``stage`` picks the class)."""
    kwargs = dict(config)
    stage = kwargs.pop("stage")
    if stage == 1:
        return DiffIRS1(**kwargs)
    if stage == 2:
        return DiffIRS2(**kwargs)
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def _complete_aliases(state_dict: StateDict, net: nn.Module) -> StateDict:
    """Fill stage-2 keys that a file stores under only one of the official alias names (and the buffers)."""
    out = dict(state_dict)
    own = net.state_dict()
    for key in own:
        if key in out:
            continue
        for a, b in S2_ALIASES:
            twin = b + key[len(a):] if key.startswith(a) else a + key[len(b):] if key.startswith(b) else None
            if twin is not None and twin in out:
                out[key] = out[twin]
                break
        else:
            if key.startswith("diffusion.") and key.count(".") == 1:  # schedule buffers: recomputed ones
                out[key] = own[key]
    return out


def load_network(path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False
                 ) -> DiffIRS1 | DiffIRS2:
    """The network stored in ``path`` with its weights, in eval mode.

    Stage 1 is called as ``net(lq, gt)``, stage 2 as ``net(lq)`` (see :mod:`diffir.networks`).
    """
    state_dict = load_state_dict_any(path, map_location, trusted=trusted)
    try:
        net = build_network(infer_config(state_dict))
    except (ValueError, KeyError) as err:
        raise DiffIRWeightsError(f"{path}: cannot infer the DiffIR configuration ({err})") from err
    if isinstance(net, DiffIRS2):
        state_dict = _complete_aliases(state_dict, net)
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise DiffIRWeightsError(
            f"{path}: weights do not fit the inferred DiffIR network (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return net.eval()
