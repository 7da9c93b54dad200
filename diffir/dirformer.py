"""DIRformer: the Restormer-style U-shaped transformer of DiffIR, modulated by the IPR.
Every transformer block is Restormer's (channel LayerNorm, transposed multi-head attention over channels,
gated depth-wise FFN), except that its attention and FFN first modulate their normalised input with the IPR:
a bias-free linear map ``kernel`` takes the 256-d IPR to 2 * dim values, split into a per-channel scale and
shift, and the input becomes ``x * scale + shift`` (official DMTA / DGFN; note: scale, not ``1 + scale``).
Passing ``ipr=None`` skips the modulation, which gives the plain Restormer block.

Two heads, as in the official sub-projects:

* ``scale=None`` (deblurring, inpainting): a 3x3 conv back to ``out_channels``, plus the input when
  ``residual`` (default: when input and output channel counts agree; the 4-channel inpainting input has
  none).
* ``scale in (1, 2, 4)`` (DiffIR-SRGAN): the low-quality input is pixel-unshuffled by ``4 // scale``, the
  head is an EDSR upsampler (two conv + PixelShuffle(2) stages) and a conv, and the nearest-neighbour
  upsampled input is added.

Module and parameter names follow the official ``DIRformer`` so that official weights load unchanged. Inputs
of any size work: they are padded on the right and bottom (reflection, as the official test code does) to a
multiple of the network's total downsampling and the output is cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.nn import LN_EPS, crop_to, pad_to_multiple
from diffir.cpen import IPR_DIM, lq_unshuffle_factor


def modulate(x: torch.Tensor, ipr: torch.Tensor | None, kernel: nn.Module) -> torch.Tensor:
    """x * scale + shift with (scale, shift) = chunk(kernel(ipr)); identity when ipr is None."""
    if ipr is None:
        return x
    scale, shift = kernel(ipr).view(-1, 2 * x.shape[1], 1, 1).chunk(2, dim=1)
    return x * scale + shift


class _BiasFreeNorm(nn.Module):
    """Restormer's bias-free LayerNorm: divides by the standard deviation but does not subtract the mean, so
    neither timm's LayerNorm2d nor its RmsNorm2d (root mean square, not standard deviation) computes it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        var = x32.var(dim=1, keepdim=True, unbiased=False)
        return (x32 * torch.rsqrt(var + LN_EPS) * self.weight[:, None, None]).to(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map (parameters in ``body``, as in the official code). WithBias
    is timm's LayerNorm2d: the official ``body.weight`` / ``body.bias`` keys and outputs (within 2e-6)."""

    def __init__(self, dim: int, layer_norm_type: str) -> None:
        super().__init__()
        if layer_norm_type not in ("WithBias", "BiasFree"):
            raise ValueError(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}")
        self.body = _BiasFreeNorm(dim) if layer_norm_type == "BiasFree" else LayerNorm2d(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Attention(nn.Module):
    """DMTA: IPR-modulated multi-head transposed attention (channels x channels attention per head)."""

    def __init__(self, dim: int, num_heads: int, bias: bool, ipr_dim: int = IPR_DIM) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        x = modulate(x, ipr, self.kernel)
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class FeedForward(nn.Module):
    """DGFN: IPR-modulated gated depth-wise conv FFN (GELU gate)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, ipr_dim: int = IPR_DIM) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)  # truncation as in the official code (e.g. 52 * 1.8 -> 93)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2,
                                bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))

    def forward(self, x: torch.Tensor, ipr: torch.Tensor | None) -> torch.Tensor:
        x = modulate(x, ipr, self.kernel)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 layer_norm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ipr)
        return x + self.ffn(self.norm2(x), ipr)


class BlockStack(nn.ModuleList):
    """Transformer blocks applied in turn, all with the same IPR (keys ``<name>.<i>.*``, as nn.Sequential)."""

    def __init__(self, n: int, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 layer_norm_type: str) -> None:
        super().__init__(
            TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, layer_norm_type) for _ in range(n)
        )

    def forward(self, x: torch.Tensor, ipr: torch.Tensor | None, checkpointing: bool = False) -> torch.Tensor:
        for block in self:
            x = checkpoint(block, x, ipr, use_reentrant=False) if checkpointing else block(x, ipr)
        return x


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: conv to n/2 channels, then PixelUnshuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: conv to 2n channels, then PixelShuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def sr_tail(n_feat: int, out_channels: int) -> nn.Sequential:
    """EDSR upsampler x4 then a conv; indices give the official keys tail.0.0, tail.0.2 and tail.1."""
    upsampler = nn.Sequential(
        nn.Conv2d(n_feat, 4 * n_feat, 3, padding=1), nn.PixelShuffle(2),
        nn.Conv2d(n_feat, 4 * n_feat, 3, padding=1), nn.PixelShuffle(2),
    )
    return nn.Sequential(upsampler, nn.Conv2d(n_feat, out_channels, 3, padding=1))


class DIRformer(nn.Module):
    """forward(lq, ipr) -> restored image (``scale`` times larger than lq in the SR variant).

    ``checkpointing``: recompute every transformer block's activations in the backward pass
    (``torch.utils.checkpoint``, training with grad only): less memory, slower; no new parameters.
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (3, 5, 6, 6),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.0,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 - the official option name, kept for config parity
        scale: int | None = None,
        residual: bool | None = None,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
        self.scale = scale
        self.lq_factor = 1 if scale is None else lq_unshuffle_factor(scale)
        self.out_scale = 1 if scale is None else scale
        # Three 2x downsamplings after the optional unshuffle of the input.
        self.size_multiple = 8 * self.lq_factor
        if scale is None:
            self.residual = inp_channels == out_channels if residual is None else residual
            if self.residual and inp_channels != out_channels:
                raise ValueError(f"a residual output needs inp_channels == out_channels, got {inp_channels}, "
                                 f"{out_channels}")
        else:
            self.residual = True
            if inp_channels != out_channels:
                raise ValueError("the SR variant adds the upsampled input: inp_channels must be out_channels")

        def stack(n: int, level_dim: int, n_heads: int) -> BlockStack:
            return BlockStack(n, level_dim, n_heads, ffn_expansion_factor, bias, LayerNorm_type)

        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        self.patch_embed = OverlapPatchEmbed(inp_channels * self.lq_factor**2, dim)
        self.encoder_level1 = stack(num_blocks[0], d1, heads[0])
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = stack(num_blocks[1], d2, heads[1])
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = stack(num_blocks[2], d3, heads[2])
        self.down3_4 = Downsample(d3)
        self.latent = stack(num_blocks[3], d4, heads[3])
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, kernel_size=1, bias=bias)
        self.decoder_level3 = stack(num_blocks[2], d3, heads[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
        self.decoder_level2 = stack(num_blocks[1], d2, heads[1])
        self.up2_1 = Upsample(d2)
        # Level 1 of the decoder keeps the concatenated 2*dim channels (no 1x1 reduction), as in Restormer.
        self.decoder_level1 = stack(num_blocks[0], d2, heads[0])
        self.refinement = stack(num_refinement_blocks, d2, heads[0])
        if scale is None:
            self.output = nn.Conv2d(d2, out_channels, kernel_size=3, padding=1, bias=bias)
        else:
            self.tail = sr_tail(d2, out_channels)

    def forward(self, lq: torch.Tensor, ipr: torch.Tensor | None) -> torch.Tensor:
        h, w = lq.shape[-2:]
        out = self._forward_aligned(pad_to_multiple(lq, self.size_multiple)[0], ipr)
        return crop_to(out, (h * self.out_scale, w * self.out_scale))

    def _forward_aligned(self, inp: torch.Tensor, ipr: torch.Tensor | None) -> torch.Tensor:
        ck = self.checkpointing and self.training and torch.is_grad_enabled()
        feat = F.pixel_unshuffle(inp, self.lq_factor) if self.lq_factor > 1 else inp
        enc1 = self.encoder_level1(self.patch_embed(feat), ipr, ck)
        enc2 = self.encoder_level2(self.down1_2(enc1), ipr, ck)
        enc3 = self.encoder_level3(self.down2_3(enc2), ipr, ck)
        latent = self.latent(self.down3_4(enc3), ipr, ck)
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)), ipr, ck)
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)), ipr, ck)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1), ipr, ck)
        dec1 = self.refinement(dec1, ipr, ck)
        if self.scale is None:
            out = self.output(dec1)
            return out + inp if self.residual else out
        return self.tail(dec1) + F.interpolate(inp, scale_factor=self.scale, mode="nearest")
