"""core.weights.find_network: where a method's network sits inside a loaded weights file."""

from __future__ import annotations

import pytest
import torch

from core.weights import find_network


class WeightsError(ValueError):
    pass


def net(value: float, first: str = "stem.weight") -> dict[str, torch.Tensor]:
    """A tiny "network" whose tensors all hold ``value`` (to tell copies apart), identified by ``first``."""
    return {first: torch.full((2,), value), "head.bias": torch.full((1,), value)}


def has_stem(state_dict: dict[str, torch.Tensor]) -> bool:
    return "stem.weight" in state_dict


def find(raw, looks_like=has_stem):
    return find_network(raw, "run/last.ckpt", looks_like, WeightsError, "a stem network", "'stem.weight'")


def prefixed(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def values(state_dict: dict[str, torch.Tensor]) -> set[float]:
    return {float(t[0]) for t in state_dict.values()}


def test_the_ema_copy_is_preferred_over_the_raw_network():
    suite = {"state_dict": {**prefixed("net.", net(1.0)), **prefixed("ema_net.", net(2.0))}, "epoch": 3}
    assert values(find(suite)) == {2.0}
    basicsr = {"params": net(1.0), "params_ema": net(2.0)}
    assert values(find(basicsr)) == {2.0}
    lama = {"state_dict": {**prefixed("generator.", net(1.0)), **prefixed("generator_average.", net(2.0))}}
    assert values(find(lama)) == {2.0}
    assert values(find({"state_dict": prefixed("net.", net(1.0))})) == {1.0}  # no EMA copy: the network


def test_prefixes_and_module_are_stripped():
    found = find({"state_dict": prefixed("generator.module.", net(1.0))})
    assert set(found) == {"stem.weight", "head.bias"}
    assert set(find(prefixed("module.", net(1.0)))) == {"stem.weight", "head.bias"}
    plain = net(1.0)
    assert set(find({**plain, "step": 10})) == set(plain)  # bookkeeping entries dropped


def test_the_first_accepted_candidate_wins():
    # The EMA copy is of another network: the method's check rejects it and the raw copy is taken.
    raw = {"state_dict": {**prefixed("ema_net.", net(2.0, first="other.weight")), **prefixed("net.", net(1.0))}}
    assert values(find(raw)) == {1.0}
    # A check that accepts anything takes the most preferred candidate.
    assert values(find(raw, looks_like=lambda sd: True)) == {2.0}


def test_nothing_accepted_raises_the_error_naming_the_file_and_what_it_holds():
    with pytest.raises(WeightsError, match=r"run/last\.ckpt: not a stem network \(no 'stem\.weight'; "
                                           r"keys start \['encoder\.weight'"):
        find({"encoder.weight": torch.zeros(3)})
    with pytest.raises(WeightsError, match=r"run/last\.ckpt: this looks like an IR-SDE network \(ConditionalUNet\), "
                                           "not a stem network"):
        find({"state_dict": prefixed("ema_net.", net(1.0, first="init_conv.weight"))})
    with pytest.raises(WeightsError, match=r"run/last\.ckpt: not a stem network.*'epoch'"):
        find({"epoch": 3})  # no tensors at all: the top-level keys
    with pytest.raises(WeightsError, match=r"run/last\.ckpt: holds a list, not a state dict"):
        find([torch.zeros(2)])
