"""Tests of tiled encode / decode with the latent autoencoder: exact where the network is local or the image
fits one tile, close and seamless with the real (globally attending) network."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.nn import crop_to, pad_to_multiple
from core.tiling import tile_starts
from irsde.latent_tiling import tiled_decode, tiled_encode
from irsde.nets.latent_autoencoder import EncoderFeatures, LatentUNet


class LocalAE(torch.nn.Module):
    """An autoencoder of the official shapes whose outputs depend only on their own 8x8 block of pixels, so
    tiles whose offsets are multiples of 8 must reproduce the whole-image result exactly."""

    pad_multiple, downscale = 16, 8

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, EncoderFeatures]:
        size = (x.shape[-2], x.shape[-1])
        x = pad_to_multiple(x, 16)[0]
        feats = [x, 2 * x, x.square()] + [F.avg_pool2d(x, s) * self.w for s in (2, 2, 4, 4, 8, 8)]
        latent = torch.cat([F.avg_pool2d(x, 8), F.max_pool2d(x, 8), F.avg_pool2d(x.square(), 8)[:, :2]], 1)
        return latent, EncoderFeatures(feats, size)

    def decode(self, latent: torch.Tensor, hidden: EncoderFeatures) -> torch.Tensor:
        full = hidden.features[0].shape[-2:]
        out = F.interpolate(latent[:, :3] - latent[:, 3:6], size=full, mode="nearest")
        for i, f in enumerate(hidden.features):
            out = out + (i + 1) * F.interpolate(f, size=full, mode="nearest")
        return crop_to(out, hidden.size)


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    smooth = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 3 * yy), yy, xx * yy])[None]
    return smooth + 0.05 * torch.rand(1, 3, h, w, generator=gen)


@pytest.fixture(scope="module")
def net() -> LatentUNet:
    torch.manual_seed(0)
    return LatentUNet().eval()


def test_local_network_is_reproduced_exactly_at_every_scale() -> None:
    net, x = LocalAE(), _image(70, 54)
    with torch.no_grad():
        latent, hidden = net.encode(x)
        whole = net.decode(latent, hidden)
    t_latent, t_hidden = tiled_encode(net, x, tile=32, overlap=16)
    torch.testing.assert_close(t_latent, latent, atol=1e-6, rtol=0)
    assert t_hidden.size == hidden.size
    for a, b in zip(t_hidden.features, hidden.features, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled_decode(net, latent, hidden, tile=32, overlap=16), whole, atol=1e-5, rtol=0)
    latent_only, none = tiled_encode(net, x, tile=32, overlap=16, keep_hidden=False)
    assert none is None
    torch.testing.assert_close(latent_only, latent, atol=1e-6, rtol=0)


def test_one_tile_is_the_whole_call(net: LatentUNet) -> None:
    x = _image(48, 40)  # padded to 48x48: fits a 64 tile
    with torch.no_grad():
        latent, hidden = net.encode(x)
        whole = net.decode(latent, hidden)
    t_latent, t_hidden = tiled_encode(net, x, tile=64, overlap=32)
    torch.testing.assert_close(t_latent, latent, atol=0, rtol=0)
    torch.testing.assert_close(tiled_decode(net, t_latent, t_hidden, tile=64, overlap=32), whole, atol=0, rtol=0)


def _lively(net: LatentUNet) -> LatentUNet:
    """A copy with doubled convolution weights: PyTorch's default init shrinks activations level by level, so
    an untrained decoder all but ignores its latent (and tiling errors in the latent would not show)."""
    lively = copy.deepcopy(net)
    with torch.no_grad():
        for p in lively.parameters():
            if p.ndim == 4:
                p.mul_(2.0)
    return lively


def _edge_ratios(d: torch.Tensor, width: int, tile: int, overlap: int, stride: int) -> tuple[float, float]:
    """Over the columns of a difference map at 1/stride of the image: (largest |d| on the two columns at a
    tile's inner edge / largest |d| elsewhere, largest change of d across an edge / largest change elsewhere)."""
    starts = tile_starts(width, tile, overlap)
    edges = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < width}
    size = d.abs().amax(dim=(0, 1, 2))
    jumps = (d[..., 1:] - d[..., :-1]).abs().amax(dim=(0, 1, 2))
    at_edge = torch.zeros_like(size, dtype=torch.bool)
    across = torch.zeros_like(jumps, dtype=torch.bool)
    for edge in edges:
        at_edge[edge // stride - 1 : edge // stride + 1] = True
        across[edge // stride - 1] = True
    return (size[at_edge].max() / size[~at_edge].max()).item(), (jumps[across].max() / jumps[~across].max()).item()


# 128x160 in 96-pixel tiles overlapping by 64 (2 x 3 tiles): the last level's global attention sees one tile,
# so tiled results differ a little from whole-image ones; what matters is that tile edges do not stand out.
H, W, TILE, OVERLAP = 128, 160, 96, 64


def _tiled_and_whole(net: LatentUNet) -> tuple[torch.Tensor, ...]:
    x = _image(H, W)
    with torch.no_grad():
        latent, hidden = net.encode(x)
        whole = net.decode(latent, hidden)
    t_latent, t_hidden = tiled_encode(net, x, tile=TILE, overlap=OVERLAP)
    out = tiled_decode(net, t_latent, t_hidden, tile=TILE, overlap=OVERLAP)
    assert t_latent.shape == latent.shape and out.shape == whole.shape
    return t_latent, latent, out, whole


def test_real_network_close_to_the_whole_image(net: LatentUNet) -> None:
    t_latent, latent, out, whole = _tiled_and_whole(net)
    # Measured: latent 0.5 %, image 4e-6 of their largest values; equal weights over overlaps give 43 %, 33 %.
    assert (t_latent - latent).abs().max() < 0.02 * latent.abs().max()
    assert (out - whole).abs().max() < 1e-3 * whole.abs().max()
    # Errors at tile edges like elsewhere: measured 0.97 (latent) and 0.95 (image); equal weights 1.8 and 1.5.
    assert _edge_ratios(t_latent - latent, W, TILE, OVERLAP, stride=8)[0] < 1.25
    assert _edge_ratios(out - whole, W, TILE, OVERLAP, stride=1)[0] < 1.25


def test_no_seams_when_the_decoder_depends_on_its_latent(net: LatentUNet) -> None:
    t_latent, latent, out, whole = _tiled_and_whole(_lively(net))
    assert (t_latent - latent).abs().max() < 0.1 * latent.abs().max()  # measured 3.8 %; equal weights 44 %
    assert (out - whole).abs().max() < 0.25 * whole.abs().max()  # measured 12 %; equal weights 69 %
    # The image changes across tile edges no faster than elsewhere: measured 0.47; equal weights 1.73.
    assert _edge_ratios(out - whole, W, TILE, OVERLAP, stride=1)[1] < 1.0


def test_layouts_the_scales_cannot_follow_are_refused(net: LatentUNet) -> None:
    x = _image(64, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        tiled_encode(net, x, tile=32, overlap=12)
    with pytest.raises(ValueError, match="tile"):
        tiled_encode(net, x, tile=8, overlap=0)
