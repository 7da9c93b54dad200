"""DiffIR as a `core.restorer.Restorer`: the DIRformer guided by an IPR (stage 1: from CPEN_S1 with the ground
truth; stage 2: sampled by the 4-step IPR diffusion from CPEN_S2's condition).

Inputs. The network sees the low-quality image, except for inpainting (a network with one more input channel than
output channels): there it sees LaMa's ``cat[lq * known, 1 - known]`` (masked image, then the missing-pixel mask),
and the restored image keeps the known pixels of the input (LaMa's ``inpainted``). The mask comes with the batch
(``mask``: 1 = known); without one, the pixels that are white in every channel are taken as missing (the data
modules' convention, see ``data.masks.apply_mask``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from core.errors import ConfigError
from core.nn import count_parameters
from core.restorer import Restorer
from diffir.cpen import IPR_DIM

log = logging.getLogger(__name__)


def is_inpainting(net: nn.Module) -> bool:
    """True for the 4-channel (masked image + mask) inpainting network."""
    return net.config["inp_channels"] == net.config["out_channels"] + 1


def known_mask(lq: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(N, 1, H, W), 1 = known pixel: the given mask, else the pixels not white in every channel."""
    if mask is not None:
        return mask.to(lq.dtype)
    log.warning("DiffIR inpainting without a mask: taking the pixels that are white in every channel as the "
                "missing ones (pass mask= to choose them)")
    return (lq < 1.0).any(dim=1, keepdim=True).to(lq.dtype)


def network_input(net: nn.Module, lq: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if not is_inpainting(net):
        return lq
    known = known_mask(lq, mask)
    return torch.cat([lq * known, 1.0 - known], dim=1)


class DiffIRRestorer(Restorer):
    """net: a DiffIRS1 (restores with the ground-truth prior: condition ``gt``) or DiffIRS2; tile/overlap: run the
    DIRformer on overlapping tiles (the IPR is a global vector, estimated once on the whole image); progress: a
    bar over the tiles."""

    def __init__(self, net: nn.Module, tile: int | None = None, overlap: int | None = None,
                 progress: bool = False) -> None:
        self.net, self.stage, self.progress = net, int(net.config["stage"]), progress
        self.tile = int(tile) if tile else None
        self.overlap = int(overlap) if overlap is not None else min(32, (self.tile or 0) // 4)
        self.inpainting = is_inpainting(net)
        self.conditions = (("gt",) if self.stage == 1 else ()) + (("mask",) if self.inpainting else ())

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, *, generator: torch.Generator | None = None,
                gt: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``generator`` draws stage 2's initial IPR noise (without it, torch's global RNG does)."""
        if mask is not None or self.inpainting:
            mask = known_mask(lq, mask) if self.inpainting else None
        inp = network_input(self.net, lq, mask)
        if self.stage == 1:
            if gt is None:
                raise ConfigError("a DiffIR stage-1 model restores with the ground-truth prior and needs gt=...; "
                                  "evaluate a stage-2 checkpoint (experiment=diffir_s2_...) to restore from the "
                                  "low-quality image alone")
            ipr = self.net.encode(inp, gt.to(inp.dtype))
        else:
            noise = None
            if generator is not None:
                noise = torch.randn((inp.shape[0], IPR_DIM), generator=generator, device=generator.device)
                noise = noise.to(inp.device)
            ipr = self.net.estimate_ipr(inp, noise)
        restored = self._dirformer(inp, ipr)
        if self.inpainting:  # keep the known input pixels (LaMa's composite)
            restored = mask * lq + (1.0 - mask) * restored
        return restored.clamp(0, 1)

    def _dirformer(self, inp: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        if not self.tile:
            return self.net.G(inp, ipr)
        from core.tiling import tiled_apply

        return tiled_apply(lambda x: self.net.G(x, ipr), [inp], tile=self.tile, overlap=self.overlap,
                           scale=self.net.out_scale, multiple=self.net.G.size_multiple, progress=self.progress)

    def nfe(self) -> int:
        """IPR denoiser evaluations per image (the DIRformer and the CPEN run once)."""
        return 0 if self.stage == 1 else int(self.net.config["timesteps"])

    def describe(self) -> str:
        params = count_parameters(self.net) / 1e6
        return f"DiffIR {type(self.net).__name__} (stage {self.stage}), {params:.2f} M params, {self.nfe()} NFEs"

    def settings(self) -> dict:
        if self.stage == 1:
            return {"name": "ground-truth prior (stage 1)", "steps": 0}
        return {"name": "IPR DDPM (posterior means from noise)", "steps": self.nfe(), "T": self.nfe()}
