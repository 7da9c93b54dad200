"""Reading weight files safely: `torch.load(weights_only=True)` with the data-only types our checkpoints hold.

Shared by every method's release-weight loader (irsde/, diffir/, diffpir/ official.py). Suite checkpoints
pickle their run config (omegaconf containers) and, in older files, numpy RNG state; both only rebuild data,
so allowing them keeps `weights_only=True` (no arbitrary code runs from the file). Anything else needs
`trusted=True`, and the error says which pickled objects the file holds.
"""

from __future__ import annotations

import collections
import collections.abc
import pickle
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def safe_globals() -> list[Any]:
    """Data-only types a checkpoint may pickle: builtins, omegaconf config nodes, numpy arrays and dtypes."""
    import numpy as np

    allowed: list[Any] = [typing.Any, dict, list, tuple, set, int, float, str, bool,
                          collections.defaultdict, collections.OrderedDict]
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    allowed += [np.ndarray, np.dtype, _reconstruct]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes as these classes
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    try:
        from omegaconf import DictConfig, ListConfig, base, nodes
    except ImportError:
        return allowed
    allowed += [DictConfig, ListConfig, base.Metadata, base.ContainerMetadata]
    allowed += [nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
                nodes.BytesNode, nodes.PathNode]
    return allowed


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip-format torch file at all
        return []


def _load_weights_only(path: Path, map_location: Any, mmap: bool) -> Any:
    with torch.serialization.safe_globals(safe_globals()):
        if mmap:
            try:  # memory-mapped: a multi-GB file is read once into the model, not held twice
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
        return torch.load(path, map_location=map_location, weights_only=True)  # also the legacy format


def load_weights_file(path: str | Path, map_location: Any, trusted: bool, error: type[Exception],
                      mmap: bool = False) -> Any:
    """The unpickled content of a weights file; every failure raises `error` with a message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such weights file")
    try:
        return _load_weights_only(path, map_location, mmap)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(path)
        if not trusted:
            details = ", ".join(unsafe[:5]) if unsafe else str(err)[:200]
            raise error(f"{path}: holds pickled Python objects beyond tensors and configs ({details}); "
                        "if you trust the file, load it with trusted=True") from err
    except Exception as err:  # truncated file, not a torch file, ...
        raise error(f"{path}: cannot be read as a torch file ({err})") from err
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise error(f"{path}: cannot be read as a torch file ({err})") from err


# -- where a network sits inside a loaded file --------------------------------------------------------------------
StateDict = dict[str, torch.Tensor]
# Containers of release files (BasicSR params / params_ema, plain state_dict / model / net wrappers), EMA first.
RELEASE_CONTAINERS = ("params_ema", "params", "state_dict", "model", "net")
# Prefixes under which checkpoints keep a network, EMA copies first (they are what gets evaluated): the suite's
# LightningModules (ema_net. / net.), common EMA wrappers, and LaMa-style trainers (generator_average. / generator.).
NETWORK_PREFIXES = ("ema_net.", "net_ema.", "ema.module.", "ema.", "net.", "generator_average.", "generator.")
# The suite's networks by a key only they have: to say what a file holds instead of the network asked for.
KNOWN_NETWORKS = {
    "init_conv.weight": "an IR-SDE network (ConditionalUNet)",
    "intro.weight": "an IR-SDE network (ConditionalNAFNet)",
    "G.patch_embed.proj.weight": "a DiffIR network",
    "input_blocks.0.0.weight": "a guided-diffusion UNet",
}


def tensor_dict(obj: Any) -> StateDict | None:
    """The string-keyed tensor entries of a dict (bookkeeping values dropped), or None when it holds none."""
    if not isinstance(obj, collections.abc.Mapping):
        return None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return tensors or None


def strip_module(state_dict: StateDict) -> StateDict:
    """Drop DataParallel's `module.` prefix and the step counter of torch's AveragedModel (`n_averaged`)."""
    return {k.removeprefix("module."): v for k, v in state_dict.items() if k != "n_averaged"}


def tensor_dicts(raw: Any) -> list[StateDict]:
    """The tensor dicts of a loaded file: each release container (EMA first), then the top level."""
    found = [tensor_dict(raw.get(name)) for name in RELEASE_CONTAINERS] if isinstance(raw, dict) else []
    return [d for d in [*found, tensor_dict(raw)] if d is not None]


def candidate_networks(raw: Any) -> list[StateDict]:
    """Every place a file may hold a network, most preferred first: per tensor dict (tensor_dicts order), the
    part under each known prefix (EMA first), then the dict itself; `module.` removed. A loader takes the first
    candidate that has its network's signature key."""
    candidates = []
    for tensors in tensor_dicts(raw):
        for prefix in NETWORK_PREFIXES:
            sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if sub:
                candidates.append(strip_module(sub))
        candidates.append(strip_module(tensors))
    return candidates


def find_network(raw: Any, path: str | Path, looks_like: Callable[[StateDict], bool], error: type[Exception],
                 what: str, needs: str, advice: str = "") -> StateDict:
    """The first of `candidate_networks(raw)` that `looks_like` accepts (a method's signature check).

    Otherwise raises `error` naming `path`: "this looks like <another known network>, not <what>" when a
    candidate holds one of :data:`KNOWN_NETWORKS`, else "not <what> (no <needs>; keys start ...)"; `advice`
    (e.g. "; DiffPIR needs ...") ends either message.
    """
    if not isinstance(raw, collections.abc.Mapping):
        raise error(f"{path}: holds a {type(raw).__name__}, not a state dict")
    candidates = candidate_networks(raw)
    found = next((c for c in candidates if looks_like(c)), None)
    if found is not None:
        return found
    for candidate in candidates:
        other = next((name for key, name in KNOWN_NETWORKS.items() if key in candidate and name != what), None)
        if other is not None:
            raise error(f"{path}: this looks like {other}, not {what}{advice}")
    sample = list(candidates[0])[:4] if candidates else sorted(map(str, raw))[:6]
    raise error(f"{path}: not {what} (no {needs}; {'keys start' if candidates else 'no tensors, keys'} "
                f"{sample}){advice}")


def state_dict_mismatch(expected: StateDict, given: StateDict, show: int = 3) -> str | None:
    """Why `given` cannot load strictly into a network whose state dict is `expected` (None when it can):
    the counts of missing, unexpected and differently shaped tensors, with a few names of each."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and given[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return None
    return (f"{len(missing)} tensors missing (e.g. {missing[:show]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:show]}), {len(wrong)} of another shape (e.g. {wrong[:show]})")
