"""DiffPIR's prior: guided-diffusion's UNet (names, shapes, numerics) and loading it from files."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import CheckpointError
from diffpir.official import infer_config, load_prior
from diffpir.prior import PRESETS, GuidedUNet, small_config
from diffpir.prior.unet import GroupNorm32, qkv_attention, timestep_embedding

# A second small layout using every branch the released priors do not: two blocks per level, attention at two
# levels, additive time injection, convolution resampling, the new q/k/v order, explicit head counts.
VARIANT = small_config(num_res_blocks=2, attention_resolutions=(2, 4), use_scale_shift_norm=False,
                       resblock_updown=False, use_new_attention_order=True, num_head_channels=-1,
                       num_heads=2, num_heads_upsample=4, out_channels=3)


def randomized(config: dict, seed: int = 0) -> GuidedUNet:
    """A GuidedUNet with every parameter random (the zero-initialised output convolutions included)."""
    net = GuidedUNet(**config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(math.prod(p.shape[1:])))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


@pytest.fixture(scope="module")
def net() -> GuidedUNet:
    return randomized(small_config())


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def meta_state_shapes(config: dict) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return GuidedUNet(**config).state_dict()


# -------------------------------------------------------------------------------------- the network
def test_output_shape_and_channels(net, x):
    with torch.no_grad():
        assert net(x, torch.tensor([3, 7])).shape == (2, 6, 32, 32)
        assert randomized(VARIANT)(x, 5).shape == (2, 3, 32, 32)
    assert GuidedUNet(**small_config(out_channels=None, learn_sigma=False)).out_channels == 3
    assert GuidedUNet(**small_config(out_channels=None)).out_channels == 6
    with pytest.raises(ValueError, match="learn_sigma"):
        GuidedUNet(**small_config(out_channels=6, learn_sigma=False))
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.zeros(1, 3, 30, 30), 1)


def test_fresh_network_outputs_zero():
    # The official initialisation zeroes the final convolution, so an untrained network predicts exactly 0.
    fresh = GuidedUNet(**small_config())
    assert torch.count_nonzero(fresh(torch.randn(1, 3, 32, 32), 10)) == 0


def test_time_input_matters_and_accepts_scalars(net, x):
    with torch.no_grad():
        early, late = net(x, torch.tensor([10, 10])), net(x, torch.tensor([500, 500]))
        assert (early - late).abs().max() > 1e-2
        assert torch.equal(net(x, 10), early)
        assert torch.equal(net(x, torch.tensor(500)), late)
        mixed = net(x, torch.tensor([10, 500]))
    torch.testing.assert_close(mixed[0], early[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], late[1], rtol=1e-5, atol=1e-5)


# Outputs of guided-diffusion's own UNetModel (openai/guided-diffusion @ HEAD, run once by hand with the
# weights of `randomized(config)` loaded and x from `torch.randn(2, 3, 32, 32)` seeded 1, t = [10, 500]):
# out[0, :, 16, 16], out[1, :, 5, 9] and mean |out|. scripts/check_diffpir_parity.py repeats the comparison
# against a live checkout at full size.
OFFICIAL_OUTPUTS = {
    "small": ([-0.179674, 0.174856, -1.206745, 1.172999, -0.680436, -0.646222],
              [0.001069, -0.980439, 0.369462, 0.239092, 0.157116, -0.177771], 0.494090),
    "variant": ([1.555565, 0.410172, 0.317612], [0.269004, 0.746280, 0.581972], 0.545866),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_OUTPUTS))
def test_outputs_match_values_from_the_official_code(name, x):
    config = small_config() if name == "small" else VARIANT
    with torch.no_grad():
        out = randomized(config)(x, torch.tensor([10, 500]))
    first, second, mean_abs = OFFICIAL_OUTPUTS[name]
    torch.testing.assert_close(out[0, :, 16, 16], torch.tensor(first), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1, :, 5, 9], torch.tensor(second), atol=1e-4, rtol=0)
    assert out.abs().mean().item() == pytest.approx(mean_abs, abs=1e-5)


def test_timestep_embedding_matches_the_formula():
    t = torch.tensor([0.0, 3.0, 999.0])
    dim = 10
    half = dim // 2
    freqs = np.array([10000.0 ** (-i / half) for i in range(half)])
    args = t.numpy()[:, None].astype(np.float64) * freqs[None]
    expected = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    np.testing.assert_allclose(timestep_embedding(t, dim).numpy(), expected, atol=1e-4)
    odd = timestep_embedding(t, 7)
    assert odd.shape == (3, 7) and torch.all(odd[:, -1] == 0)


def naive_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q^T k / sqrt(ch)) applied to v, for (ch, T) arrays of one head."""
    scores = q.T @ k / math.sqrt(q.shape[0])
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return v @ weights.T


@pytest.mark.parametrize("legacy", [True, False])
def test_qkv_attention_matches_per_head_loops(legacy):
    batch, heads, ch, length = 2, 3, 4, 5
    qkv = torch.randn(batch, 3 * heads * ch, length, dtype=torch.float64)
    out = qkv_attention(qkv, heads, legacy_order=legacy).numpy()
    data = qkv.numpy()
    for b in range(batch):
        for h in range(heads):
            if legacy:  # channels grouped per head: [q_h; k_h; v_h]
                block = data[b, h * 3 * ch:(h + 1) * 3 * ch]
                q, k, v = block[:ch], block[ch:2 * ch], block[2 * ch:]
            else:  # [q_0..q_H; k_0..k_H; v_0..v_H]
                starts = [part * heads * ch + h * ch for part in range(3)]
                q, k, v = (data[b, start:start + ch] for start in starts)
            np.testing.assert_allclose(out[b, h * ch:(h + 1) * ch], naive_attention(q, k, v), atol=1e-10)


def test_groupnorm32_normalises_groups_of_channels_and_keeps_the_dtype():
    norm = GroupNorm32(64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(2, 64, 4, 4) * 3 + 100).to(torch.bfloat16)  # large mean: bf16 statistics would be off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = norm(x)
    xf = x.float().reshape(2, 32, -1)
    normed = ((xf - xf.mean(-1, keepdim=True)) / torch.sqrt(xf.var(-1, unbiased=False, keepdim=True) + 1e-5))
    expected = normed.reshape(2, 64, 4, 4) * norm.weight[:, None, None] + norm.bias[:, None, None]
    assert got.dtype == torch.bfloat16
    # Float32 statistics, rounded once to bf16 at the end: within one bf16 step (2^-8 relative).
    torch.testing.assert_close(got.float(), expected.detach(), atol=1e-2, rtol=4e-3)


def test_bf16_autocast_and_channels_last(net, x):
    with torch.no_grad():
        reference = net(x, torch.tensor([10, 500]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, torch.tensor([10, 500]))
        net_cl = randomized(small_config()).to(memory_format=torch.channels_last)
        cl = net_cl(x.to(memory_format=torch.channels_last), torch.tensor([10, 500]))
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    rel = (low - reference).norm() / reference.norm()
    assert rel < 0.05, rel
    torch.testing.assert_close(cl, reference, rtol=1e-4, atol=1e-4)


def test_released_architectures_have_the_official_names_and_sizes():
    ffhq = meta_state_shapes(PRESETS["ffhq_10m"])
    assert sum(t.numel() for t in ffhq.values()) == 93_563_910
    imagenet = meta_state_shapes(PRESETS["imagenet_256_uncond"])
    assert sum(t.numel() for t in imagenet.values()) == 552_814_086
    # Shapes worked out by hand from UNetModel's loops for the FFHQ flags (128 ch, mult 1,1,2,2,4,4, attention
    # at 16x16 maps = 5th level, one block per level, up/down ResBlocks, scale-shift, 6 output channels).
    expected = {
        "time_embed.0.weight": (512, 128),
        "input_blocks.0.0.weight": (128, 3, 3, 3),
        "input_blocks.2.0.in_layers.2.weight": (128, 128, 3, 3),  # level 0's down-ResBlock
        "input_blocks.5.0.skip_connection.weight": (256, 128, 1, 1),  # first block of level 2 widens
        "input_blocks.9.0.emb_layers.1.weight": (1024, 512),  # scale and shift for 512 channels
        "input_blocks.9.1.qkv.weight": (1536, 512, 1),
        "middle_block.1.proj_out.weight": (512, 512, 1),
        "output_blocks.0.0.in_layers.0.weight": (1024,),
        "output_blocks.1.1.out_layers.3.weight": (512, 512, 3, 3),  # up-ResBlock closing level 5
        "output_blocks.2.1.qkv.weight": (1536, 512, 1),
        "output_blocks.11.0.skip_connection.weight": (128, 256, 1, 1),
        "out.2.weight": (6, 128, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(ffhq[key].shape) == shape, key
    decoder_blocks = [k for k in ffhq if re.fullmatch(r"output_blocks\.\d+\.0\.in_layers\.0\.weight", k)]
    assert len(decoder_blocks) == 12
    assert "input_blocks.12.0.in_layers.0.weight" not in ffhq
    assert len([k for k in imagenet if k.endswith("qkv.weight")]) == 3 * 2 + 3 * 3 + 1


# --------------------------------------------------------------------------------- config inference
def test_infer_config_recovers_the_constructor_arguments():
    assert infer_config(meta_state_shapes(small_config()), {"image_size": 32}) == small_config()
    hints = {k: VARIANT[k] for k in ("image_size", "num_heads", "num_head_channels", "num_heads_upsample",
                                     "use_new_attention_order")}
    assert infer_config(meta_state_shapes(VARIANT), hints) == VARIANT
    # Dropout is not visible in weights: the released FFHQ model trained with 0.1, inference says 0.0.
    assert infer_config(meta_state_shapes(PRESETS["ffhq_10m"])) == {**PRESETS["ffhq_10m"], "dropout": 0.0}
    assert infer_config(meta_state_shapes(PRESETS["imagenet_256_uncond"])) == PRESETS["imagenet_256_uncond"]
    single_level = small_config(channel_mult=(2,), attention_resolutions=(1,), resblock_updown=False,
                                image_size=256)
    assert infer_config(meta_state_shapes(single_level)) == single_level


def test_infer_config_rejects_a_contradicting_config():
    with pytest.raises(ValueError, match="model_channels"):
        infer_config(meta_state_shapes(small_config()), {"model_channels": 64})


# ------------------------------------------------------------------------------------ loading files
def test_plain_state_dict_loads_and_reproduces(tmp_path, net, x):
    path = tmp_path / "prior.pt"
    torch.save(net.state_dict(), path)
    loaded = load_prior(path)
    assert not loaded.training
    assert loaded.config == {**small_config(), "image_size": 256}  # the size is not stored in the file
    with torch.no_grad():
        assert torch.equal(loaded(x, torch.tensor([10, 500])), net(x, torch.tensor([10, 500])))

    wrapped = tmp_path / "dataparallel.pt"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, wrapped)
    with torch.no_grad():
        assert torch.equal(load_prior(wrapped, preset=small_config())(x, 7), net(x, 7))


def test_suite_checkpoint_prefers_ema_and_uses_the_stored_config(tmp_path, x):
    # Non-default heads that the weights cannot show: only the stored config can give them.
    config = small_config(num_head_channels=32)
    online, ema = randomized(config, seed=1), randomized(config, seed=2)
    state = {f"net.{k}": v for k, v in online.state_dict().items()}
    state.update({f"ema_net.{k}": v for k, v in ema.state_dict().items()})
    ckpt = {
        "state_dict": state,
        "config": {"model": {"_target_": "diffpir.module.Prior",
                             "net": {"_target_": "diffpir.prior.unet.GuidedUNet", **config}}},
        "rng": {"numpy": ("MT19937", np.arange(624, dtype=np.uint32), 0)},  # as the suite stores RNG state
        "epoch": 3,
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    loaded = load_prior(path)
    assert loaded.config == config
    t = torch.tensor([10, 500])
    with torch.no_grad():
        got = loaded(x, t)
        assert torch.equal(got, ema(x, t))
        assert not torch.allclose(got, online(x, t))
        # Read with the default 64-channel heads the same weights compute something else.
        assert not torch.allclose(load_prior(path, preset=small_config())(x, t), got)

    # Lightning's hyper_parameters hold OmegaConf containers: still read with weights_only.
    from omegaconf import OmegaConf

    dictconfig = tmp_path / "omegaconf.ckpt"
    torch.save({**ckpt, "config": OmegaConf.create(ckpt["config"])}, dictconfig)
    from_dictconfig = load_prior(dictconfig)
    assert from_dictconfig.config == config
    with torch.no_grad():
        assert torch.equal(from_dictconfig(x, t), got)

    only_online = tmp_path / "no_ema.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in online.state_dict().items()}}, only_online)
    with torch.no_grad():
        assert torch.equal(load_prior(only_online, preset=config)(x, t), online(x, t))


def test_wrong_files_raise_errors_naming_them(tmp_path):
    irsde = tmp_path / "irsde_lastest_EMA.pth"
    torch.save({"init_conv.weight": torch.zeros(16, 6, 7, 7), "final_conv.weight": torch.zeros(3, 16, 3, 3)},
               irsde)
    with pytest.raises(CheckpointError, match="IR-SDE") as info:
        load_prior(irsde)
    assert str(irsde) in str(info.value) and isinstance(info.value, ValueError)
    assert "unconditional diffusion prior" in str(info.value)

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_prior(text)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_prior(tmp_path / "missing.pt")

    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="other.pt.*not a guided-diffusion UNet"):
        load_prior(other)

    small = tmp_path / "small.pt"
    torch.save(GuidedUNet(**small_config()).state_dict(), small)
    with pytest.raises(CheckpointError, match="small.pt.*preset 'ffhq_10m'"):
        load_prior(small, preset="ffhq_10m")
    with pytest.raises(CheckpointError, match="unknown prior preset"):
        load_prior(small, preset="celeba")


def test_loaded_network_is_usable_for_gradients_to_the_input(tmp_path, net, x):
    # DPS-style guidance differentiates through the prior with respect to x_t.
    path = tmp_path / "prior.pt"
    torch.save(net.state_dict(), path)
    loaded = load_prior(path)
    x_t = x.clone().requires_grad_(True)
    F.mse_loss(loaded(x_t, 50)[:, :3], torch.zeros_like(x)).backward()
    assert x_t.grad is not None and torch.isfinite(x_t.grad).all() and x_t.grad.abs().sum() > 0


def test_package_level_load_prior(tmp_path, net, x):
    import diffpir

    path = tmp_path / "prior.pt"
    torch.save(net.state_dict(), path)
    with torch.no_grad():
        assert torch.equal(diffpir.load_prior(path)(x, torch.tensor([3, 9])), net(x, torch.tensor([3, 9])))
