"""Tiled inference: run a memory-hungry network on a large image one overlapping tile at a time.

``tiled_apply`` cuts the inputs into fixed-size tiles, calls the network on each and blends the outputs.

Blending. Along each axis a tile's weight is 1 in its interior and falls to 0 towards every edge that lies
inside the image (edges on the image border keep weight 1: there the tile sees what the whole image shows).
With overlap ``o`` between neighbours and ``margin = o // 4``:

* the ``margin`` pixels nearest an inner edge get weight 0. A network whose output at a pixel depends only on
  inputs within ``margin`` pixels (receptive-field radius up to ``overlap // 4``: eight stacked 3x3 convs for
  the default overlap of 32) then gives exactly the whole-image result, since no tile contributes where its
  missing context would matter;
* the next ``o - 2 * margin`` pixels rise smoothly (raised cosine) from 0 to 1, so for networks with larger
  receptive fields (UNets) the differences between neighbouring tiles fade in instead of showing seams.

The 2-D weight is the product of the two 1-D weights and the output is sum(weight * tile) / sum(weight).
Every pixel has a positive total weight because neighbouring tiles' zero margins never meet (2 * margin <= o).
Weights are laid out in output pixels (``scale`` times the input), with the margin scaled alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from core.nn import crop_to, pad_to_multiple
from core.progress import bar


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length``, the last one aligned to the end."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def axis_weight(start: int, size: int, length: int, margin: int, ramp: int, device: torch.device) -> Tensor:
    """1-D blending weight (size,) of a tile covering [start, start + size) of an axis of ``length``."""
    pos = torch.arange(size, dtype=torch.float32, device=device)
    weight = torch.ones(size, dtype=torch.float32, device=device)

    def fade(distance: Tensor) -> Tensor:
        # 0 for the first `margin` pixels, then a raised-cosine rise that is > 0 at its first pixel, 1 after.
        t = ((distance - margin + 1) / (ramp + 1)).clamp(0.0, 1.0)
        return torch.sin(t * (math.pi / 2)) ** 2

    if start > 0:  # the leading edge is inside the image
        weight = weight * fade(pos)
    if start + size < length:  # the trailing edge is inside the image
        weight = weight * fade(size - 1 - pos)
    return weight


def tiled_apply(
    fn: Callable[..., Tensor],
    tensors: Sequence[Tensor],
    tile: int,
    overlap: int = 32,
    scale: int = 1,
    multiple: int = 1,
    progress: bool = False,
) -> Tensor:
    """Run ``fn(*tile_tensors)`` on overlapping tiles of NCHW inputs and blend the outputs (see module doc).

    Args:
        fn: network call; gets the same spatial tile of every input and returns an (N, C', s*h, s*w) tensor.
        tensors: NCHW inputs sharing H and W (e.g. the noisy state and the condition).
        tile: tile side in input pixels; rounded down to a multiple of ``multiple``.
        overlap: input pixels shared by neighbouring tiles; ``fn`` is reproduced exactly when its
            receptive-field radius is at most ``overlap // 4``.
        scale: ratio of output to input size (e.g. 4 for x4 super-resolution).
        multiple: side multiple ``fn`` needs; the inputs are reflect-padded to it and the output cropped back.
        progress: a bar over the tiles (a large image's single network evaluation can take minutes on a CPU).

    When the (padded) image fits in one tile, ``fn`` is called once on the whole input. The output has the
    dtype and device of ``fn``'s output; blending accumulates in float32 or wider.
    """
    if not tensors:
        raise ValueError("tiled_apply needs at least one input tensor")
    h, w = tensors[0].shape[-2:]
    for t in tensors:
        if t.ndim != 4 or tuple(t.shape[-2:]) != (h, w):
            raise ValueError(
                f"tiled_apply inputs must be NCHW with the same H, W; got {[tuple(t.shape) for t in tensors]}"
            )
    if multiple < 1 or scale < 1:
        raise ValueError(f"multiple and scale must be >= 1, got multiple={multiple}, scale={scale}")
    tile = (tile // multiple) * multiple
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(
            f"need 0 <= overlap < tile after rounding tile to a multiple of {multiple}; "
            f"got tile={tile}, overlap={overlap}"
        )

    if multiple > 1:
        inputs = [pad_to_multiple(t, multiple)[0] for t in tensors]
    else:
        inputs = list(tensors)
    ph, pw = inputs[0].shape[-2:]
    if tile >= ph and tile >= pw:
        return crop_to(fn(*inputs), (h * scale, w * scale))

    margin = overlap // 4
    ramp = overlap - 2 * margin
    tile_h, tile_w = min(tile, ph), min(tile, pw)
    out: Tensor | None = None
    weight_sum: Tensor | None = None
    rows, cols = tile_starts(ph, tile_h, overlap), tile_starts(pw, tile_w, overlap)
    positions = [(top, left) for top in rows for left in cols]
    for top, left in bar(positions, desc="tiles", leave=False, disable=not progress):
        piece = fn(*[t[..., top : top + tile_h, left : left + tile_w] for t in inputs])
        expected = (tile_h * scale, tile_w * scale)
        if piece.ndim != 4 or tuple(piece.shape[-2:]) != expected:
            raise ValueError(
                f"fn returned shape {tuple(piece.shape)} for a {tile_h}x{tile_w} tile; "
                f"expected (N, C, {expected[0]}, {expected[1]}) with scale={scale}"
            )
        if out is None:
            acc_dtype = torch.promote_types(piece.dtype, torch.float32)
            out = piece.new_zeros(
                (piece.shape[0], piece.shape[1], ph * scale, pw * scale), dtype=acc_dtype
            )
            weight_sum = piece.new_zeros((1, 1, ph * scale, pw * scale), dtype=acc_dtype)
        wy = axis_weight(
            top * scale, tile_h * scale, ph * scale, margin * scale, ramp * scale, piece.device
        )
        wx = axis_weight(
            left * scale, tile_w * scale, pw * scale, margin * scale, ramp * scale, piece.device
        )
        weight = (wy[:, None] * wx[None, :]).to(out.dtype)
        ys, xs = slice(top * scale, (top + tile_h) * scale), slice(left * scale, (left + tile_w) * scale)
        out[..., ys, xs] += piece.to(out.dtype) * weight
        weight_sum[..., ys, xs] += weight
    assert out is not None and weight_sum is not None
    return crop_to(out / weight_sum, (h * scale, w * scale)).to(piece.dtype)
