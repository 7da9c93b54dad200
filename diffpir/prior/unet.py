"""The ε-prediction UNet of OpenAI's guided-diffusion (Dhariwal & Nichol, 2021), DiffPIR's diffusion prior.

Architecture (official ``UNetModel`` in ``guided_diffusion/unet.py``, 2-D case):

* time: sinusoidal embedding of width ``model_channels`` ([cos, sin], frequencies 10000^(-i/half)), then
  Linear -> SiLU -> Linear to ``4 * model_channels`` (``time_embed``);
* ``input_blocks``: a 3x3 stem convolution, then per level ``num_res_blocks`` residual blocks (each optionally
  followed by self-attention) and, except at the last level, a 2x downsampling block (a residual block with
  average pooling when ``resblock_updown``, else a stride-2 convolution);
* ``middle_block``: residual block, attention, residual block;
* ``output_blocks``: per level from coarse to fine, ``num_res_blocks + 1`` residual blocks on the features
  concatenated with the matching skip, optional attention, and a 2x upsampling block closing every level
  but the finest (nearest-neighbour, inside a residual block when ``resblock_updown``, else followed by a
  3x3 convolution);
* ``out``: GroupNorm -> SiLU -> zero-initialised 3x3 convolution.

Residual blocks inject the time embedding either additively or as a FiLM scale and shift of their second
GroupNorm (``use_scale_shift_norm``); their last convolution starts at zero, as does every attention output
projection, so a fresh network is the identity on its residual paths.

Module and parameter names equal the official ones, so the released state dicts (``ffhq_10m.pt``,
``256x256_diffusion_uncond.pt``, ...) load with the identity key mapping. Not carried over: class
conditioning, 1-D/3-D variants, the fp16 torso conversion (use bf16 autocast
instead) and the parameter-free resampling of ``conv_resample=False`` (no released model uses it).

``attention_resolutions`` has ``UNetModel``'s meaning: the *downsampling factors* at which attention is used,
not feature-map sizes. The official ``create_model`` converts its ``"16"`` flag (a 16x16 map for 256x256
images) to ``256 // 16 = 16``; for 256x256 models the two readings of "16" or "8,16,32" coincide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.timesteps import TimeInput, time_vector

# The released unconditional 256x256 priors. Entries are GuidedUNet keyword arguments. The ImageNet model's
# dropout is not among the published sampling flags (0.0 here); it only matters when training.
PRESETS: dict[str, dict[str, Any]] = {
    "ffhq_10m": {
        "image_size": 256, "in_channels": 3, "model_channels": 128, "out_channels": 6, "num_res_blocks": 1,
        "attention_resolutions": (16,), "dropout": 0.1, "channel_mult": (1, 1, 2, 2, 4, 4), "num_heads": 4,
        "num_head_channels": 64, "num_heads_upsample": -1, "use_scale_shift_norm": True,
        "resblock_updown": True, "use_new_attention_order": False,
    },
    "imagenet_256_uncond": {
        "image_size": 256, "in_channels": 3, "model_channels": 256, "out_channels": 6, "num_res_blocks": 2,
        "attention_resolutions": (8, 16, 32), "dropout": 0.0, "channel_mult": (1, 1, 2, 2, 4, 4),
        "num_heads": 4, "num_head_channels": 64, "num_heads_upsample": -1, "use_scale_shift_norm": True,
        "resblock_updown": True, "use_new_attention_order": False,
    },
}


def small_config(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a tiny GuidedUNet for tests and demos (about 3 M parameters, 32x32 images).

    Same flags as the released priors, at width 32 with three levels; attention at downsampling factor 4
    (8x8 maps for 32x32 inputs) with two 64-channel heads, and in the middle block.
    """
    config: dict[str, Any] = {
        "image_size": 32, "in_channels": 3, "model_channels": 32, "out_channels": 6, "num_res_blocks": 1,
        "attention_resolutions": (4,), "dropout": 0.0, "channel_mult": (1, 2, 4), "num_heads": 4,
        "num_head_channels": 64, "num_heads_upsample": -1, "use_scale_shift_norm": True,
        "resblock_updown": True, "use_new_attention_order": False,
    }
    unknown = set(overrides) - set(config) - {"learn_sigma"}
    if unknown:
        raise TypeError(f"small_config got unknown arguments {sorted(unknown)}")
    config.update(overrides)
    return config


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of (B,) possibly fractional timesteps: [cos(t f_i), sin(t f_i)].

    Frequencies f_i = max_period^(-i / half), i < half (the official spacing, which differs from the
    ``half - 1`` spacing of other codebases); an odd ``dim`` gets a zero last column.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    embedding = torch.cat((angles.cos(), angles.sin()), dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def _zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups whose statistics are computed in float32 whatever the input dtype or autocast.

    The output has the input's dtype. Normalising bf16 activations in bf16 loses the small differences the
    network was trained on, hence the explicit float32 (autocast is switched off for this op only).
    """

    def __init__(self, channels: int) -> None:
        if channels % 32:
            raise ValueError(f"GroupNorm32 needs a multiple of 32 channels, got {channels}")
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class TimestepBlock(nn.Module):
    """A block whose forward also takes the time embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """nn.Sequential that hands the time embedding to the children that take one (``TimestepBlock``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (used when not ``resblock_updown``)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (used when not ``resblock_updown``)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Pre-activation residual block conditioned on the time embedding, optionally resampling by 2.

    ``in_layers`` = norm, SiLU, conv; ``emb_layers`` = SiLU, linear (to 2C for scale and shift);
    ``out_layers`` = norm, SiLU, dropout, conv (zero-initialised). When resampling, both the main path (after
    its first activation) and the skip are resampled without parameters: nearest-neighbour up, 2x2 mean down.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        if up and down:
            raise ValueError("a ResBlock resamples up or down, not both")
        self.resample: nn.Module | None = (
            nn.Upsample(scale_factor=2, mode="nearest") if up else nn.AvgPool2d(2) if down else None
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        # The official blocks inside a UNet always use a 1x1 projection when the width changes.
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_in, act_in, conv_in = self.in_layers
        h = act_in(norm_in(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = conv_in(h)

        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm_out, act_out, dropout, conv_out = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = norm_out(h) * (1 + scale) + shift
        else:
            h = norm_out(h + emb_out)
        h = conv_out(dropout(act_out(h)))
        return self.skip_connection(x) + h


def qkv_attention(qkv: torch.Tensor, heads: int, legacy_order: bool = True) -> torch.Tensor:
    """Multi-head softmax attention over positions of a packed (B, 3 * heads * ch, T) projection.

    legacy_order (the released checkpoints): channels are grouped per head, each head holding [q; k; v].
    Otherwise (``use_new_attention_order``): [all q; all k; all v], each split into heads.
    Scores are q.k / sqrt(ch); returns (B, heads * ch, T).
    """
    batch, width, length = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"{width} qkv channels cannot be split into q, k, v of {heads} heads")
    ch = width // (3 * heads)
    if legacy_order:
        q, k, v = qkv.reshape(batch * heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (part.reshape(batch * heads, ch, length) for part in qkv.chunk(3, dim=1))
    # SDPA wants (N, T, ch); its fused kernels accumulate the softmax in float32 for bf16 inputs.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(batch, heads * ch, length)


class AttentionBlock(nn.Module):
    """Residual self-attention over all spatial positions: x + proj_out(attention(qkv(norm(x))))."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} attention channels are not a multiple of {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"{channels} attention channels cannot be split into {self.num_heads} heads")
        self.legacy_order = not use_new_attention_order
        self.norm = GroupNorm32(channels)
        # 1-D convolutions over the flattened positions, as in the official code (weights of shape (·, ·, 1)).
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        attended = qkv_attention(self.qkv(self.norm(flat)), self.num_heads, self.legacy_order)
        return (flat + self.proj_out(attended)).reshape(b, c, h, w)


def _resolve_out_channels(in_channels: int, out_channels: int | None, learn_sigma: bool | None) -> int:
    """Output width from the two ways of giving it; learned variances double the image channels."""
    if out_channels is None:
        return in_channels * (1 if learn_sigma is False else 2)
    if learn_sigma is not None and learn_sigma != (out_channels == 2 * in_channels):
        raise ValueError(
            f"learn_sigma={learn_sigma} contradicts out_channels={out_channels} for {in_channels} input "
            f"channels (learned variances mean out_channels = 2 * in_channels)"
        )
    return out_channels


class GuidedUNet(nn.Module):
    """guided-diffusion's unconditional ``UNetModel``: ``forward(x, t) -> (B, out_channels, H, W)``.

    x: (B, in_channels, H, W) noisy images in the diffusion's [-1, 1] range, H and W multiples of
    ``2 ** (len(channel_mult) - 1)``; t: timesteps in [0, 1000), a number or one value per sample.
    With learned variances (``out_channels == 2 * in_channels``, as in the released priors) the first half of
    the output is ε and the second half the variance interpolation values.

    ``attention_resolutions`` are downsampling factors (see the module docstring). ``num_head_channels``
    fixes the head width (the number of heads then follows each block's width) and overrides ``num_heads``;
    ``num_heads_upsample`` (-1: same as ``num_heads``) is the decoder's ``num_heads``. ``out_channels=None``
    means ``in_channels * (2 if learn_sigma else 1)``; ``learn_sigma`` defaults to True then.
    ``checkpointing`` recomputes every encoder, middle and decoder block's activations in the backward pass
    (``torch.utils.checkpoint``, training with grad only; guided-diffusion's ``use_checkpoint``): less memory,
    slower; no new parameters, and not part of ``config``.
    """

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        model_channels: int = 128,
        out_channels: int | None = 6,
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4),
        num_heads: int = 4,
        num_head_channels: int = 64,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        use_new_attention_order: bool = False,
        learn_sigma: bool | None = None,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        out_channels = _resolve_out_channels(in_channels, out_channels, learn_sigma)
        attention_resolutions = tuple(int(a) for a in attention_resolutions)
        channel_mult = tuple(channel_mult)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.learn_sigma = out_channels == 2 * in_channels
        self.num_levels = len(channel_mult)
        self.config: dict[str, Any] = {
            "image_size": image_size, "in_channels": in_channels, "model_channels": model_channels,
            "out_channels": out_channels, "num_res_blocks": num_res_blocks,
            "attention_resolutions": attention_resolutions, "dropout": dropout, "channel_mult": channel_mult,
            "num_heads": num_heads, "num_head_channels": num_head_channels,
            "num_heads_upsample": num_heads_upsample, "use_scale_shift_norm": use_scale_shift_norm,
            "resblock_updown": resblock_updown, "use_new_attention_order": use_new_attention_order,
        }

        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def res_block(ch_in: int, ch_out: int, **resample: bool) -> ResBlock:
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm, **resample)

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order)

        ch = stem_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_widths = [ch]  # the width of every encoder output, consumed in reverse by the decoder
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                width = int(mult * model_channels)
                layers: list[nn.Module] = [res_block(ch, width)]
                ch = width
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_widths.append(ch)
            if level != len(channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch)
                self.input_blocks.append(EmbedSequential(down))
                skip_widths.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(res_block(ch, ch), attention(ch, num_heads), res_block(ch, ch))

        decoder_heads = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                width = int(mult * model_channels)
                layers = [res_block(ch + skip_widths.pop(), width)]
                ch = width
                if ds in attention_resolutions:
                    layers.append(attention(ch, decoder_heads))
                if level and i == num_res_blocks:
                    layers.append(res_block(ch, ch, up=True) if resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), _zero_init(nn.Conv2d(stem_ch, out_channels, 3, padding=1))
        )

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``block(h, emb)``, under activation checkpointing when it is on and gradients are being recorded."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, t: TimeInput) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}")
        factor = 2 ** (self.num_levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} is not a multiple of {factor} (2 ** (levels - 1)); pad it"
            )
        t_vec = time_vector(t, x.shape[0], x.device)
        param_dtype = self.out[-1].weight.dtype
        # The embedding MLP is tiny; keeping it in float32 under autocast keeps nearby timesteps distinct
        # (as the official fp16 mode does, which leaves time_embed in float32).
        with torch.autocast(device_type=x.device.type, enabled=False):
            emb = self.time_embed(timestep_embedding(t_vec, self.model_channels).to(param_dtype))

        h = x.to(param_dtype)
        run = self._run
        skips = []
        for block in self.input_blocks:
            h = run(block, h, emb)
            skips.append(h)
        h = run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = run(block, torch.cat((h, skips.pop()), dim=1), emb)
        return self.out(h).to(x.dtype)
