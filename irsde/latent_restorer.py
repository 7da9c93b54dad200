"""Latent Refusion (Luo et al., CVPRW 2023) as `core.restorer.Restorer`s.

`LatentIRSDERestorer`: (latent, hidden) = encode(lq); any IR-SDE sampler of `IRSDERestorer` runs on the latent,
with mu = the LQ latent (the official test starts at mu + randn * max_sigma / 255); the restored latent is decoded
with the LQ's hidden features. `AutoencoderRestorer`: the autoencoder recipe's validation, decode(encode(gt)
latent, encode(lq) hidden), the official test of `unet-latent`: how well the latent carries what the haze hides.

tile / overlap are image pixels: encode and decode run on overlapping tiles (irsde.latent_tiling) and every
latent network evaluation on tiles of tile / 8 latent pixels (the latent is 1/8 of the image).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.errors import ConfigError
from core.nn import count_parameters
from core.restorer import Restorer
from irsde.latent_tiling import tiled_decode, tiled_encode
from irsde.restorer import IRSDERestorer

LATENT_TILE = 64  # latent pixels (512 image pixels)
OVERLAP = 32  # image pixels; a multiple of the autoencoder's downscale (8) as latent_tiling needs


def _check_tile(autoencoder: nn.Module, tile: int | None, overlap: int) -> None:
    """A bad tile layout fails at construction, before any image is loaded (one line, the entry points' style)."""
    if tile is None:
        return
    step, multiple = autoencoder.downscale, autoencoder.pad_multiple
    if tile < multiple or not 0 <= overlap < tile or overlap % step:
        raise ConfigError(f"tile={tile} overlap={overlap}: the latent autoencoder needs tile >= {multiple} and "
                          f"0 <= overlap < tile with overlap a multiple of {step} (e.g. tile=512 overlap=32)")


class _Codec:
    """encode / decode with the autoencoder, whole or on tiles."""

    def __init__(self, autoencoder: nn.Module, tile: int | None, overlap: int | None) -> None:
        self.autoencoder = autoencoder
        self.tile = int(tile) if tile else None
        self.overlap = int(overlap if overlap is not None else OVERLAP)
        _check_tile(autoencoder, self.tile, self.overlap)

    def encode(self, x: Tensor, keep_hidden: bool = True):
        if self.tile:
            return tiled_encode(self.autoencoder, x, self.tile, self.overlap, keep_hidden=keep_hidden)
        return self.autoencoder.encode(x)

    def decode(self, latent: Tensor, hidden) -> Tensor:
        if self.tile:
            return tiled_decode(self.autoencoder, latent, hidden, self.tile, self.overlap)
        return self.autoencoder.decode(latent, hidden)


class LatentIRSDERestorer(IRSDERestorer):
    """IR-SDE on the autoencoder's latent; the sampler options are IRSDERestorer's (posterior, sde, ode, mr_ode,
    mr_sde, ...); `net` is the latent noise network, `autoencoder` a LatentUNet."""

    def __init__(self, net: nn.Module, sde, autoencoder: nn.Module, tile: int | None = None,
                 overlap: int | None = None, **options) -> None:
        self.codec = _Codec(autoencoder, tile, overlap)
        down = autoencoder.downscale
        # the latent network's tiles: the image tile in latent pixels, at least LATENT_TILE (smaller tiles save
        # no memory worth having at 1/8 scale); the sampler state stays whole
        latent_tile = max(self.codec.tile // down, LATENT_TILE) if self.codec.tile else None
        super().__init__(net, sde, tile=latent_tile, overlap=max(self.codec.overlap // down, 8), **options)

    @torch.no_grad()
    def restore(self, lq: Tensor, *, generator: torch.Generator | None = None, **conditions) -> Tensor:
        mu, hidden = self.codec.encode(lq)
        latent = self.sample(mu, generator)  # IRSDERestorer's sampler, unclamped: a latent is not an image
        return self.codec.decode(latent.to(mu.dtype), hidden).clamp(0, 1)

    def describe(self) -> str:
        ae = count_parameters(self.codec.autoencoder) / 1e6
        return f"latent {super().describe()}; autoencoder {type(self.codec.autoencoder).__name__} {ae:.2f} M params"


class AutoencoderRestorer(Restorer):
    """decode(encode(gt) latent, encode(lq) hidden): the autoencoder's validation (needs gt, no sampler)."""

    conditions = ("gt",)

    def __init__(self, autoencoder: nn.Module, tile: int | None = None, overlap: int | None = None) -> None:
        self.codec = _Codec(autoencoder, tile, overlap)

    @torch.no_grad()
    def restore(self, lq: Tensor, *, generator: torch.Generator | None = None, gt: Tensor | None = None,
                **conditions) -> Tensor:
        if gt is None:
            raise ConfigError("a latent autoencoder checkpoint rebuilds the clean image from its latent and needs "
                              "the ground truth (evaluate.py with paired data); restore photos with a latent "
                              "IR-SDE checkpoint (experiment=refusion_latent_*)")
        _, hidden = self.codec.encode(lq)
        latent, _ = self.codec.encode(gt.to(lq.dtype), keep_hidden=False)
        return self.codec.decode(latent, hidden).clamp(0, 1)

    def nfe(self) -> int:
        return 1

    def describe(self) -> str:
        params = count_parameters(self.codec.autoencoder) / 1e6
        return (f"latent autoencoder {type(self.codec.autoencoder).__name__}, {params:.2f} M params: "
                "decode(GT latent, LQ hidden features)")
