"""JPEG compression as the official Real-ESRGAN / DiffIR-RealSR training does it: BasicSR's
`DiffJPEG(differentiable=False)` (basicsr/utils/diffjpeg.py), batched on the device with a quality per image.

The codec: RGB -> YCbCr (JFIF, x255), 4:2:0 chroma by 2x2 averaging, 8x8 DCT-II of (value - 128), division by
the standard luma / chroma tables times the quality factor (5000 / q below 50, 200 - 2q from 50 on, / 100; the
quality is a float and the scaled tables are not rounded), hard rounding, then the inverse, with the chroma
repeated 2x2 and the result clamped to [0, 1] (not rounded to 8 bits). The image is zero-padded at the bottom and
right to a multiple of 16 and cropped back. Two DiffJPEG quirks are kept on purpose, so that the LQ images are
the official ones: the quantization tables are applied transposed (the DCT coefficient at vertical frequency u,
horizontal v is divided by table[v][u]; `standard_tables=True` orients them as libjpeg does), and the padding is
zeros rather than edge pixels.

kornia.enhance.jpeg_codec_differentiable is a different codec (edge padding, tables floored as libjpeg does,
polynomial "soft" rounding), so it is not used. Differences from a real libjpeg (PIL): no 8-bit rounding of the
pixels or of the YCbCr planes, float DCT, nearest-neighbour chroma upsampling instead of libjpeg's smooth one;
tests/unit/test_realesrgan_jpeg.py measures how close it is.

Blocks never interact (the 2x2 chroma average stays inside a 16x16 macroblock), so images of different sizes
batch exactly on a zero canvas: `jpeg_ragged`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K tables, row = vertical frequency (as printed in the standard).
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))
MACROBLOCK = 16


def quality_factor(quality: torch.Tensor) -> torch.Tensor:
    """The table scale of a (float) quality: 5000 / q below 50, 200 - 2 q from 50 on, divided by 100."""
    quality = quality.to(torch.float32)
    return torch.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality) / 100.0


def dct_matrix(device: torch.device | None = None) -> torch.Tensor:
    """The orthonormal 8-point DCT-II: C[u, x] = a(u) / 2 cos((2x + 1) u pi / 16), a(0) = 1/sqrt(2), else 1.
    The 2-D DCT of a block B is C B C^T and its inverse C^T D C."""
    u = torch.arange(8, dtype=torch.float64)[:, None]
    x = torch.arange(8, dtype=torch.float64)[None, :]
    matrix = torch.cos((2 * x + 1) * u * math.pi / 16) / 2
    matrix[0] /= math.sqrt(2)
    return matrix.to(device=device, dtype=torch.float32)


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H/8, W/8, 8, 8)."""
    b, h, w = plane.shape
    return plane.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    b, nh, nw = blocks.shape[:3]
    return blocks.transpose(2, 3).reshape(b, nh * 8, nw * 8)


def _code_plane(plane: torch.Tensor, table: torch.Tensor, factor: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """Encode and decode one plane (values 0..255): DCT, quantize with hard rounding, dequantize, inverse DCT."""
    step = table * factor.view(-1, 1, 1, 1, 1)  # (B, 1, 1, 8, 8)
    coefficients = dct @ (_blocks(plane) - 128.0) @ dct.T
    restored = dct.T @ (torch.round(coefficients / step) * step) @ dct + 128.0
    return _unblocks(restored)


def diff_jpeg(images: torch.Tensor, quality: torch.Tensor | float, standard_tables: bool = False) -> torch.Tensor:
    """JPEG-compress and decode a batch (B, 3, H, W) in [0, 1] at `quality` (a float or one per image), exactly
    as BasicSR's DiffJPEG(differentiable=False) (or with the tables oriented as the standard has them).
    Returns float32 (B, 3, H, W) in [0, 1]."""
    x = images.to(torch.float32)
    b, _, h, w = x.shape
    quality = torch.as_tensor(quality, dtype=torch.float32, device=x.device).expand(b)
    factor = quality_factor(quality)
    x = F.pad(x, (0, (-w) % MACROBLOCK, 0, (-h) % MACROBLOCK))  # zeros, as DiffJPEG pads
    to_ycc = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32, device=x.device)
    ycc = torch.einsum("ck,bkhw->bchw", to_ycc, x * 255.0)
    y, chroma = ycc[:, 0], F.avg_pool2d(ycc[:, 1:] + 128.0, 2)
    dct = dct_matrix(x.device)
    # DiffJPEG stores the tables transposed (see the module docstring); kept by default for the official LQs.
    luma_t = torch.tensor(LUMA_TABLE, dtype=torch.float32, device=x.device)
    chroma_t = torch.tensor(CHROMA_TABLE, dtype=torch.float32, device=x.device)
    if not standard_tables:
        luma_t, chroma_t = luma_t.T, chroma_t.T
    y = _code_plane(y, luma_t, factor, dct)
    cbcr = _code_plane(chroma.flatten(0, 1), chroma_t, factor.repeat_interleave(2), dct)
    cbcr = cbcr.view(b, 2, *cbcr.shape[-2:]).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    to_rgb = torch.tensor(YCBCR_TO_RGB, dtype=torch.float32, device=x.device)
    rgb = torch.einsum("ck,bkhw->bchw", to_rgb, torch.cat([y[:, None], cbcr - 128.0], dim=1))
    return (rgb.clamp(0.0, 255.0) / 255.0)[:, :, :h, :w]


def jpeg_ragged(images: Sequence[torch.Tensor], quality: torch.Tensor, standard_tables: bool = False
                ) -> list[torch.Tensor]:
    """`diff_jpeg` of images of different sizes (each (1, 3, h, w)) in one call: each is zero-padded onto a
    common canvas, which is what the codec's own padding does, so each result equals its single-image one."""
    if len({tuple(img.shape[-2:]) for img in images}) == 1:
        return list(diff_jpeg(torch.cat(list(images)), quality, standard_tables).split(1))
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    height, width = height + (-height) % MACROBLOCK, width + (-width) % MACROBLOCK
    canvas = torch.cat([F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2])) for img in images])
    coded = diff_jpeg(canvas, quality, standard_tables)
    return [coded[i:i + 1, :, :img.shape[-2], :img.shape[-1]] for i, img in enumerate(images)]
