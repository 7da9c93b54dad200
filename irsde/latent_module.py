"""Latent Refusion's two training recipes (Luo et al., CVPRW 2023; Algolzw/image-restoration-sde).

1. `LatentAutoencoderModule` (official `codes/config/unet-latent`): trains the U-Net autoencoder with
   rec + rep + 0.001 reg (irsde/latent_losses.py). Validation: decode(GT latent, LQ hidden) against the GT.
2. `LatentIRSDEModule` (official `codes/config/latent-dehazing`): IR-SDE with mu = encode(LQ), x0 = encode(GT),
   the same matching loss; the autoencoder is frozen.

Where the frozen autoencoder lives: its weights are read once from `autoencoder_ckpt` (a suite autoencoder
checkpoint or an official `.pth`) and kept as a frozen submodule, stored ONCE in every checkpoint's state_dict
(never in the optimizer, never EMA-copied). Why: a latent checkpoint then restores by itself (evaluate.py ckpt=
on another machine, after the autoencoder file moved), and the IR-SDE output is only meaningful with the exact
encoder it was trained on. The official autoencoder is 2.0 M parameters next to the latent NAFNet's 76.6 M.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.training import RestorationModule
from core.weights import find_network, load_weights_file, state_dict_mismatch
from irsde.latent_losses import autoencoder_losses
from irsde.latent_restorer import AutoencoderRestorer, LatentIRSDERestorer
from irsde.losses import LOSSES
from irsde.module import IRSDEModule
from irsde.parameterization import as_noise_model

AUTOENCODER_SIGNATURE = "latent_conv.weight"  # a key only the LatentUNet has


class LatentAutoencoderModule(RestorationModule):
    """Refusion's autoencoder recipe. net: a LatentUNet; loss_weights: rec, rep, reg (official 1, 1, 0.001) and
    std_ratio (0.5); the swap augmentation (LQ and GT trade places) is the data's `swap` option."""

    def __init__(self, net: nn.Module, loss_weights: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        allowed = {"rec_weight", "rep_weight", "reg_weight", "std_ratio"}
        self.loss_weights = dict(loss_weights or {})
        unknown = sorted(set(self.loss_weights) - allowed)
        if unknown:
            raise ConfigError(f"model.loss_weights has no {', '.join(unknown)}: use {', '.join(sorted(allowed))}")
        self.setup_ema()

    def training_loss(self, batch: dict):
        lq, gt = self.to_memory_format(batch["lq"]), self.to_memory_format(batch["gt"])
        out = autoencoder_losses(self.net, lq, gt, **self.loss_weights)
        return out["loss"], {k: out[k].detach() for k in ("rec", "rep", "reg")}

    def restorer(self, tile: int | None = None, overlap: int | None = None, progress: bool = False,
                 net: nn.Module | None = None) -> AutoencoderRestorer:
        return AutoencoderRestorer(net if net is not None else self.eval_net, tile=tile, overlap=overlap)

    def read_release_network(self, path) -> nn.Module:
        """An official `unet-latent` release file (e.g. latent_dehaze.pth) into this run's LatentUNet."""
        load_autoencoder_weights(self.net, path)
        return self.net


class LatentIRSDEModule(IRSDEModule):
    """IR-SDE in the latent space of a frozen Refusion autoencoder.

    net: the latent noise network (ConditionalNAFNet with img_channel = the latent's channels, intro_skip true);
    autoencoder: the LatentUNet's architecture; autoencoder_ckpt: where its trained weights are (read once;
    a checkpoint of this recipe then holds them). Other arguments: IRSDEModule's.
    """

    def __init__(self, net: nn.Module, sde: dict, autoencoder: nn.Module, autoencoder_ckpt: str | None = None,
                 **kwargs):
        super().__init__(net=net, sde=sde, **kwargs)
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        # saved with the weights: a module restored from a checkpoint knows its autoencoder is the trained one
        self.register_buffer("autoencoder_loaded", torch.tensor(False))
        self.autoencoder_ckpt = autoencoder_ckpt
        # The file may be gone when a checkpoint is evaluated elsewhere: its state_dict then brings the weights.
        if autoencoder_ckpt and Path(autoencoder_ckpt).expanduser().is_file():
            self.load_autoencoder(autoencoder_ckpt)

    def load_autoencoder(self, path) -> None:
        load_autoencoder_weights(self.autoencoder, Path(path).expanduser())
        self.autoencoder_loaded.fill_(True)

    def require_autoencoder(self) -> None:
        if not bool(self.autoencoder_loaded):
            where = f"{self.autoencoder_ckpt}: no such file" if self.autoencoder_ckpt else "not set"
            raise ConfigError(f"model.autoencoder_ckpt ({where}): latent IR-SDE needs a trained autoencoder, a "
                              "checkpoint of experiment=refusion_latent_ae_* or the official latent_dehaze.pth")

    def on_fit_start(self) -> None:
        self.require_autoencoder()  # after a resume has restored the stored weights

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen: never in training mode
        return self

    def trainable_networks(self) -> list[nn.Module]:
        return [self.net]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x)[0]

    def training_loss(self, batch: dict):
        # official: L_LQ = encode(LQ), L_GT = encode(GT); the IR-SDE runs from mu = L_LQ to x0 = L_GT
        mu = self.to_memory_format(self.encode(self.to_memory_format(batch["lq"])))
        x0 = self.to_memory_format(self.encode(self.to_memory_format(batch["gt"])))
        loss = LOSSES[self.loss_name](self.sde, as_noise_model(self.net, self.sde, self.prediction), x0, mu)
        return loss, {}

    def restorer(self, sampler: str | None = None, steps: int | None = None, sigma: float | None = None,
                 tile: int | None = None, overlap: int | None = None, clip_x0=None, order: int | None = None,
                 grid: str | None = None, progress: bool = False,
                 net: nn.Module | None = None) -> LatentIRSDERestorer:
        """encode -> this run's sampler (or the given one) on the latent -> decode with the LQ's features."""
        self.require_autoencoder()
        given = {"name": sampler, "steps": steps, "sigma": sigma, "clip_x0": clip_x0, "order": order, "grid": grid}
        opts = {**self.sampler_options, **{k: v for k, v in given.items() if v is not None}}
        return LatentIRSDERestorer(net if net is not None else self.eval_net, self.sde, self.autoencoder,
                                   tile=tile, overlap=overlap, sampler=opts["name"], steps=opts.get("steps"),
                                   sigma=opts.get("sigma"), clip_x0=opts.get("clip_x0"), order=opts.get("order"),
                                   grid=opts.get("grid"), prediction=self.prediction, progress=progress)

    def read_release_network(self, path) -> nn.Module:
        """weights= an official latent NAFNet file, into this config's network: the file cannot say intro_skip
        (the latent copy's), the config does. The autoencoder comes from model.autoencoder_ckpt."""
        from irsde.official import load_state_dict_any

        found = load_state_dict_any(path)
        problem = state_dict_mismatch(self.net.state_dict(), found)
        if problem:
            raise CheckpointError(f"{path}: the weights do not fit model.net ({problem})")
        self.net.load_state_dict(found)
        self.require_autoencoder()
        return self.net


def load_autoencoder_weights(net: nn.Module, path) -> None:
    """A LatentUNet's weights from an official `.pth`, a suite autoencoder checkpoint (EMA copy preferred) or a
    latent IR-SDE checkpoint (its stored autoencoder) into `net`; a clear error when they do not fit."""
    raw = load_weights_file(path, "cpu", False, CheckpointError)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        stored = {k[len("autoencoder."):]: v for k, v in raw["state_dict"].items() if k.startswith("autoencoder.")}
        raw = {"state_dict": stored} if stored else raw
    found = find_network(raw, path, lambda sd: AUTOENCODER_SIGNATURE in sd, CheckpointError,
                         "a latent Refusion autoencoder", f"'{AUTOENCODER_SIGNATURE}'")
    problem = state_dict_mismatch(net.state_dict(), found)
    if problem:
        raise CheckpointError(f"{path}: the autoencoder weights do not fit model.autoencoder ({problem}): set "
                              "model.autoencoder.ch / ch_mult / embed_dim to the trained network's")
    net.load_state_dict(found)
