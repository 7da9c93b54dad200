"""The U-Net autoencoder of latent Refusion (Luo et al., CVPRW 2023): the space in which latent IR-SDE runs.

Architecture (official ``UNet`` in ``codes/config/unet-latent/models/modules/UNet_arch.py``):

* ``encode``: the image is reflect-padded to a multiple of ``2 ** depth`` (16 for the four levels of the
  official options, although only three levels downsample), a 3x3 ``init_conv`` (no bias) gives ``ch``
  channels, then ``depth`` levels each run two plain residual blocks (no time input), a residual pre-norm
  linear attention on the last level only, and a stride-2 4x4 convolution (the last level only widens, with a
  3x3 convolution). A 1x1 ``latent_conv`` maps to ``embed_dim`` channels: the latent, at 1 / 2 ** (depth - 1)
  of the padded size. The ``init_conv`` output and both block outputs of every level are the hidden features.
* ``decode``: a 1x1 ``post_latent_conv``, then the levels in reverse, each concatenating one hidden feature
  before each of its two residual blocks, then attention (last level) and upsampling (nearest x2 + 3x3 conv;
  the finest level only narrows, with a 3x3 conv); ``final_conv`` of (features + ``init_conv`` output), cropped
  back to the encoded image's size.

Why the hidden features matter: latent Refusion decodes the *restored* latent with the hidden features of the
*degraded* input, so high-resolution detail comes from the input while the diffusion runs at 1/8 resolution.
The official autoencoder is trained for exactly that pairing (``irsde/latent_losses.py``).

The official ``decode`` crops to a size it remembers from the last ``encode`` call; here the size travels with
the hidden features (:class:`EncoderFeatures`), so decoding never depends on call order. Module and parameter
names reproduce the official class, so its state dicts load with the identity key mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.nn import crop_to, pad_to_multiple
from irsde.nets.unet import Block, attention_layer, conv_no_bias, downsample, upsample


@dataclass
class EncoderFeatures:
    """The encoder's hidden features of one image batch and the (H, W) that decoding crops to.

    ``features[0]`` is the ``init_conv`` output, then two per level, finest first (the official list ``h``).
    """

    features: list[torch.Tensor]
    size: tuple[int, int]

    def to(self, *args, **kwargs) -> EncoderFeatures:
        return EncoderFeatures([f.to(*args, **kwargs) for f in self.features], self.size)


class PlainResBlock(nn.Module):
    """Two conv-SiLU Blocks plus a shortcut (1x1 conv without bias when the width changes); no time input.

    The official class is the time-conditioned ResBlock built without ``time_emb_dim``, which has no ``mlp``.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.block1 = Block(dim_in, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = conv_no_bias(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)) + self.res_conv(x)


class LatentUNet(nn.Module):
    """Refusion's U-Net autoencoder (official class name ``UNet``); defaults are the official options
    (``unet-latent/options/train/train_haze.yml``, also ``network_L`` of latent-dehazing).

    Args:
        in_ch, out_ch: image channels in and out.
        ch: width of ``init_conv``; level ``i`` works at ``ch * [1, *ch_mult][i]`` channels.
        ch_mult: width multipliers of the levels' outputs; ``len(ch_mult)`` levels, all but the last downsample.
        embed_dim: latent channels.
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        ch: int = 8,
        ch_mult: Sequence[int] = (4, 8, 8, 16),
        embed_dim: int = 8,
    ) -> None:
        super().__init__()
        self.depth = len(ch_mult)
        widths = [ch * m for m in (1, *ch_mult)]

        self.init_conv = conv_no_bias(in_ch, ch, 3)
        # Each level is a ModuleList [block1, block2, attention, resample] because the official keys are
        # positional ("encoder.3.2.fn.fn.to_qkv.weight"); the decoder list is stored coarsest level first.
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(self.depth):
            dim_in, dim_out = widths[i], widths[i + 1]
            last = i == self.depth - 1
            self.encoder.append(
                nn.ModuleList(
                    [
                        PlainResBlock(dim_in, dim_in),
                        PlainResBlock(dim_in, dim_in),
                        attention_layer(dim_in) if last else nn.Identity(),
                        conv_no_bias(dim_in, dim_out) if last else downsample(dim_in, dim_out),
                    ]
                )
            )
            self.decoder.insert(
                0,
                nn.ModuleList(
                    [
                        PlainResBlock(dim_out + dim_in, dim_out),
                        PlainResBlock(dim_out + dim_in, dim_out),
                        attention_layer(dim_out) if last else nn.Identity(),
                        conv_no_bias(dim_out, dim_in) if i == 0 else upsample(dim_out, dim_in),
                    ]
                ),
            )

        self.latent_conv = conv_no_bias(widths[-1], embed_dim, 1)
        self.post_latent_conv = conv_no_bias(embed_dim, widths[-1], 1)
        self.final_conv = nn.Conv2d(ch, out_ch, 3, 1, 1)

    @property
    def pad_multiple(self) -> int:
        # The official code pads to 2**depth although only depth - 1 levels downsample; the padded border
        # feeds the global attention, so the same multiple is needed to reproduce its outputs.
        return 2**self.depth

    @property
    def downscale(self) -> int:
        """Ratio of the (padded) image size to the latent size: 8 for the official options."""
        return 2 ** (self.depth - 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, EncoderFeatures]:
        """(latent, hidden) of an NCHW image: latent (N, embed_dim, ceil(H / 16) * 2, ...) for depth 4.

        Images smaller than the padding fall back to edge replication (``core.nn.pad_by``); the official
        reflect padding raises there.
        """
        size = (x.shape[-2], x.shape[-1])
        h = self.init_conv(pad_to_multiple(x, self.pad_multiple)[0])
        features = [h]
        for block1, block2, attn, resample in self.encoder:
            h = block1(h)
            features.append(h)
            h = attn(block2(h))
            features.append(h)
            h = resample(h)
        # Under autocast the convolutions return bf16; hand back the caller's dtype.
        return self.latent_conv(h).to(x.dtype), EncoderFeatures(features, size)

    def decode(self, latent: torch.Tensor, hidden: EncoderFeatures) -> torch.Tensor:
        """The image of ``latent`` given the hidden features (in latent Refusion: those of the degraded input)."""
        feats = hidden.features
        if len(feats) != 1 + 2 * self.depth:
            raise ValueError(f"expected {1 + 2 * self.depth} hidden features, got {len(feats)}")
        if latent.shape[-2:] != feats[-1].shape[-2:]:
            raise ValueError(
                f"latent of spatial size {tuple(latent.shape[-2:])} does not match the hidden features' "
                f"coarsest size {tuple(feats[-1].shape[-2:])}: decode with the features of a same-size image"
            )
        x = self.post_latent_conv(latent)
        skip = len(feats) - 1
        for block1, block2, attn, resample in self.decoder:
            x = block1(torch.cat([x, feats[skip]], dim=1))
            x = block2(torch.cat([x, feats[skip - 1]], dim=1))
            x = resample(attn(x))
            skip -= 2
        x = self.final_conv(x + feats[0])
        return crop_to(x, hidden.size).to(latent.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` from its own latent and hidden features."""
        return self.decode(*self.encode(x))
