"""DiffIR networks: shapes and padding, IPR modulation, the IPR diffusion chain, weight loading, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffir.dirformer import DIRformer, LayerNorm, TransformerBlock
from diffir.ipr_diffusion import IPRDenoiser, IPRDiffusion
from diffir.networks import DiffIRS1, DiffIRS2
from diffir.official import infer_config, load_network, load_state_dict_any

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 4, 8),
            ffn_expansion_factor=2.0, n_encoder_res=1)


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    """Jitter every parameter (norm gains and temperatures too), so that no branch is a no-op."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            spread = p.std().item() if p.numel() > 1 else 0.0
            p.add_(torch.randn(p.shape, generator=gen) * (0.1 if spread == 0.0 else 0.3 * spread))
    return net.eval()


def _official_betas(timesteps: int = 4, start: float = 0.1, end: float = 0.99) -> np.ndarray:
    return np.linspace(math.sqrt(start), math.sqrt(end), timesteps) ** 2


# ---------------------------------------------------------------- shapes and padding


@pytest.mark.parametrize("size", [(32, 32), (30, 26)])
def test_output_shapes_for_aligned_and_odd_sizes(size):
    torch.manual_seed(0)
    h, w = size
    s1, s2 = _randomise(DiffIRS1(**TINY), 1), _randomise(DiffIRS2(**TINY), 2)
    lq, gt = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    with torch.no_grad():
        assert s1(lq, gt).shape == (2, 3, h, w)
        assert s2(lq).shape == (2, 3, h, w)
        sr = DiffIRS2(scale=4, LayerNorm_type="BiasFree", **TINY).eval()
        assert sr(lq[..., :9, :7]).shape == (2, 3, 36, 28)
        inpaint = DiffIRS1(inp_channels=4, **TINY).eval()
        assert inpaint(torch.rand(1, 4, h, w), gt[:1]).shape == (1, 3, h, w)


def test_odd_size_equals_reflect_padded_aligned_run_cropped():
    torch.manual_seed(0)
    net = _randomise(DiffIRS1(**TINY), 3)
    lq, gt = torch.rand(1, 3, 30, 26), torch.rand(1, 3, 30, 26)
    # The official test code: reflect-pad right/bottom to a multiple of 8, run, crop.
    lq_p, gt_p = (F.pad(x, (0, 6, 0, 2), mode="reflect") for x in (lq, gt))
    with torch.no_grad():
        expected = net(lq_p, gt_p)[..., :30, :26]
        torch.testing.assert_close(net(lq, gt), expected, rtol=0, atol=1e-6)
        # And the padding matters (replicate padding would give another result).
        other = net(*(F.pad(x, (0, 6, 0, 2), mode="replicate") for x in (lq, gt)))[..., :30, :26]
        assert (other - expected).abs().max() > 1e-4


def test_sr_x4_multiple_is_on_the_low_resolution_grid():
    net = _randomise(DiffIRS1(scale=4, **TINY), 4)
    lq, gt = torch.rand(1, 3, 11, 13), torch.rand(1, 3, 44, 52)
    lq_p = F.pad(lq, (0, 3, 0, 5), mode="reflect")
    gt_p = F.pad(gt, (0, 12, 0, 20), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(net(lq, gt), net(lq_p, gt_p)[..., :44, :52], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="4x the size"):
        net(lq, lq)


# ---------------------------------------------------------------- IPR modulation


def test_different_ipr_gives_different_output():
    net = _randomise(DIRformer(**{k: v for k, v in TINY.items() if k != "n_encoder_res"}), 5)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a = net(x, torch.randn(1, 256, generator=torch.Generator().manual_seed(0)))
        b = net(x, torch.randn(1, 256, generator=torch.Generator().manual_seed(1)))
    assert (a - b).abs().max() > 1e-3


def test_with_bias_layer_norm_is_timm_layer_norm2d_with_the_official_keys_and_outputs():
    norm = _randomise(LayerNorm(48, "WithBias"), 7)
    assert {k: tuple(v.shape) for k, v in norm.state_dict().items()} == {"body.weight": (48,), "body.bias": (48,)}
    x = torch.randn(2, 48, 17, 13) * 3 + 1
    # Restormer's WithBias_LayerNorm on the (B, HW, C) view, written out in float32.
    var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
    official = (x - mean) / torch.sqrt(var + 1e-5) * norm.body.weight[:, None, None] + norm.body.bias[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(norm(x), official, rtol=0, atol=3e-6)


def _plain_restormer_block(block: TransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """Restormer's block without modulation, written out from its conv weights."""

    def layer_norm(t, norm):
        mu = t.mean(1, keepdim=True)
        var = ((t - mu) ** 2).mean(1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * norm.weight[:, None, None] + norm.bias[:, None, None]

    a, f = block.attn, block.ffn
    b, c, h, w = x.shape
    y = layer_norm(x, block.norm1.body)
    qkv = F.conv2d(F.conv2d(y, a.qkv.weight), a.qkv_dwconv.weight, padding=1, groups=3 * c)
    heads = a.num_heads
    ch = c // heads
    outs = []
    for i in range(heads):
        q, k, v = (qkv[:, j * c + i * ch: j * c + (i + 1) * ch].reshape(b, ch, h * w) for j in range(3))
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        attn = torch.softmax(q @ k.transpose(1, 2) * a.temperature[i], dim=-1)
        outs.append((attn @ v).reshape(b, ch, h, w))
    x = x + F.conv2d(torch.cat(outs, 1), a.project_out.weight)
    y = layer_norm(x, block.norm2.body)
    hidden = f.project_out.weight.shape[1]
    z = F.conv2d(F.conv2d(y, f.project_in.weight), f.dwconv.weight, padding=1, groups=2 * hidden)
    return x + F.conv2d(F.gelu(z[:, :hidden]) * z[:, hidden:], f.project_out.weight)


def test_identity_modulation_equals_plain_restormer_block():
    torch.manual_seed(0)
    block = _randomise(TransformerBlock(16, 4, 2.0, bias=False, layer_norm_type="WithBias"), 6)
    # Kernels that map the IPR e_0 to scale = 1, shift = 0: modulation becomes the identity.
    with torch.no_grad():
        for kernel in (block.attn.kernel[0], block.ffn.kernel[0]):
            kernel.weight.zero_()
            kernel.weight[:16, 0] = 1.0
    ipr = torch.zeros(1, 256)
    ipr[0, 0] = 1.0
    x = torch.randn(2, 16, 8, 6)
    with torch.no_grad():
        expected = _plain_restormer_block(block, x)
        torch.testing.assert_close(block(x, ipr), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block(x, None), expected, rtol=1e-5, atol=1e-5)
        # A scale of 2 on the same IPR changes the result: the modulation is really applied.
        block.attn.kernel[0].weight[:16, 0] = 2.0
        assert (block(x, ipr) - expected).abs().max() > 1e-3


def test_zeroed_modulation_weights_make_bias_free_blocks_identities():
    """Official semantics are x * scale + shift: zero kernels zero the branch inputs, and with bias=False
    the attention and FFN branches of zero input are zero, leaving the conv skeleton of the U-net."""
    net = _randomise(DIRformer(dim=8, num_blocks=(1, 2, 1, 1), num_refinement_blocks=2, bias=False), 7)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".kernel." in name:
                p.zero_()
        x = torch.rand(1, 3, 16, 24)
        enc1 = net.patch_embed(x)
        enc2 = net.down1_2(enc1)
        enc3 = net.down2_3(enc2)
        latent = net.down3_4(enc3)
        dec3 = net.reduce_chan_level3(torch.cat([net.up4_3(latent), enc3], 1))
        dec2 = net.reduce_chan_level2(torch.cat([net.up3_2(dec3), enc2], 1))
        expected = net.output(torch.cat([net.up2_1(dec2), enc1], 1)) + x
        for seed in (0, 1):
            ipr = torch.randn(1, 256, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(net(x, ipr), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- IPR diffusion


class _KnownDenoiser(nn.Module):
    """x0_hat = 0.5 x + 0.1 t + c: a fixed map, so the chain can be recomputed by hand."""

    def forward(self, x, t, c):
        return 0.5 * x + 0.1 * t.float().view(-1, 1) + c


def test_schedule_buffers_match_closed_forms():
    diff = IPRDiffusion(IPRDenoiser(), timesteps=4)
    betas = _official_betas()
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    np.testing.assert_allclose(diff.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(diff.posterior_mean_coef1.numpy(), betas * np.sqrt(abar_prev) / (1 - abar),
                               rtol=1e-6)
    np.testing.assert_allclose(diff.posterior_mean_coef2.numpy(),
                               (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar), rtol=1e-6, atol=1e-7)
    # The reference summary's numbers: q_sample at t = 3 scales by 0.051 and 0.9987.
    assert diff.sqrt_alphas_cumprod[3].item() == pytest.approx(0.051, abs=5e-4)
    assert diff.sqrt_one_minus_alphas_cumprod[3].item() == pytest.approx(0.9987, abs=5e-4)


def test_reverse_chains_match_direct_computation():
    diff = IPRDiffusion(_KnownDenoiser(), timesteps=4)
    betas = _official_betas()
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    coef1 = betas * np.sqrt(abar_prev) / (1 - abar)
    coef2 = (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar)
    gen = torch.Generator().manual_seed(0)
    c, start = torch.randn(3, 256, generator=gen), torch.randn(3, 256, generator=gen)
    ipr_s1, noise = torch.randn(3, 256, generator=gen), torch.randn(3, 256, generator=gen)

    def by_hand(x):
        x, cc, steps = x.double().numpy(), c.double().numpy(), []
        for t in (3, 2, 1, 0):
            x = coef1[t] * (0.5 * x + 0.1 * t + cc) + coef2[t] * x
            steps.append(x)
        return x, steps

    expected, _ = by_hand(start)
    np.testing.assert_allclose(diff.sample(c, start).numpy(), expected, rtol=1e-5, atol=1e-5)
    # At t = 0 the posterior mean is the x0 prediction itself.
    assert coef1[0] == pytest.approx(1.0) and coef2[0] == pytest.approx(0.0)

    x_t = torch.from_numpy(np.sqrt(abar[3]) * ipr_s1.double().numpy() + np.sqrt(1 - abar[3]) * noise.numpy())
    expected, expected_steps = by_hand(x_t)
    final, steps = diff.train_chain(ipr_s1, c, noise)
    assert len(steps) == 4
    np.testing.assert_allclose(final.numpy(), expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(steps, expected_steps, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_denoiser_sees_time_over_ten_T():
    den = IPRDenoiser(n_denoise_res=0, timesteps=4)
    with torch.no_grad():
        den.resmlp[0].weight.zero_()
        den.resmlp[0].bias.zero_()
        den.resmlp[0].weight[:, 256] = 1.0  # input layout: [c (256), t, x (256)]
    out = den(torch.randn(2, 256), torch.tensor([3, 1]), torch.randn(2, 256))
    torch.testing.assert_close(out[:, 0], torch.tensor([3 / 40, 1 / 40]))


def test_q_sample_statistics():
    diff = IPRDiffusion(IPRDenoiser(), timesteps=4)
    abar = np.cumprod(1 - _official_betas())
    torch.manual_seed(0)
    x0 = torch.full((4000, 256), 2.0)
    for t in (0, 2):
        xt = diff.q_sample(x0, torch.full((4000,), t, dtype=torch.long))
        assert xt.mean().item() == pytest.approx(2.0 * math.sqrt(abar[t]), abs=0.01)
        assert xt.std().item() == pytest.approx(math.sqrt(1 - abar[t]), rel=0.01)


def test_sampling_consumes_the_rng_like_the_official_code_without_using_it():
    diff = IPRDiffusion(_KnownDenoiser(), timesteps=4)
    c = torch.randn(2, 256)
    torch.manual_seed(5)
    out = diff.sample(c)
    after = torch.randn(3)
    torch.manual_seed(5)
    start = torch.randn(2, 256)  # the starting noise, then one discarded draw per step
    for _ in range(4):
        torch.randn(2, 256)
    torch.testing.assert_close(after, torch.randn(3))
    diff.match_official_rng = False
    torch.testing.assert_close(out, diff.sample(c, start))


def test_training_chain_is_differentiable_end_to_end():
    net = _randomise(DiffIRS2(**TINY), 8).train()
    restored, ipr, steps = net.forward_train(torch.rand(1, 3, 16, 16), torch.randn(1, 256))
    assert len(steps) == 4 and ipr.shape == (1, 256)
    (restored.mean() + ipr.abs().mean()).backward()
    for name in ("denoise.resmlp.0.weight", "condition.E.0.weight", "G.patch_embed.proj.weight"):
        assert net.get_parameter(name).grad.abs().sum() > 0, name


# ---------------------------------------------------------------- weights files


def _outputs(net, stage: int, lq, gt):
    with torch.no_grad():
        if stage == 1:
            return net(lq, gt)
        torch.manual_seed(11)
        return net(lq)


@pytest.mark.parametrize("stage", [1, 2])
def test_weights_files_load_and_reproduce_outputs(tmp_path, stage):
    cls = DiffIRS1 if stage == 1 else DiffIRS2
    net, other = _randomise(cls(**TINY), 20), _randomise(cls(**TINY), 21)
    sd, other_sd = net.state_dict(), other.state_dict()
    lq, gt = torch.rand(1, 3, 24, 20), torch.rand(1, 3, 24, 20)
    expected = _outputs(net, stage, lq, gt)
    files = {
        "basicsr.pth": {"params": other_sd, "params_ema": {f"module.{k}": v for k, v in sd.items()}},
        "plain.pth": sd,
        "lightning.ckpt": {"state_dict": {**{f"net.{k}": v for k, v in other_sd.items()},
                                          **{f"ema_net.{k}": v for k, v in sd.items()}},
                           "config": {"name": "x", "lr": 1e-4}},
        "lama.ckpt": {"state_dict": {**{f"generator.{k}": v for k, v in sd.items()},
                                     **{f"generatorS1.{k}": v for k, v in other_sd.items()},
                                     "discriminator.model.0.weight": torch.zeros(3)}},
    }
    if stage == 2:  # a file without the DDPM's duplicate keys and buffers
        files["no_aliases.pth"] = {k: v for k, v in sd.items() if not k.startswith("diffusion.")}
    for name, payload in files.items():
        torch.save(payload, tmp_path / name)
        loaded = load_network(tmp_path / name)
        assert isinstance(loaded, cls) and not loaded.training, name
        torch.testing.assert_close(_outputs(loaded, stage, lq, gt), expected, rtol=0, atol=0, msg=name)
    assert set(load_state_dict_any(tmp_path / "basicsr.pth")) == set(sd)


def test_infer_config_recovers_constructor_arguments():
    configs = [
        (DiffIRS1, dict(TINY)),
        (DiffIRS2, dict(TINY, dim=16, num_blocks=(2, 1, 3, 1), heads=(2, 2, 4, 8), ffn_expansion_factor=2.66,
                        bias=True, n_denoise_res=2, timesteps=5, linear_start=0.05, linear_end=0.9)),
        (DiffIRS2, dict(TINY, scale=4, LayerNorm_type="BiasFree", ffn_expansion_factor=2.2, n_encoder_res=3)),
        (DiffIRS1, dict(TINY, scale=2)),
        (DiffIRS1, dict(TINY, dim=12, inp_channels=4, num_refinement_blocks=0, ffn_expansion_factor=1.8)),
    ]
    for cls, kwargs in configs:
        cfg = infer_config(cls(**kwargs).state_dict())
        assert cfg.pop("stage") == (1 if cls is DiffIRS1 else 2)
        for key, value in kwargs.items():
            got = cfg[key]
            assert (list(got) if isinstance(value, tuple) else got) == (
                list(value) if isinstance(value, tuple) else value), (cls.__name__, key, got, value)
        assert cfg["residual"] == (kwargs.get("inp_channels", 3) == 3)


def test_wrong_files_raise_value_error_naming_them(tmp_path):
    not_diffir = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, not_diffir)
    not_torch = tmp_path / "notes.pth"
    not_torch.write_text("hello")
    generator_only = tmp_path / "dirformer_only.pth"
    torch.save({k: v for k, v in DiffIRS1(**TINY).state_dict().items() if k.startswith("G.")}, generator_only)
    for path in (not_diffir, not_torch, generator_only, tmp_path / "missing.pth"):
        with pytest.raises(ValueError, match=path.name):
            load_network(path)


# ---------------------------------------------------------------- dtypes and memory formats


def test_bf16_autocast_and_channels_last():
    net = _randomise(DiffIRS2(**TINY), 30)
    lq = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)
        ref = net(lq)
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(lq)
        assert torch.isfinite(low).all()
        assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
        net_cl = net.to(memory_format=torch.channels_last)
        torch.manual_seed(0)
        out_cl = net_cl(lq.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-5)


def test_package_level_load_network(tmp_path):
    import diffir
    from diffir.networks import DiffIRS1

    torch.manual_seed(0)
    net = DiffIRS1(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1], n_encoder_res=1).eval()
    path = tmp_path / "s1.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    lq, gt = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(diffir.load_network(path)(lq, gt), net(lq, gt))
