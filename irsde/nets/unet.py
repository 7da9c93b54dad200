"""The conditional U-Net that IR-SDE uses to predict the noise of the mean-reverting SDE.

Architecture (Luo et al., ICML 2023; official ``ConditionalUNet`` in ``DenoisingUNet_arch.py``):

* input ``cat[x_t - mu, mu]`` (2 * in_nc channels), reflect-padded to a multiple of ``2 ** depth``;
  ``init_conv`` is a 7x7 convolution without bias to ``nf`` channels;
* time: sinusoidal embedding of width ``nf`` -> Linear -> GELU -> Linear, to ``4 * nf`` channels;
* ``depth`` encoder levels; level ``i`` works at ``nf * mult[i]`` channels (``mult = [1, *ch_mult]``) with two
  time-modulated residual blocks, a residual pre-norm linear attention, then a stride-2 4x4 convolution to
  ``nf * mult[i + 1]`` channels (the last level only changes the width, with a 3x3 convolution);
* a middle of residual block, linear attention, residual block at ``nf * mult[depth]`` channels;
* ``depth`` decoder levels mirroring the encoder, each concatenating the two skips of its level before its two
  residual blocks, and upsampling (nearest x2 + 3x3 convolution) except at the finest level;
* a final residual block on ``cat[features, init_conv output]`` and a 3x3 convolution to ``out_nc`` channels,
  cropped back to the input size.

The default ``ch_mult`` doubles the width at every level (the ``depth`` argument of the main official code);
an explicit ``ch_mult`` follows the official latent-dehazing variant. Module and parameter names reproduce the
official class exactly, so released state dicts load with the identity key mapping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.nn import LN_EPS, channel_layer_norm, pad_to_multiple
from core.timesteps import TimeInput, time_vector


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a (B,) time vector: [sin(t f_k), cos(t f_k)], k < dim / 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"the time embedding needs an even width of at least 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        # Frequencies from 1 down to 1/10000 on a geometric grid, as in the official code (half - 1 steps).
        step = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -step)
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis of an NCHW map, with a gain ``g`` and no bias (official LayerNorm).

    The gain keeps the official name and (1, C, 1, 1) shape, which timm's LayerNorm2d (``weight`` of shape (C,))
    cannot load; the computation is the shared ``core.nn.channel_layer_norm``. Its statistics are float32 for
    every input dtype, so eps stays 1e-5: the official code switches to eps 1e-3 for half-precision inputs,
    which changes the function noticeably (the linear attention's output has a small variance), so that a
    bf16-autocast network would no longer compute what its float32 weights were trained for.
    """

    eps = LN_EPS

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(x, self.g.flatten(), eps=self.eps)


class Residual(nn.Module):
    """``x + fn(x)``; kept as its own module because the official keys contain its ``fn`` level."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class PreNorm(nn.Module):
    """``fn(norm(x))`` with a channel layer norm."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class LinearAttention(nn.Module):
    """Linear (efficient) attention: cost linear in the pixel count; 4 heads of 32 channels whatever ``dim``.

    Queries are softmaxed over their channels and keys over the pixels; the (channels x channels) context
    ``k v^T`` is then read out by every query.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (part.reshape(b, self.heads, -1, h * w) for part in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = k @ v.transpose(-1, -2)  # (b, heads, d, e)
        out = context.transpose(-1, -2) @ q  # (b, heads, e, pixels)
        return self.to_out(out.reshape(b, -1, h, w))


def conv_no_bias(dim_in: int, dim_out: int, kernel_size: int = 3) -> nn.Conv2d:
    """'Same'-padded convolution without bias (the official ``default_conv``)."""
    return nn.Conv2d(dim_in, dim_out, kernel_size, padding=kernel_size // 2, bias=False)


def upsample(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim_in, dim_out, 3, 1, 1))


def downsample(dim_in: int, dim_out: int) -> nn.Conv2d:
    return nn.Conv2d(dim_in, dim_out, 4, 2, 1)


class Block(nn.Module):
    """3x3 convolution, optional FiLM ``x * (1 + scale) + shift`` from the time embedding, then SiLU."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = conv_no_bias(dim_in, dim_out)
        self.act = nn.SiLU()

    def forward(
        self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResBlock(nn.Module):
    """Two Blocks, the first modulated by the time embedding, plus a (1x1 if the width changes) shortcut."""

    def __init__(self, dim_in: int, dim_out: int, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
        self.block1 = Block(dim_in, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = conv_no_bias(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        emb = self.mlp(time_emb)[:, :, None, None]
        scale, shift = emb.chunk(2, dim=1)
        h = self.block2(self.block1(x, (scale, shift)))
        return h + self.res_conv(x)


def attention_layer(dim: int) -> Residual:
    return Residual(PreNorm(dim, LinearAttention(dim)))


class ConditionalUNet(nn.Module):
    """IR-SDE noise network: ``forward(x_t, mu, t)`` predicts the noise in ``x_t`` given the condition ``mu``.

    Args:
        in_nc: channels of ``x_t`` and ``mu`` (the network sees both, so ``init_conv`` takes ``2 * in_nc``).
        out_nc: channels of the predicted noise.
        nf: base width; the time embedding is ``4 * nf`` wide.
        depth: number of encoder/decoder levels; inputs are padded to a multiple of ``2 ** depth``.
        ch_mult: width multipliers of the levels' outputs (``depth`` entries); default doubles at every level,
            i.e. ``(2, 4, ..., 2 ** depth)`` as in the official IR-SDE configurations.
        upscale: accepted for compatibility with the official options; unused, as in the official code.
        checkpointing: recompute the activations of the residual and attention blocks in the backward pass
            (``torch.utils.checkpoint``, training with grad only): less memory, slower; no new parameters.
    """

    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        nf: int = 64,
        depth: int = 4,
        ch_mult: Sequence[int] | None = None,
        upscale: int = 1,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        if ch_mult is None:
            ch_mult = [2 ** (i + 1) for i in range(depth)]
        if len(ch_mult) != depth:
            raise ValueError(f"ch_mult has {len(ch_mult)} entries but depth is {depth}: they must agree")
        self.depth = depth
        self.upscale = upscale
        self.ch_mult = tuple(int(m) for m in ch_mult)
        widths = [nf * m for m in (1, *self.ch_mult)]
        time_dim = nf * 4

        self.init_conv = conv_no_bias(in_nc * 2, nf, 7)
        # Index 0 holds the parameter-free embedding so that the Linear layers keep the official keys 1 and 3.
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
        )

        # Each level is a ModuleList [block1, block2, attention, resample] because the official keys are
        # positional ("downs.2.3.weight"); the decoder list is stored coarsest level first.
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(depth):
            dim_in, dim_out = widths[i], widths[i + 1]
            last = i == depth - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        ResBlock(dim_in, dim_in, time_dim),
                        ResBlock(dim_in, dim_in, time_dim),
                        attention_layer(dim_in),
                        conv_no_bias(dim_in, dim_out) if last else downsample(dim_in, dim_out),
                    ]
                )
            )
            self.ups.insert(
                0,
                nn.ModuleList(
                    [
                        ResBlock(dim_out + dim_in, dim_out, time_dim),
                        ResBlock(dim_out + dim_in, dim_out, time_dim),
                        attention_layer(dim_out),
                        conv_no_bias(dim_out, dim_in) if i == 0 else upsample(dim_out, dim_in),
                    ]
                ),
            )

        mid_dim = widths[-1]
        self.mid_block1 = ResBlock(mid_dim, mid_dim, time_dim)
        self.mid_attn = attention_layer(mid_dim)
        self.mid_block2 = ResBlock(mid_dim, mid_dim, time_dim)

        self.final_res_block = ResBlock(nf * 2, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, 1, 1)

    @property
    def pad_multiple(self) -> int:
        # The official code pads to 2**depth although only depth - 1 levels downsample; the padded border
        # feeds the global attention, so the same multiple is needed to reproduce its outputs.
        return 2**self.depth

    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        """``block(*args)``, under activation checkpointing when it is on and gradients are being recorded."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: TimeInput) -> torch.Tensor:
        h_in, w_in = x_t.shape[-2:]
        x = torch.cat([x_t - mu, mu], dim=1)
        x = pad_to_multiple(x, self.pad_multiple)[0]
        x = self.init_conv(x)
        stem = x

        temb = self.time_mlp(time_vector(t, x_t.shape[0], x_t.device))

        skips: list[torch.Tensor] = []
        run = self._run
        for block1, block2, attn, resample in self.downs:
            x = run(block1, x, temb)
            skips.append(x)
            x = run(attn, run(block2, x, temb))
            skips.append(x)
            x = resample(x)

        x = run(self.mid_block2, run(self.mid_attn, run(self.mid_block1, x, temb)), temb)

        for block1, block2, attn, resample in self.ups:
            x = run(block1, torch.cat([x, skips.pop()], dim=1), temb)
            x = run(block2, torch.cat([x, skips.pop()], dim=1), temb)
            x = resample(run(attn, x))

        x = self.final_res_block(torch.cat([x, stem], dim=1), temb)
        x = self.final_conv(x)
        # Under autocast the convolutions return bf16; hand back the caller's dtype for the SDE arithmetic.
        return x[..., :h_in, :w_in].to(x_t.dtype)
