"""DiffIR's composite networks: stage 1 (DIRformer + CPEN_S1) and stage 2 (DIRformer + CPEN_S2 + IPR DDPM).
Attribute names match the official ``DiffIRS1`` / ``DiffIRS2`` so that official ``params_ema`` state dicts
load with the identity key mapping: S1 has ``G.*`` and ``E.*``; S2 has ``G.*``, ``condition.*``,
``denoise.*`` and the DDPM ``diffusion.*`` (whose ``model`` / ``condition`` are the same modules as
``denoise`` / ``condition``, so the official duplicate keys appear here too, plus the 12 schedule buffers).

Unlike the official modules, ``forward`` always returns the restored image alone, in train and eval mode
alike; the training extras come from ``forward_train``. Inputs of any size are accepted: the low-quality
image (and the ground truth, scaled) is reflect-padded on the right/bottom to the network's multiple before
*both* the CPEN and the DIRformer see it, as in the official test code, and the output is cropped back.

Defaults are the official GoPro deblurring configuration. Other official settings: SR x4: ``scale=4, dim=64,
num_blocks=(13,1,1,1), num_refinement_blocks=13, ffn_expansion_factor=2.2, LayerNorm_type="BiasFree",
n_encoder_res=9``; inpainting (CelebA-HQ / Places2): ``inp_channels=4, dim=52, num_blocks=(1,1,1,9),
num_refinement_blocks=0, ffn_expansion_factor=1.8, n_encoder_res=5`` (no global residual).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.nn import crop_to, pad_by, pad_to_multiple
from diffir.cpen import CPENS1, CPENS2
from diffir.dirformer import DIRformer
from diffir.ipr_diffusion import IPRDenoiser, IPRDiffusion


class _DiffIRBase(nn.Module):
    def __init__(self, inp_channels: int, out_channels: int, dim: int, num_blocks: Sequence[int],
                 num_refinement_blocks: int, heads: Sequence[int], ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str, scale: int | None, residual: bool | None,  # noqa: N803
                 checkpointing: bool = False) -> None:
        super().__init__()
        # checkpointing (activation recomputation in G's transformer blocks) is a training option, not part of
        # the architecture: it stays out of self.config and adds no parameters.
        self.G = DIRformer(inp_channels=inp_channels, out_channels=out_channels, dim=dim,
                           num_blocks=num_blocks, num_refinement_blocks=num_refinement_blocks, heads=heads,
                           ffn_expansion_factor=ffn_expansion_factor, bias=bias,
                           LayerNorm_type=LayerNorm_type, scale=scale, residual=residual,
                           checkpointing=checkpointing)
        self.config = {
            "inp_channels": inp_channels, "out_channels": out_channels, "dim": dim,
            "num_blocks": list(num_blocks),
            "num_refinement_blocks": num_refinement_blocks, "heads": list(heads),
            "ffn_expansion_factor": ffn_expansion_factor, "bias": bias, "LayerNorm_type": LayerNorm_type,
            "scale": scale, "residual": self.G.residual,
        }

    @property
    def out_scale(self) -> int:
        return self.G.out_scale

    def _pad(self, lq: torch.Tensor) -> torch.Tensor:
        """Reflect-pad right/bottom to the DIRformer's multiple (what CPEN and DIRformer both see)."""
        return pad_to_multiple(lq, self.G.size_multiple)[0]

    def _crop(self, out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Back to the input's size (times the SR scale)."""
        return crop_to(out, (h * self.out_scale, w * self.out_scale))


class DiffIRS1(_DiffIRBase):
    """Stage 1: ``forward(lq, gt) -> restored``; the IPR comes from CPEN_S1(lq, gt)."""

    def __init__(
        self,
        n_encoder_res: int = 5,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (3, 5, 6, 6),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.0,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 - official option name
        scale: int | None = None,
        residual: bool | None = None,
        checkpointing: bool = False,
    ) -> None:
        super().__init__(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type, scale, residual, checkpointing)
        self.E = CPENS1(n_encoder_res, lq_channels=inp_channels, gt_channels=out_channels, scale=scale or 1)
        self.config.update(stage=1, n_encoder_res=n_encoder_res)

    def _pad_pair(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.out_scale
        if gt.shape[-2:] != (lq.shape[-2] * s, lq.shape[-1] * s):
            raise ValueError(f"gt {tuple(gt.shape[-2:])} must be {s}x the size of lq {tuple(lq.shape[-2:])}")
        lq_pad, pad_h, pad_w = pad_to_multiple(lq, self.G.size_multiple)
        return lq_pad, pad_by(gt, pad_h * s, pad_w * s)

    def encode(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The stage-1 IPR (B, 256) of an image pair (the teacher prior for stage 2)."""
        return self.E(*self._pad_pair(lq, gt))

    def forward_train(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored, IPR_S1)."""
        h, w = lq.shape[-2:]
        lq_pad, gt_pad = self._pad_pair(lq, gt)
        ipr = self.E(lq_pad, gt_pad)
        return self._crop(self.G(lq_pad, ipr), h, w), ipr

    def forward(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return self.forward_train(lq, gt)[0]


class DiffIRS2(_DiffIRBase):
    """Stage 2: ``forward(lq, ipr_s1=None, noise=None) -> restored``; the IPR comes from the IPR diffusion.

    Without ``ipr_s1`` the IPR is sampled from ``noise`` (default: a fresh ``randn(B, 256)``); with it, the
    training chain is used (stage-1 IPR diffused to t = T-1 with ``noise``, then denoised).
    """

    def __init__(
        self,
        n_encoder_res: int = 5,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (3, 5, 6, 6),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.0,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 - official option name
        n_denoise_res: int = 1,
        linear_start: float = 0.1,
        linear_end: float = 0.99,
        timesteps: int = 4,
        scale: int | None = None,
        residual: bool | None = None,
        checkpointing: bool = False,
    ) -> None:
        super().__init__(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type, scale, residual, checkpointing)
        self.condition = CPENS2(n_encoder_res, lq_channels=inp_channels, scale=scale or 1)
        self.denoise = IPRDenoiser(n_denoise_res, timesteps)
        self.diffusion = IPRDiffusion(self.denoise, self.condition, timesteps, linear_start, linear_end)
        self.config.update(stage=2, n_encoder_res=n_encoder_res, n_denoise_res=n_denoise_res,
                           linear_start=linear_start, linear_end=linear_end, timesteps=timesteps)

    def estimate_ipr(self, lq: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The sampled IPR (B, 256) for a low-quality image."""
        return self.diffusion.sample(self.condition(self._pad(lq)), noise)

    def forward_train(self, lq: torch.Tensor, ipr_s1: torch.Tensor, noise: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(restored, predicted IPR, IPR after each of the T reverse steps), all in the autograd graph."""
        h, w = lq.shape[-2:]
        lq_pad = self._pad(lq)
        ipr, steps = self.diffusion.train_chain(ipr_s1, self.condition(lq_pad), noise)
        return self._crop(self.G(lq_pad, ipr), h, w), ipr, steps

    def forward(self, lq: torch.Tensor, ipr_s1: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        if ipr_s1 is not None:
            return self.forward_train(lq, ipr_s1, noise)[0]
        h, w = lq.shape[-2:]
        lq_pad = self._pad(lq)
        return self._crop(self.G(lq_pad, self.diffusion.sample(self.condition(lq_pad), noise)), h, w)
