"""IR-SDE noise networks (ConditionalUNet, ConditionalNAFNet) and loading weights from files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from irsde.nets import ConditionalNAFNet, ConditionalUNet
from irsde.nets.unet import ChannelLayerNorm, LinearAttention, SinusoidalPosEmb
from irsde.official import (
    infer_nafnet_config,
    infer_unet_config,
    load_network,
    load_state_dict_any,
)

UNET_KWARGS = {"in_nc": 3, "out_nc": 3, "nf": 8, "depth": 3}
NAFNET_KWARGS = {"img_channel": 3, "width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 2],
                 "dec_blk_nums": [1, 1]}


@torch.no_grad()
def perturb_constants(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give zero/one-initialised tensors (NAFNet gates, norm gains) random values: every path then matters."""
    gen = torch.Generator().manual_seed(seed)
    for param in net.parameters():
        if torch.all(param == param.flatten()[0]):
            param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return net.eval()


def make_unet(**overrides) -> ConditionalUNet:
    torch.manual_seed(0)
    return perturb_constants(ConditionalUNet(**{**UNET_KWARGS, **overrides}))


def make_nafnet(**overrides) -> ConditionalNAFNet:
    torch.manual_seed(0)
    return perturb_constants(ConditionalNAFNet(**{**NAFNET_KWARGS, **overrides}))


MAKERS = {"unet": make_unet, "nafnet": make_nafnet}


def inputs(batch: int = 1, h: int = 32, w: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=gen), torch.rand(batch, 3, h, w, generator=gen)


# ---------------------------------------------------------------- building blocks against their formulas


def test_sinusoidal_embedding_matches_formula():
    t = torch.tensor([0.0, 3.0, 50.0])
    dim, half = 8, 4
    expected = torch.empty(3, dim)
    for b, tv in enumerate(t.tolist()):
        for k in range(half):
            freq = 10000 ** (-k / (half - 1))
            expected[b, k] = math.sin(tv * freq)
            expected[b, half + k] = math.cos(tv * freq)
    torch.testing.assert_close(SinusoidalPosEmb(dim)(t), expected, atol=1e-5, rtol=1e-5)


def test_channel_layer_norm_matches_the_official_formula():
    x = torch.randn(2, 6, 5, 4)
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.g.copy_(torch.linspace(0.5, 1.5, 6).view(1, 6, 1, 1))
    # The official LayerNorm: (x - mean) / sqrt(var + eps) * g over the channels, eps 1e-5 in float32.
    var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
    official = (x - mean) * torch.rsqrt(var + 1e-5) * norm.g
    torch.testing.assert_close(norm(x), official, atol=2e-6, rtol=0)
    # Same function in bf16 (statistics in float32, same eps), up to bf16 rounding.
    low = norm(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), official, atol=0.05, rtol=0.02)


def test_linear_attention_matches_einsum_formula():
    torch.manual_seed(0)
    attn = LinearAttention(16).eval()
    x = torch.randn(2, 16, 5, 3)
    heads, n = 4, 15
    q, k, v = (p.reshape(2, heads, 32, n) for p in attn.to_qkv(x).chunk(3, dim=1))
    q = q.softmax(dim=2) / math.sqrt(32)
    k = k.softmax(dim=3)
    context = torch.einsum("bhdn,bhen->bhde", k, v / n)
    out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(2, heads * 32, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.to_out(out), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- architecture as in the official code


def test_parameter_counts_match_official_networks():
    # Counts of the official classes (Algolzw/image-restoration-sde @ 2598d73), built on the meta device.
    with torch.device("meta"):
        nets = {
            137_147_523: ConditionalUNet(3, 3, 64, depth=4),
            34_799_171: ConditionalUNet(3, 3, 32, depth=4),
            663_251: ConditionalUNet(3, 3, 8, depth=3),
            76_608_387: ConditionalNAFNet(3, 64, 1, [1, 1, 1, 28], [1, 1, 1, 1]),
        }
    for expected, net in nets.items():
        assert sum(p.numel() for p in net.parameters()) == expected


def test_official_key_names_and_shapes():
    with torch.device("meta"):
        unet = ConditionalUNet(3, 3, 64, depth=4).state_dict()
        naf = ConditionalNAFNet(3, 64, 1, [1, 1, 1, 28], [1, 1, 1, 1]).state_dict()
    assert len(unet) == 151 and len(naf) == 668
    assert unet["init_conv.weight"].shape == (64, 6, 7, 7) and "init_conv.bias" not in unet
    assert unet["time_mlp.3.weight"].shape == (256, 256)
    assert unet["downs.0.0.mlp.1.weight"].shape == (128, 256)
    assert unet["downs.0.2.fn.norm.g"].shape == (1, 64, 1, 1)
    assert unet["downs.0.2.fn.fn.to_qkv.weight"].shape == (384, 64, 1, 1)
    assert unet["downs.0.2.fn.fn.to_out.1.g"].shape == (1, 64, 1, 1)
    assert unet["downs.0.3.weight"].shape == (128, 64, 4, 4)
    assert unet["downs.3.3.weight"].shape == (1024, 512, 3, 3) and "downs.3.3.bias" not in unet
    assert unet["ups.0.0.block1.proj.weight"].shape == (1024, 1536, 3, 3)
    assert unet["ups.0.0.res_conv.weight"].shape == (1024, 1536, 1, 1)
    assert unet["ups.0.3.1.weight"].shape == (512, 1024, 3, 3)
    assert unet["ups.3.3.weight"].shape == (64, 128, 3, 3)
    assert unet["mid_attn.fn.fn.to_out.0.bias"].shape == (1024,)
    assert unet["final_res_block.res_conv.weight"].shape == (64, 128, 1, 1)
    assert naf["intro.weight"].shape == (64, 6, 3, 3)
    assert naf["time_mlp.1.weight"].shape == (512, 64)
    assert naf["encoders.3.27.mlp.1.weight"].shape == (2048, 128)
    assert naf["encoders.3.27.sca.1.weight"].shape == (512, 512, 1, 1)
    assert naf["middle_blks.0.beta"].shape == (1, 1024, 1, 1)
    assert naf["ups.0.0.weight"].shape == (2048, 1024, 1, 1) and "ups.0.0.bias" not in naf
    assert naf["decoders.3.0.norm2.g"].shape == (1, 64, 1, 1)


@torch.no_grad()
def fill_deterministic(net: nn.Module) -> nn.Module:
    """Weights from a closed formula over the sorted state-dict keys (no RNG), fan-in scaled."""
    for k, (_, p) in enumerate(sorted(net.state_dict().items())):
        wave = torch.sin(0.37 * torch.arange(p.numel(), dtype=torch.float64) + 1.3 * k)
        fan = p.numel() // p.shape[0] if p.ndim >= 2 and p.shape[0] > 1 else 1
        p.copy_((wave / math.sqrt(fan) if fan > 1 else 0.5 + 0.5 * wave).reshape(p.shape).float())
    return net.eval()


def wave_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.arange(13.0).view(13, 1), torch.arange(10.0).view(1, 10)
    x = torch.stack([0.5 + 0.5 * torch.sin(0.3 * ys + 0.2 * xs + ch) for ch in range(3)])
    mu = torch.stack([0.5 + 0.5 * torch.cos(0.25 * ys - 0.15 * xs + 2 * ch) for ch in range(3)])
    return torch.stack([x, x.flip(-1)]), torch.stack([mu, mu.flip(-2)])


# Outputs of the official classes (Algolzw/image-restoration-sde @ 2598d73, float32, CPU) for the weights of
# fill_deterministic and wave_inputs at t = [7, 55]: out[0, :, 0, 0], out[1, :, 12, 9], out[:, 1, 6, 4],
# then the sum and the mean square of the whole output.
OFFICIAL_OUTPUTS = {
    "unet": (
        lambda: ConditionalUNet(3, 3, 8, depth=3),
        [0.601205, -0.287401, 1.039747, 15.341601, -14.801692, -15.543816, 0.735105, -20.132433],
        (847.22522, 104.5770645),
    ),
    "nafnet": (
        lambda: ConditionalNAFNet(3, 8, 1, [1, 2], [1, 1]),
        [12.002439, -18.365726, -13.439778, 64.136597, -148.465332, -82.095146, -12.19665, -156.54245],
        (-24351.64453, 15654.7636719),
    ),
}


@pytest.mark.parametrize("kind", ["unet", "nafnet"])
def test_outputs_match_values_computed_with_the_official_code(kind):
    make, values, (total, mean_square) = OFFICIAL_OUTPUTS[kind]
    x_t, mu = wave_inputs()
    with torch.no_grad():
        out = fill_deterministic(make())(x_t, mu, torch.tensor([7.0, 55.0]))
    picked = out[0, :, 0, 0].tolist() + out[1, :, 12, 9].tolist() + out[:, 1, 6, 4].tolist()
    scale = out.abs().max().item()
    assert picked == pytest.approx(values, rel=1e-4, abs=1e-5 * scale)
    assert out.sum().item() == pytest.approx(total, rel=1e-4, abs=1e-5 * scale * out.numel())
    assert out.square().mean().item() == pytest.approx(mean_square, rel=1e-4)


# ---------------------------------------------------------------- forward behaviour


@pytest.mark.parametrize("kind", ["unet", "nafnet"])
@pytest.mark.parametrize("size", [(32, 32), (29, 35)])
def test_output_shape_equals_input_shape(kind, size):
    x_t, mu = inputs(2, *size)
    with torch.no_grad():
        out = MAKERS[kind]()(x_t, mu, 5)
    assert out.shape == x_t.shape and out.dtype == torch.float32


@pytest.mark.parametrize("kind, pad_mode, multiple", [("unet", "reflect", 8), ("nafnet", "constant", 4)])
def test_odd_sizes_are_padded_as_official_and_cropped(kind, pad_mode, multiple):
    # Official: UNet reflect-pads cat[x - mu, mu] to 2**depth, NAFNet zero-pads to 2**len(enc_blk_nums).
    net = MAKERS[kind]()
    x_t, mu = inputs(1, 21, 27)
    pad = (0, (-27) % multiple, 0, (-21) % multiple)
    diff_p, mu_p = F.pad(x_t - mu, pad, mode=pad_mode), F.pad(mu, pad, mode=pad_mode)
    with torch.no_grad():
        direct = net(x_t, mu, 7)
        via_padded = net(diff_p + mu_p, mu_p, 7)[..., :21, :27]
    torch.testing.assert_close(direct, via_padded, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["unet", "nafnet"])
def test_time_and_condition_matter(kind):
    net = MAKERS[kind]()
    x_t, mu = inputs(1)
    with torch.no_grad():
        base = net(x_t, mu, 10)
        other_t = net(x_t, mu, 60)
        other_mu = net(x_t, mu.flip(-1), 10)
    assert (base - other_t).abs().max() > 1e-4
    assert (base - other_mu).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["unet", "nafnet"])
def test_time_accepts_numbers_scalars_and_per_sample_vectors(kind):
    net = MAKERS[kind]()
    x_t, mu = inputs(2)
    with torch.no_grad():
        ref = net(x_t, mu, 5)
        same = (5.0, torch.tensor(5), torch.tensor([5.0]), torch.full((2,), 5.0), torch.full((2, 1, 1, 1), 5))
        for t in same:
            torch.testing.assert_close(net(x_t, mu, t), ref)
        per_sample = net(x_t, mu, torch.tensor([3, 40]))
        torch.testing.assert_close(per_sample[:1], net(x_t[:1], mu[:1], 3), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(per_sample[1:], net(x_t[1:], mu[1:], 40), atol=1e-5, rtol=1e-4)
        with pytest.raises(ValueError, match="time has 3 values"):
            net(x_t, mu, torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("kind", ["unet", "nafnet"])
def test_channels_last_and_bf16_autocast(kind):
    net = MAKERS[kind]()
    x_t, mu = inputs(1, 30, 26)
    with torch.no_grad():
        ref = net(x_t, mu, 9)
        net_cl = net.to(memory_format=torch.channels_last)
        x_cl, mu_cl = x_t.to(memory_format=torch.channels_last), mu.to(memory_format=torch.channels_last)
        torch.testing.assert_close(net_cl(x_cl, mu_cl, 9), ref, atol=1e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net_cl(x_cl, mu_cl, 9)
    assert low.shape == ref.shape and low.dtype == torch.float32 and torch.isfinite(low).all()
    # bf16 keeps ~3 significant digits: the result must stay close to float32, not merely finite.
    assert (low - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


# ---------------------------------------------------------------- loading weights


def assert_same_outputs(a: nn.Module, b: nn.Module) -> None:
    x_t, mu = inputs(1, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(a(x_t, mu, 12), b(x_t, mu, 12), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["unet", "nafnet"])
def test_release_formats_load_to_the_same_network(kind, tmp_path: Path):
    net = MAKERS[kind]()
    decoy = perturb_constants(MAKERS[kind](), seed=5)  # another network, to check which copy is picked
    sd = net.state_dict()
    files = {
        "plain.pth": sd,
        "module.pth": {f"module.{k}": v for k, v in sd.items()},
        "params_ema.pth": {
            "params": decoy.state_dict(),
            "params_ema": {f"module.{k}": v for k, v in sd.items()},
        },
        "wrapped.pth": {"state_dict": sd, "iter": 7},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        loaded = load_network(tmp_path / name)
        assert type(loaded) is type(net) and not loaded.training
        assert_same_outputs(loaded, net)


def test_suite_checkpoint_prefers_the_ema_copy(tmp_path: Path):
    from omegaconf import OmegaConf

    ema, raw = make_unet(), perturb_constants(make_unet(), seed=3)
    state = {f"net.{k}": v for k, v in raw.state_dict().items()}
    state.update({f"ema_net.{k}": v for k, v in ema.state_dict().items()})
    state["sde.thetas"] = torch.ones(3)  # other module state that is not the network
    ckpt = {
        "state_dict": state,
        "config": {"model": {"net": dict(UNET_KWARGS)}},
        "hyper_parameters": {"cfg": OmegaConf.create({"a": [1, 2], "b": {"c": None}})},
        "pytorch-lightning_version": "2.6.6",
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    assert_same_outputs(load_network(tmp_path / "last.ckpt"), ema)

    only_net = {"state_dict": {f"net.{k}": v for k, v in raw.state_dict().items()}}
    torch.save(only_net, tmp_path / "no_ema.ckpt")
    assert_same_outputs(load_network(tmp_path / "no_ema.ckpt"), raw)
    assert set(load_state_dict_any(tmp_path / "no_ema.ckpt")) == set(raw.state_dict())


@pytest.mark.parametrize(
    "kwargs, expected_ch_mult",
    [
        ({"in_nc": 3, "out_nc": 3, "nf": 8, "depth": 3}, [2, 4, 8]),
        ({"in_nc": 1, "out_nc": 2, "nf": 4, "depth": 2}, [2, 4]),
        ({"in_nc": 3, "out_nc": 3, "nf": 4, "depth": 4, "ch_mult": [1, 2, 4, 4]}, [1, 2, 4, 4]),
    ],
)
def test_infer_unet_config(kwargs, expected_ch_mult):
    with torch.device("meta"):
        sd = ConditionalUNet(**kwargs).state_dict()
    assert infer_unet_config(sd) == {**kwargs, "ch_mult": expected_ch_mult}


@pytest.mark.parametrize(
    "kwargs",
    [
        NAFNET_KWARGS,
        {"img_channel": 1, "width": 16, "middle_blk_num": 2, "enc_blk_nums": [1, 0, 3],
         "dec_blk_nums": [2, 0, 1]},
        {"img_channel": 3, "width": 64, "middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 28],
         "dec_blk_nums": [1, 1, 1, 1]},
    ],
)
def test_infer_nafnet_config(kwargs):
    with torch.device("meta"):
        sd = ConditionalNAFNet(**kwargs).state_dict()
    assert infer_nafnet_config(sd) == kwargs


def test_inferred_nf32_unet_loads_through_load_network(tmp_path: Path):
    # Like the released inpainting weights: the width comes from the tensors, not from any default.
    net = make_unet(nf=16, depth=2)
    torch.save(net.state_dict(), tmp_path / "lastest_EMA.pth")
    loaded = load_network(tmp_path / "lastest_EMA.pth")
    assert loaded.init_conv.out_channels == 16 and loaded.depth == 2
    assert_same_outputs(loaded, net)


def test_unrelated_weights_raise_value_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "linear_only.pth"
    torch.save(nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(ValueError, match="linear_only.pth") as info:
        load_network(path)
    assert "weight" in str(info.value)  # says what was found

    truncated = make_unet().state_dict()
    del truncated["final_res_block.block2.proj.weight"]
    torch.save(truncated, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*final_res_block\.block2\.proj\.weight"):
        load_network(tmp_path / "broken.pth")

    with pytest.raises(ValueError, match="missing.pth"):
        load_network(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(ValueError, match="text.pth"):
        load_network(tmp_path / "text.pth")


class RunInfo:
    """A pickled custom object: weights_only loading refuses it."""

    def __init__(self, note: str) -> None:
        self.note = note


def test_files_with_custom_objects_need_trusted(tmp_path: Path):
    net = make_unet()
    path = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {f"ema_net.{k}": v for k, v in net.state_dict().items()}, "info": RunInfo("x")},
               path)
    with pytest.raises(ValueError, match=r"custom\.ckpt.*RunInfo.*trusted=True"):
        load_network(path)
    assert_same_outputs(load_network(path, trusted=True), net)


def test_intro_skip_adds_the_intro_features_before_ending() -> None:
    """The official latent-dehazing NAFNet adds the intro features to the last decoder output (no parameters)."""
    torch.manual_seed(0)
    net = ConditionalNAFNet(img_channel=8, width=16, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]).eval()
    x, mu = torch.randn(1, 8, 12, 12), torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        plain = net(x, mu, 5)
        net.intro_skip = True
        stem = net.intro(torch.cat([x - mu, mu], dim=1))
        torch.testing.assert_close(net(x, mu, 5) - plain, F.conv2d(stem, net.ending.weight, padding=1),
                                   atol=1e-5, rtol=0)
