"""Activation checkpointing (``model.net.checkpointing``) of the large networks: same outputs, same gradients,
same state-dict keys as without it, and torch.utils.checkpoint really used in training (never in eval)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import nn

import diffir.dirformer
import diffpir.prior.unet
import irsde.nets.nafnet
import irsde.nets.unet
from diffir.dirformer import DIRformer
from diffir.networks import DiffIRS1, DiffIRS2
from diffpir.prior import GuidedUNet, small_config
from irsde.nets import ConditionalNAFNet, ConditionalUNet

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
DIFFIR_TINY = dict(dim=8, num_blocks=(1, 2, 1, 1), num_refinement_blocks=2, heads=(1, 2, 4, 8),
                   ffn_expansion_factor=2.0)


def _randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Jitter every parameter (zero-initialised convolutions and gates too), so that every gradient is nonzero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def _unet(ck: bool) -> nn.Module:
    return ConditionalUNet(3, 3, nf=8, depth=2, checkpointing=ck)


def _nafnet(ck: bool) -> nn.Module:
    return ConditionalNAFNet(3, width=8, middle_blk_num=1, enc_blk_nums=[1, 2], dec_blk_nums=[1, 1], checkpointing=ck)


def _dirformer(ck: bool) -> nn.Module:
    return DIRformer(**DIFFIR_TINY, checkpointing=ck)


def _diffir_s1(ck: bool) -> nn.Module:
    return DiffIRS1(n_encoder_res=1, **DIFFIR_TINY, checkpointing=ck)


def _guided(ck: bool) -> nn.Module:
    config = small_config(channel_mult=(1, 2), attention_resolutions=(2,), num_head_channels=32, dropout=0.1)
    return GuidedUNet(**config, checkpointing=ck)  # dropout on: the recomputation must replay its masks


def _irsde_inputs(gen: torch.Generator) -> tuple:
    x_t, mu = torch.randn(2, 3, 12, 12, generator=gen), torch.randn(2, 3, 12, 12, generator=gen)
    return x_t, mu, torch.tensor([3, 40])


def _dirformer_inputs(gen: torch.Generator) -> tuple:
    return torch.randn(2, 3, 16, 16, generator=gen), torch.randn(2, 256, generator=gen)


def _s1_inputs(gen: torch.Generator) -> tuple:
    return torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)


def _guided_inputs(gen: torch.Generator) -> tuple:
    return torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([5, 700])


def _n_unet(net: ConditionalUNet) -> int:
    return 6 * net.depth + 3  # two ResBlocks + attention per encoder and decoder level; the middle's three


def _n_nafnet(net: ConditionalNAFNet) -> int:
    return sum(len(s) for s in (*net.encoders, net.middle_blks, *net.decoders))


def _n_dirformer(net: DIRformer) -> int:
    stacks = [m for m in net.modules() if isinstance(m, diffir.dirformer.BlockStack)]
    return sum(len(s) for s in stacks)


def _n_guided(net: GuidedUNet) -> int:
    return len(net.input_blocks) + 1 + len(net.output_blocks)


# name: (builder, inputs, module whose ``checkpoint`` is called, expected number of checkpointed calls)
CASES: dict[str, tuple[Callable, Callable, object, Callable]] = {
    "irsde_unet": (_unet, _irsde_inputs, irsde.nets.unet, _n_unet),
    "irsde_nafnet": (_nafnet, _irsde_inputs, irsde.nets.nafnet, _n_nafnet),
    "dirformer": (_dirformer, _dirformer_inputs, diffir.dirformer, _n_dirformer),
    "diffir_s1": (_diffir_s1, _s1_inputs, diffir.dirformer, lambda net: _n_dirformer(net.G)),
    "guided_unet": (_guided, _guided_inputs, diffpir.prior.unet, _n_guided),
}


@pytest.fixture
def count_checkpoint(monkeypatch):
    """Replace ``checkpoint`` in a network module by a counting wrapper of the real one; returns the counter."""

    def install(module: object) -> dict[str, int]:
        calls = {"n": 0}
        real = module.checkpoint

        def counting(*args, **kwargs):
            calls["n"] += 1
            assert kwargs.get("use_reentrant") is False
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "checkpoint", counting)
        return calls

    return install


def _pair(build: Callable) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = _randomise(build(False))
    ckpt = build(True)
    ckpt.load_state_dict(plain.state_dict())  # strict: the same keys, no extra parameters or buffers
    return plain.train(), ckpt.train()


def _loss_and_grads(net: nn.Module, inputs: tuple, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks in both networks
    out = net(*inputs)
    weights = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    (out * weights).square().mean().backward()
    grads = {name: p.grad for name, p in net.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("name", list(CASES))
def test_same_output_and_gradients_with_checkpointing(name, count_checkpoint):
    build, make_inputs, module, expected_calls = CASES[name]
    plain, ckpt = _pair(build)
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    inputs = make_inputs(torch.Generator().manual_seed(1))

    out_plain, grads_plain = _loss_and_grads(plain, inputs, seed=2)
    calls = count_checkpoint(module)
    out_ckpt, grads_ckpt = _loss_and_grads(ckpt, inputs, seed=2)
    assert calls["n"] == expected_calls(ckpt) > 0

    torch.testing.assert_close(out_ckpt, out_plain, rtol=1e-5, atol=1e-6)
    assert grads_ckpt.keys() == grads_plain.keys()
    assert len(grads_plain) == len(list(plain.parameters()))  # every parameter is reached by the loss
    for key, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[key], grad, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("name", list(CASES))
def test_no_checkpointing_in_eval_without_grad_or_when_off(name, count_checkpoint):
    build, make_inputs, module, _ = CASES[name]
    plain, ckpt = _pair(build)
    inputs = make_inputs(torch.Generator().manual_seed(3))
    calls = count_checkpoint(module)
    with torch.no_grad():
        ckpt(*inputs)  # training mode, but no graph is recorded
    ckpt.eval()
    ckpt(*inputs)  # eval mode with grad
    plain(*inputs)  # off
    assert calls["n"] == 0


def test_diffir_s2_passes_the_flag_to_its_dirformer():
    plain, ckpt = DiffIRS2(n_encoder_res=1, **DIFFIR_TINY), DiffIRS2(n_encoder_res=1, **DIFFIR_TINY, checkpointing=True)
    assert ckpt.G.checkpointing and not plain.G.checkpointing
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    assert "checkpointing" not in ckpt.config  # a training option, not the architecture read off weight files


@pytest.mark.parametrize(
    "config", ["irsde", "irsde_nafnet", "diffir_s1", "diffir_s2", "diffir_s2_gan", "diffpir_prior"]
)
def test_model_configs_expose_checkpointing_off(config):
    net = OmegaConf.load(CONFIGS / f"{config}.yaml").net
    assert net.checkpointing is False
    target = get_class(net._target_)
    importlib.import_module(target.__module__)
    assert inspect.signature(target).parameters["checkpointing"].default is False
