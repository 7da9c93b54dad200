"""Tiled encode / decode with latent Refusion's autoencoder, for photos too large for one network call.

The encoder's outputs live at several scales (hidden features at 1, 1/2, 1/4 and 1/8 of the image, the latent
at 1/8), so ``core.tiling.tiled_apply`` (one output, an integer upscale, inputs of one size) does not fit as
it is; its tile layout and blending weights are reused. Tiles are laid out in padded image pixels:

* the image is reflect-padded once to the network's multiple (16), as the network itself would, and every tile
  is a multiple of 16 whose offset is a multiple of 8 (``overlap`` a multiple of 8), so each tile's outputs
  land on whole pixels of every scale and the network adds no padding of its own;
* each output of a tile is blended with the 1-D weights of ``core.tiling`` (zero near inner edges, a
  raised-cosine ramp, one inside) averaged over blocks of the output's stride, so a 1/8-scale map gets the
  mean of the pixel weights it covers; ``sum(weight * tile) / sum(weight)`` as in ``tiled_apply``.

The network's receptive field is the whole tile (its last level has global linear attention), so tiled
results are close to, not equal to, whole-image results; the blending keeps tile borders free of seams. When
the padded image fits in one tile the network runs once and the result is exact. Tiles run on the network's
device and are accumulated on the input's device, so a large photo and its features may stay in CPU memory.
The latent SDE itself (``ConditionalNAFNet`` at 1/8 scale) can be tiled with ``core.tiling.tiled_apply``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from core.nn import crop_to, pad_to_multiple
from core.tiling import axis_weight, tile_starts
from irsde.nets.latent_autoencoder import EncoderFeatures


def _net_device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _check_layout(net: nn.Module, tile: int, overlap: int) -> int:
    """The tile side rounded down to the padding multiple; raises on layouts the scales cannot follow."""
    tile = tile // net.pad_multiple * net.pad_multiple
    if tile < net.pad_multiple or not 0 <= overlap < tile or overlap % net.downscale:
        raise ValueError(
            f"need a tile of at least {net.pad_multiple} (rounded down to a multiple of it) and "
            f"0 <= overlap < tile with overlap a multiple of {net.downscale}; got tile={tile}, overlap={overlap}"
        )
    return tile


def _blend(
    run: Callable[[int, int, int, int], Sequence[Tensor]],
    height: int,
    width: int,
    tile: int,
    overlap: int,
    device: torch.device,
) -> list[Tensor]:
    """Blend the outputs of ``run(top, left, tile_h, tile_w)`` over tiles of a (height, width) pixel grid.

    Each output of a tile may be at an integer fraction 1/s of the tile's size; it is placed at the same
    fraction of the grid. Accumulates in float32 (or wider) on ``device``.
    """
    tile_h, tile_w = min(tile, height), min(tile, width)
    margin = overlap // 4
    ramp = overlap - 2 * margin
    outs: list[Tensor] = []
    sums: list[Tensor] = []
    strides: list[tuple[int, int]] = []
    for top in tile_starts(height, tile_h, overlap):
        for left in tile_starts(width, tile_w, overlap):
            wy = axis_weight(top, tile_h, height, margin, ramp, device)
            wx = axis_weight(left, tile_w, width, margin, ramp, device)
            pieces = [p.to(device) for p in run(top, left, tile_h, tile_w)]
            if not outs:
                for p in pieces:
                    sy, sx = tile_h // p.shape[-2], tile_w // p.shape[-1]
                    dtype = torch.promote_types(p.dtype, torch.float32)
                    strides.append((sy, sx))
                    outs.append(p.new_zeros((*p.shape[:-2], height // sy, width // sx), dtype=dtype))
                    sums.append(p.new_zeros((height // sy, width // sx), dtype=dtype))
            for p, out, total, (sy, sx) in zip(pieces, outs, sums, strides, strict=True):
                # A coarse pixel gets the mean weight of the fine pixels it covers.
                weight = wy.view(-1, sy).mean(1)[:, None] * wx.view(-1, sx).mean(1)[None, :]
                ys = slice(top // sy, (top + tile_h) // sy)
                xs = slice(left // sx, (left + tile_w) // sx)
                out[..., ys, xs] += p.to(out.dtype) * weight.to(out.dtype)
                total[ys, xs] += weight.to(total.dtype)
    return [out / total for out, total in zip(outs, sums, strict=True)]


@torch.no_grad()
def tiled_encode(
    net: nn.Module, image: Tensor, tile: int = 512, overlap: int = 128, keep_hidden: bool = True
) -> tuple[Tensor, EncoderFeatures | None]:
    """``net.encode(image)`` computed on overlapping tiles of ``tile`` pixels; same shapes as the whole call.

    ``keep_hidden=False`` drops the hidden features (about 50 floats per pixel for the official network).
    """
    tile = _check_layout(net, tile, overlap)
    size = (image.shape[-2], image.shape[-1])
    padded = pad_to_multiple(image, net.pad_multiple)[0]
    ph, pw = padded.shape[-2:]
    device = _net_device(net)
    if tile >= ph and tile >= pw:
        latent, hidden = net.encode(image.to(device))
        return latent.to(image.device), hidden.to(image.device) if keep_hidden else None

    def run(top: int, left: int, h: int, w: int) -> list[Tensor]:
        latent, hidden = net.encode(padded[..., top : top + h, left : left + w].to(device))
        return [latent, *hidden.features] if keep_hidden else [latent]

    latent, *features = _blend(run, ph, pw, tile, overlap, image.device)
    latent = latent.to(image.dtype)
    return latent, EncoderFeatures([f.to(image.dtype) for f in features], size) if keep_hidden else None


@torch.no_grad()
def tiled_decode(
    net: nn.Module, latent: Tensor, hidden: EncoderFeatures, tile: int = 512, overlap: int = 128
) -> Tensor:
    """``net.decode(latent, hidden)`` computed on overlapping tiles of ``tile`` image pixels."""
    tile = _check_layout(net, tile, overlap)
    ph, pw = hidden.features[0].shape[-2:]
    device = _net_device(net)
    if tile >= ph and tile >= pw:
        return net.decode(latent.to(device), hidden.to(device)).to(latent.device)

    def cut(x: Tensor, top: int, left: int, h: int, w: int) -> Tensor:
        sy, sx = ph // x.shape[-2], pw // x.shape[-1]
        return x[..., top // sy : (top + h) // sy, left // sx : (left + w) // sx].to(device)

    def run(top: int, left: int, h: int, w: int) -> list[Tensor]:
        feats = EncoderFeatures([cut(f, top, left, h, w) for f in hidden.features], (h, w))
        return [net.decode(cut(latent, top, left, h, w), feats)]

    (image,) = _blend(run, ph, pw, tile, overlap, latent.device)
    return crop_to(image, hidden.size).to(latent.dtype)

