"""Tests of latent Refusion's U-Net autoencoder: official layout, shapes, padding, and the decoder's use of the
degraded image's hidden features. Output parity with the official class: scripts/check_refusion_parity.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from irsde.nets.latent_autoencoder import EncoderFeatures, LatentUNet


@pytest.fixture(scope="module")
def net() -> LatentUNet:
    torch.manual_seed(0)
    return LatentUNet().eval()  # the official options: ch 8, ch_mult [4, 8, 8, 16], embed_dim 8


def _image(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_state_dict_has_the_official_layout(net: LatentUNet) -> None:
    # Read off the official UNet built with the unet-latent options (Algolzw/image-restoration-sde @ 2598d73).
    sd = net.state_dict()
    assert len(sd) == 69
    assert sum(p.numel() for p in net.parameters()) == 2_007_859
    expected = {
        "init_conv.weight": (8, 3, 3, 3),
        "encoder.0.0.block1.proj.weight": (8, 8, 3, 3),
        "encoder.0.3.weight": (32, 8, 4, 4),
        "encoder.0.3.bias": (32,),
        "encoder.3.2.fn.norm.g": (1, 64, 1, 1),
        "encoder.3.2.fn.fn.to_qkv.weight": (384, 64, 1, 1),
        "encoder.3.2.fn.fn.to_out.1.g": (1, 64, 1, 1),
        "encoder.3.3.weight": (128, 64, 3, 3),
        "latent_conv.weight": (8, 128, 1, 1),
        "post_latent_conv.weight": (128, 8, 1, 1),
        "decoder.0.0.res_conv.weight": (128, 192, 1, 1),
        "decoder.0.2.fn.fn.to_out.0.bias": (128,),
        "decoder.2.3.1.weight": (32, 64, 3, 3),
        "decoder.3.3.weight": (8, 32, 3, 3),
        "final_conv.bias": (3,),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert not any(k.endswith(".bias") and k.startswith("init_conv") for k in sd)  # official convs: no bias


def test_encode_gives_an_8_channel_latent_at_one_eighth(net: LatentUNet) -> None:
    x = _image(2, 64, 48)
    with torch.no_grad():
        latent, hidden = net.encode(x)
        out = net.decode(latent, hidden)
    assert latent.shape == (2, 8, 8, 6)
    # init_conv output, then two per level at scales 1, 1/2, 1/4, 1/8 with widths 8, 32, 64, 64.
    shapes = [tuple(f.shape[1:]) for f in hidden.features]
    assert shapes == [(8, 64, 48)] * 3 + [(32, 32, 24)] * 2 + [(64, 16, 12)] * 2 + [(64, 8, 6)] * 2
    assert hidden.size == (64, 48)
    assert out.shape == x.shape


@pytest.mark.parametrize(("h", "w", "latent_hw"), [(70, 54, (10, 8)), (72, 40, (10, 6)), (5, 7, (2, 2))])
def test_sizes_that_are_not_multiples_of_16(net: LatentUNet, h: int, w: int, latent_hw: tuple[int, int]) -> None:
    # The official code reflect-pads to 2**depth = 16 (not 8): the latent is ceil(H / 16) * 2 high.
    x = _image(1, h, w)
    with torch.no_grad():
        latent, hidden = net.encode(x)
        out = net.decode(latent, hidden)
    assert latent.shape[-2:] == latent_hw
    assert out.shape == x.shape


def test_padding_is_reflection_to_16_and_decode_crops(net: LatentUNet) -> None:
    # Independent padding: F.pad reflect of a 70x54 image to 80x64 gives the same latent and, cropped, output.
    x = _image(1, 70, 54, seed=3)
    padded = F.pad(x, (0, 10, 0, 10), mode="reflect")
    with torch.no_grad():
        latent, hidden = net.encode(x)
        latent_p, hidden_p = net.encode(padded)
        torch.testing.assert_close(latent, latent_p, atol=0, rtol=0)
        torch.testing.assert_close(net.decode(latent, hidden), net.decode(latent_p, hidden_p)[..., :70, :54])
        # The stem feature is the bias-free 3x3 init_conv of the padded image.
        torch.testing.assert_close(hidden.features[0], F.conv2d(padded, net.init_conv.weight, padding=1))


def test_decoder_uses_the_hidden_features_it_is_given() -> None:
    # PyTorch's default init shrinks activations level by level, so an untrained decoder would all but ignore
    # its latent; doubled convolution weights keep the signal alive through the depth.
    torch.manual_seed(0)
    net = LatentUNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 4:
                p.mul_(2.0)
    a, b = _image(1, 48, 48, seed=1), _image(1, 48, 48, seed=2)
    with torch.no_grad():
        latent_a, hidden_a = net.encode(a)
        latent_b, hidden_b = net.encode(b)
        own = net.decode(latent_a, hidden_a)
        swapped_hidden = net.decode(latent_a, hidden_b)
        swapped_latent = net.decode(latent_b, hidden_a)
        torch.testing.assert_close(own, net(a))
    scale = own.abs().max()
    # Both inputs of the decoder matter: other hidden features or another latent change the image.
    assert (own - swapped_hidden).abs().max() > 0.1 * scale
    assert (own - swapped_latent).abs().max() > 0.1 * scale


def test_stem_feature_reaches_the_output_through_final_conv_only(net: LatentUNet) -> None:
    # Official: final_conv(x + h[0]); h[0] feeds nothing else, so a change of it passes linearly.
    x = _image(1, 32, 48, seed=4)
    delta = 0.1 * torch.randn(1, 8, 32, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        latent, hidden = net.encode(x)
        moved = EncoderFeatures([hidden.features[0] + delta, *hidden.features[1:]], hidden.size)
        change = net.decode(latent, moved) - net.decode(latent, hidden)
        torch.testing.assert_close(change, F.conv2d(delta, net.final_conv.weight, padding=1), atol=1e-6, rtol=0)


def test_decode_rejects_features_of_another_size(net: LatentUNet) -> None:
    with torch.no_grad():
        latent, _ = net.encode(_image(1, 32, 32))
        _, hidden = net.encode(_image(1, 64, 64))
        with pytest.raises(ValueError, match="does not match"):
            net.decode(latent, hidden)
        with pytest.raises(ValueError, match="hidden features"):
            net.decode(latent, EncoderFeatures(hidden.features[:-1], hidden.size))
