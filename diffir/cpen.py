"""CPEN: the compact IR prior extraction network of DiffIR.
CPEN turns images into the IR prior representation (IPR), a 256-d vector (4 * n_feats, n_feats = 64 as in
the official code) that modulates every DIRformer block. Stage 1 (``CPENS1``) sees the low-quality input
*and* the ground truth; stage 2 (``CPENS2``) sees the low-quality input only and feeds the IPR diffusion as
its condition.

Inputs are pixel-unshuffled before the first conv so that the encoder works at a coarse resolution. For
restoration the low-quality image and the ground truth have the same size and both are unshuffled by 4. For
super-resolution by ``scale`` the low-quality image is ``scale`` times smaller, so it is unshuffled by ``4
// scale`` to land on the same grid as the ground truth (x4: not at all). This reproduces the official
first-layer widths: 96 (GoPro S1), 48 (GoPro S2), 51 / 3 (SR x4 S1 / S2), 60 / 12 (SR x2), 112 / 64
(inpainting, whose input has 4 channels: masked image and mask).

Module names follow the official ``CPEN`` (``E.<i>.*`` for the conv trunk, ``mlp.<i>.*``) so that official
state dicts load with the identity key mapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IPR_FEATS = 64
IPR_DIM = 4 * IPR_FEATS  # 256: fixed by the official code, every block's modulation layer expects it
LRELU_SLOPE = 0.1


def lq_unshuffle_factor(scale: int) -> int:
    """Pixel-unshuffle factor for the low-quality input, so that it lands on the ground truth's /4 grid."""
    if scale not in (1, 2, 4):
        raise ValueError(f"DiffIR supports scale 1, 2 or 4, got {scale}")
    return 4 // scale


class ResBlock(nn.Module):
    """conv3x3 -> LeakyReLU(0.1) -> conv3x3, plus the input (EDSR-style, no batch norm, no scaling)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CPEN(nn.Module):
    """Conv trunk + global average pooling + 2-layer MLP: (B, in_channels, h, w) -> IPR (B, 256)."""

    def __init__(self, in_channels: int, n_encoder_res: int = 5, n_feats: int = IPR_FEATS) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, n_feats, 3, padding=1), nn.LeakyReLU(LRELU_SLOPE)]
        layers += [ResBlock(n_feats) for _ in range(n_encoder_res)]
        layers += [
            nn.Conv2d(n_feats, n_feats * 2, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(n_feats * 2, n_feats * 2, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(n_feats * 2, n_feats * 4, 3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.AdaptiveAvgPool2d(1),
        ]
        self.E = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.Linear(n_feats * 4, n_feats * 4),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Linear(n_feats * 4, n_feats * 4),
            nn.LeakyReLU(LRELU_SLOPE),
        )

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.E(features).flatten(1))


class CPENS1(CPEN):
    """Stage-1 CPEN: IPR from the low-quality input and the ground truth (the teacher's prior)."""

    def __init__(self, n_encoder_res: int = 5, lq_channels: int = 3, gt_channels: int = 3,
                 scale: int = 1) -> None:
        factor = lq_unshuffle_factor(scale)
        super().__init__(lq_channels * factor**2 + gt_channels * 16, n_encoder_res)
        self.lq_factor = factor
        self.scale = scale

    def forward(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        lq_feat = F.pixel_unshuffle(lq, self.lq_factor) if self.lq_factor > 1 else lq
        return self.encode(torch.cat([lq_feat, F.pixel_unshuffle(gt, 4)], dim=1))


class CPENS2(CPEN):
    """Stage-2 CPEN: features of the low-quality input only, the condition of the IPR diffusion."""

    def __init__(self, n_encoder_res: int = 5, lq_channels: int = 3, scale: int = 1) -> None:
        factor = lq_unshuffle_factor(scale)
        super().__init__(lq_channels * factor**2, n_encoder_res)
        self.lq_factor = factor
        self.scale = scale

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.encode(F.pixel_unshuffle(lq, self.lq_factor) if self.lq_factor > 1 else lq)
