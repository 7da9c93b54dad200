"""The IR-SDE training recipe (LightningModule): maximum-likelihood trajectory loss, EMA, reverse-time sampling."""

from __future__ import annotations

import torch
from torch import nn

from core.training import RestorationModule
from irsde import samplers
from irsde.losses import LOSSES
from irsde.sde import IRSDE, DenoisingIRSDE

SDE_KINDS = {"irsde": IRSDE, "denoising": DenoisingIRSDE}


class IRSDEModule(RestorationModule):
    """IR-SDE (Luo et al., ICML 2023).

    net: a conditional noise network `net(x_t, mu, t)`; sde: IRSDE kwargs (max_sigma, T, schedule, eps) and
    `kind` = "irsde" (default) or "denoising" (section 4.3: mu is the clean image, the noisy input is x_{t*});
    loss: "matching" (paper eq. 15, official) or "noise" (eq. 10); sampler: default test-time options
    (`name` in irsde.samplers.SAMPLERS, `steps`, and `sigma` for the denoising samplers).
    """

    def __init__(self, net: nn.Module, sde: dict, loss: str = "matching", sampler: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        sde = dict(sde)
        kind = sde.pop("kind", "irsde")
        if kind not in SDE_KINDS:
            raise ValueError(f"model.sde.kind={kind!r} is not one of {sorted(SDE_KINDS)}")
        self.sde = SDE_KINDS[kind](**sde)
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r} is not one of {sorted(LOSSES)}")
        self.loss_name = loss
        self.sampler_options = {"name": "posterior", "steps": None, **dict(sampler or {})}
        self.setup_ema()

    def training_loss(self, batch: dict):
        gt = self.to_memory_format(batch["gt"])
        lq = self.to_memory_format(batch["lq"])
        loss = LOSSES[self.loss_name](self.sde, self.net, gt, lq)
        return loss, {}

    def _options(self, options: dict) -> dict:
        merged = {**self.sampler_options, **{k: v for k, v in options.items() if v is not None}}
        if "sampler" in merged:  # evaluate.py / restore.py spell it sampler=
            merged["name"] = merged.pop("sampler")
        return merged

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, generator: torch.Generator | None = None, progress: bool = False,
                model: nn.Module | None = None, **options) -> torch.Tensor:
        opts = self._options(options)
        name = opts.pop("name")
        model = model if model is not None else self.eval_net
        tile, overlap = opts.pop("tile", None), int(opts.pop("overlap", 32))
        if tile:  # tile every network evaluation; the sampler state stays whole, so noise is seamless
            model = _tiled(model, int(tile), overlap)
        extra = {"sigma": opts["sigma"]} if name.startswith("denoise") else {}  # lq is the noisy image there
        if opts.get("clip_x0") and name == "posterior":
            extra["clip_x0"] = tuple(opts["clip_x0"])
        out = samplers.restore(name, self.sde, model, lq, steps=opts.get("steps"), generator=generator,
                               progress=progress, **extra)
        return out.clamp(0, 1)

    def nfe(self, **options) -> int:
        opts = self._options(options)
        steps = int(opts.get("steps") or self.sde.T)
        if opts["name"].startswith("denoise"):  # starts at t*(sigma), never more steps than that
            return min(steps, self.sde.optimal_timestep(opts["sigma"]))
        return steps

    def describe(self) -> str:
        params = sum(p.numel() for p in self.net.parameters()) / 1e6
        return f"{type(self.net).__name__}, {params:.2f} M params, {'EMA' if self.use_ema else 'raw'} weights"

    def sampler_summary(self, **options) -> dict:
        opts = self._options(options)
        return {"name": opts["name"], "steps": self.nfe(**options), "T": self.sde.T}

    def load_release_weights(self, path) -> None:
        """Official IR-SDE release weights (a ConditionalUNet/NAFNet state dict) replace net and EMA net."""
        from core.ema import make_ema_copy
        from irsde.official import load_network

        self.net = load_network(path)
        if self.use_ema:
            self.ema_net = make_ema_copy(self.net)


def _tiled(net: nn.Module, tile: int, overlap: int):
    from core.tiling import tiled_apply

    def run(x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return tiled_apply(lambda a, b: net(a, b, t), [x_t, mu], tile=tile, overlap=overlap)

    return run
