"""The conditional NAFNet of Refusion (Luo et al., CVPRW 2023), IR-SDE's alternative noise network.

Architecture (official ``ConditionalNAFNet`` in ``DenoisingNAFNet_arch.py``): the input
``cat[x_t - mu, mu]`` is zero-padded to a multiple of ``2 ** len(enc_blk_nums)`` and goes through a 3x3
``intro`` convolution, encoder stages of NAF blocks each followed by a stride-2 2x2 convolution that doubles
the width, middle NAF blocks, then decoder stages that upsample (1x1 convolution + pixel shuffle), add the
encoder skip and run their NAF blocks, and a 3x3 ``ending`` convolution, cropped back to the input size.

A NAF block is LayerNorm -> 1x1 conv -> depthwise 3x3 -> SimpleGate -> simplified channel attention -> 1x1
conv, added with a learned per-channel weight ``beta``, then a gated feed-forward added with ``gamma``. The
time embedding (sinusoidal, width ``width``, -> Linear -> SimpleGate -> Linear, to ``4 * width``) gives every
block a FiLM shift and scale for each of its two branches. Names follow the official class so that its state
dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.nn import pad_to_multiple
from core.timesteps import TimeInput, time_vector
from irsde.nets.unet import ChannelLayerNorm, SinusoidalPosEmb


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: NAFNet's replacement for an activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """A time-conditioned NAF block on ``c`` channels."""

    def __init__(self, c: int, time_emb_dim: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        # SimpleGate halves the time embedding before the projection to the four FiLM vectors.
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(time_emb_dim // 2, c * 4))

        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()

        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)

        self.norm1 = ChannelLayerNorm(c)
        self.norm2 = ChannelLayerNorm(c)
        # Zero-initialised branch weights make every block start as the identity (as in NAFNet).
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        film = self.mlp(time_emb)[:, :, None, None]
        shift_att, scale_att, shift_ffn, scale_ffn = film.chunk(4, dim=1)

        x = self.norm1(inp) * (scale_att + 1) + shift_att
        x = self.sg(self.conv2(self.conv1(x)))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta

        x = self.norm2(y) * (scale_ffn + 1) + shift_ffn
        x = self.conv5(self.sg(self.conv4(x)))
        return y + x * self.gamma


def run_blocks(
    blocks: nn.Sequential, x: torch.Tensor, time_emb: torch.Tensor, checkpointing: bool = False
) -> torch.Tensor:
    # The stages are nn.Sequential only to keep the official keys ("encoders.3.27.conv1.weight").
    for block in blocks:
        x = checkpoint(block, x, time_emb, use_reentrant=False) if checkpointing else block(x, time_emb)
    return x


class ConditionalNAFNet(nn.Module):
    """Refusion noise network: ``forward(x_t, mu, t)`` predicts the noise in ``x_t`` given ``mu``.

    Args:
        img_channel: channels of ``x_t``, ``mu`` and the output.
        width: channels after ``intro``; doubled by every encoder stage. The time embedding is ``4 * width``.
        middle_blk_num: NAF blocks at the coarsest scale.
        enc_blk_nums: NAF blocks of each encoder stage (finest first).
        dec_blk_nums: NAF blocks of each decoder stage (coarsest first); as many stages as the encoder.
        upscale: accepted for compatibility with the official options; unused, as in the official code.
        intro_skip: add the ``intro`` output to the last decoder stage's output before ``ending``, as the official
            latent-dehazing (Refusion latent) copy does; the parameters are the same either way, so a config (not
            the weights) must say it.
        checkpointing: recompute the NAF blocks' activations in the backward pass (``torch.utils.checkpoint``,
            training with grad only): less memory, slower; no new parameters.
    """

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 64,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        upscale: int = 1,
        checkpointing: bool = False,
        intro_skip: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing, self.intro_skip = checkpointing, intro_skip
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(
                f"enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} "
                "need the same length"
            )
        self.upscale = upscale
        time_dim = width * 4
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(width),
            nn.Linear(width, time_dim * 2),
            SimpleGate(),
            nn.Linear(time_dim, time_dim),
        )

        self.intro = nn.Conv2d(img_channel * 2, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)

        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()

        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, time_dim) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, chan * 2, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan, time_dim) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, time_dim) for _ in range(num)]))

        self.padder_size = 2 ** len(enc_blk_nums)

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: TimeInput) -> torch.Tensor:
        h_in, w_in = x_t.shape[-2:]
        temb = self.time_mlp(time_vector(t, x_t.shape[0], x_t.device))

        x = pad_to_multiple(torch.cat([x_t - mu, mu], dim=1), self.padder_size, mode="constant")[0]  # zeros: official
        x = stem = self.intro(x)
        ckpt = self.checkpointing and self.training and torch.is_grad_enabled()

        skips: list[torch.Tensor] = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = run_blocks(encoder, x, temb, ckpt)
            skips.append(x)
            x = down(x)

        x = run_blocks(self.middle_blks, x, temb, ckpt)

        for decoder, up in zip(self.decoders, self.ups, strict=True):
            x = run_blocks(decoder, up(x) + skips.pop(), temb, ckpt)

        x = self.ending(x + stem if self.intro_skip else x)
        # Under autocast the convolutions return bf16; hand back the caller's dtype for the SDE arithmetic.
        return x[..., :h_in, :w_in].to(x_t.dtype)
