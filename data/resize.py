"""MATLAB bicubic resizing (imresize), the bicubic upsampling of IR-SDE's SR condition, and modcrop.

Images are float: numpy HxW / HxWxC or torch CxHxW / NxCxHxW, returned as the same kind.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

Image = np.ndarray | torch.Tensor


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, the one MATLAB's 'bicubic' uses."""
    ax = np.abs(x)
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """(out_len, in_len) matrix M such that out = M @ in along one axis, with MATLAB's symmetric boundary."""
    shrink_aa = antialias and scale < 1
    # When shrinking, MATLAB stretches the kernel by 1/scale so it also low-pass filters (the antialiasing).
    width = 4.0 / scale if shrink_aa else 4.0
    out_pos = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel x (1-based) sits at input coordinate u: pixel edges of both grids line up.
    centre = out_pos / scale + 0.5 * (1.0 - 1.0 / scale)
    first = np.floor(centre - width / 2.0)
    taps = int(math.ceil(width)) + 2
    src = first[:, None] + np.arange(taps)[None, :]  # 1-based input positions, may fall outside the image
    dist = centre[:, None] - src
    weights = scale * cubic(dist * scale) if shrink_aa else cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Positions outside [1, in_len] mirror back in (MATLAB's 'symmetric' padding: edge pixel repeated).
    period = 2 * in_len
    wrapped = np.mod(src - 1, period).astype(np.int64)
    wrapped = np.where(wrapped < in_len, wrapped, period - 1 - wrapped)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(matrix, (rows, wrapped.ravel()), weights.ravel())
    return matrix


def _output_length(in_len: int, scale: float) -> int:
    # The tiny slack keeps e.g. 300 * (1/3) from rounding up to 101 through floating-point error.
    return max(1, math.ceil(in_len * scale - 1e-9))


def imresize(img: Image, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> Image:
    """MATLAB `imresize(img, scale)` / `imresize(img, [h w])` with the bicubic kernel, on float images.

    Give either `scale` (output size ceil(in * scale), that scale on both axes, as MATLAB) or `size` = (h, w)
    (each axis then uses its own out/in ratio). Accepts numpy HxW / HxWxC or torch CxHxW / NxCxHxW; returns
    the same kind and dtype, without rounding or clipping (bicubic may overshoot [0, 1] a little, as MATLAB).
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")
    is_numpy = isinstance(img, np.ndarray)
    if is_numpy and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"imresize expects a float image, got {img.dtype}: divide by 255 first")
    in_h, in_w = (img.shape[0], img.shape[1]) if is_numpy else (img.shape[-2], img.shape[-1])
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        out_h, out_w = _output_length(in_h, scale), _output_length(in_w, scale)
        scale_h = scale_w = float(scale)
    rows = _resize_matrix(in_h, out_h, scale_h, antialias)
    cols = _resize_matrix(in_w, out_w, scale_w, antialias)
    if is_numpy:
        data = img if img.ndim == 3 else img[:, :, None]
        rows_m, cols_m = rows.astype(data.dtype), cols.astype(data.dtype)
        channels = data.shape[2]
        tall = (rows_m @ data.reshape(in_h, in_w * channels)).reshape(out_h, in_w, channels)
        out = (tall.transpose(0, 2, 1) @ cols_m.T).transpose(0, 2, 1)
        return np.ascontiguousarray(out if img.ndim == 3 else out[:, :, 0])
    rows_t = torch.from_numpy(rows).to(device=img.device, dtype=img.dtype)
    cols_t = torch.from_numpy(cols).to(device=img.device, dtype=img.dtype)
    return torch.matmul(torch.matmul(rows_t, img), cols_t.T)


def upsample_bicubic(lq: torch.Tensor, scale: int, clamp: bool = False) -> torch.Tensor:
    """Bicubic upsampling of a CxHxW / NxCxHxW LR image by an integer factor: IR-SDE's SR condition mu.

    Same call as the official `upscale` (F.interpolate, mode='bicubic', scale_factor, align_corners=False),
    which it applies to the LR patch, unclamped. Note torch's bicubic kernel has a = -0.75 (MATLAB's: -0.5),
    as in the official code. The result can overshoot [0, 1] a little; `clamp=True` clips it.
    """
    batched = lq.ndim == 4
    out = F.interpolate(lq if batched else lq[None], scale_factor=scale, mode="bicubic", align_corners=False)
    if clamp:
        out = out.clamp(0.0, 1.0)
    return out if batched else out[0]


def modcrop(img: Image, scale: int) -> Image:
    """Crop numpy HxW(xC) or torch (..., H, W) so both sides are multiples of `scale` (bottom/right dropped, as
    BasicSR and the official SR tests do)."""
    if isinstance(img, np.ndarray):
        h, w = img.shape[:2]
        return img[: h - h % scale, : w - w % scale]
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]
