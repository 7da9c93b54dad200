"""LaMa's discriminator (pix2pixHD's ``NLayerDiscriminator``, saicinpainting/training/modules/pix2pixhd.py), which
DiffIR-inpainting trains against (configs/training/discriminator/pix2pixhd_nlayer.yaml: ndf 64, n_layers 4).

A PatchGAN: a 4x4 stride-2 convolution, ``n_layers - 1`` more stride-2 ones with batch norm (widths doubling up to
512), one stride-1 block, then a 1-channel 4x4 head; every convolution pads 2, so a 256 x 256 image gives 19 x 19
logits. ``forward(x) -> (logits, features)``: the features are every block's output but the head's, for the
feature-matching loss. The blocks are ``model0`` ... ``model{n_layers + 1}``, LaMa's names, so its checkpoints'
``discriminator.*`` weights load as they are.
"""

from __future__ import annotations

import torch
from torch import nn


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        self.n_layers = int(n_layers)

        def block(c_in: int, c_out: int, stride: int, norm: bool) -> nn.Sequential:
            layers = [nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=2)]
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            # not in place (LaMa's is): the returned features must survive the next block
            layers.append(nn.LeakyReLU(0.2))
            return nn.Sequential(*layers)

        blocks = [block(input_nc, ndf, 2, norm=False)]
        width = ndf
        for _ in range(1, self.n_layers):
            blocks.append(block(width, min(width * 2, 512), 2, norm=True))
            width = min(width * 2, 512)
        blocks.append(block(width, min(width * 2, 512), 1, norm=True))
        width = min(width * 2, 512)
        blocks.append(nn.Sequential(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=2)))
        for i, module in enumerate(blocks):
            setattr(self, f"model{i}", module)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for i in range(self.n_layers + 2):
            x = getattr(self, f"model{i}")(x)
            features.append(x)
        return features[-1], features[:-1]
