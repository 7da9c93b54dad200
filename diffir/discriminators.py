"""The discriminators of BasicSR's GAN recipes, with BasicSR's parameter names (so its weights load as they are).

* ``UNetDiscriminatorSN`` (Real-ESRGAN; DiffIR's S2-GAN stage): a U-Net that scores every pixel, (N, 1, H, W)
  logits for an (N, C, H, W) image whose sides are multiples of 8. Its inner convolutions use
  ``torch.nn.utils.spectral_norm`` (the hook-based version BasicSR uses), so their weights are stored as
  ``convK.weight_orig`` with the power-iteration vectors ``convK.weight_u`` / ``convK.weight_v``, the keys of
  BasicSR's files (the newer ``torch.nn.utils.parametrizations.spectral_norm`` would name them
  ``convK.parametrizations.weight.original`` and not load them).
* ``VGGStyleDiscriminator`` (SRGAN / ESRGAN): strided convolutions with batch norm down to 4 x 4, then two
  linear layers: (N, 1) logits for 128 x 128 or 256 x 256 images (``input_size``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from core.errors import ConfigError


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral normalisation: 3 stride-2 downsamplings, 3 bilinear upsamplings with
    additive skips (``skip_connection``), two more convolutions and a 1-channel head."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        self.skip_connection = bool(skip_connection)
        f = int(num_feat)
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, negative_slope=0.2)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ConfigError(
                f"UNetDiscriminatorSN needs image sides that are multiples of 8, got "
                f"{tuple(x.shape[-2:])}: use a data.patch_size that is a multiple of 8"
            )
        x0 = self._act(self.conv0(x))
        x1 = self._act(self.conv1(x0))
        x2 = self._act(self.conv2(x1))
        x3 = self._act(self.conv3(x2))
        x4 = self._act(self.conv4(self._up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = self._act(self.conv5(self._up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = self._act(self.conv6(self._up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = self._act(self.conv7(x6))
        out = self._act(self.conv8(out))
        return self.conv9(out)


class VGGStyleDiscriminator(nn.Module):
    """VGG-style discriminator for ``input_size`` x ``input_size`` images (128 or 256): (N, 1) logits."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size not in (128, 256):
            raise ConfigError(
                f"model.discriminator.input_size={input_size}: VGGStyleDiscriminator takes 128 or "
                "256 pixel images (set it to data.patch_size, which must be one of them)"
            )
        self.input_size = int(input_size)
        f = int(num_feat)
        # (name, in, out, kernel, stride) of each conv; every conv but the first is followed by batch norm
        widths = [
            (num_in_ch, f),
            (f, f),
            (f, f * 2),
            (f * 2, f * 2),
            (f * 2, f * 4),
            (f * 4, f * 4),
            (f * 4, f * 8),
            (f * 8, f * 8),
            (f * 8, f * 8),
            (f * 8, f * 8),
        ]
        if self.input_size == 256:
            widths += [(f * 8, f * 8), (f * 8, f * 8)]
        self._names = []
        for i, (c_in, c_out) in enumerate(widths):
            name = f"{i // 2}_{i % 2}"
            kernel, stride = (3, 1) if i % 2 == 0 else (4, 2)
            setattr(self, f"conv{name}", nn.Conv2d(c_in, c_out, kernel, stride, 1, bias=i == 0))
            if i > 0:
                setattr(self, f"bn{name}", nn.BatchNorm2d(c_out, affine=True))
            self._names.append(name)
        self.linear1 = nn.Linear(f * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ConfigError(
                f"VGGStyleDiscriminator(input_size={self.input_size}) got {tuple(x.shape[-2:])} "
                "images: set model.discriminator.input_size to data.patch_size (128 or 256)"
            )
        feat = x
        for i, name in enumerate(self._names):
            feat = getattr(self, f"conv{name}")(feat)
            if i > 0:
                feat = getattr(self, f"bn{name}")(feat)
            feat = F.leaky_relu(feat, negative_slope=0.2)
        feat = F.leaky_relu(self.linear1(feat.flatten(1)), negative_slope=0.2)
        return self.linear2(feat)
