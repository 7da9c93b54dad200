"""The IR-SDE training recipe (LightningModule): maximum-likelihood trajectory loss, EMA, reverse-time sampling."""

from __future__ import annotations

from torch import nn

from core.training import RestorationModule
from irsde.losses import LOSSES
from irsde.parameterization import as_noise_model, check_prediction
from irsde.restorer import IRSDERestorer
from irsde.sde import IRSDE, DenoisingIRSDE

SDE_KINDS = {"irsde": IRSDE, "denoising": DenoisingIRSDE}


class IRSDEModule(RestorationModule):
    """IR-SDE (Luo et al., ICML 2023).

    net: a conditional noise network `net(x_t, mu, t)`; sde: IRSDE kwargs (max_sigma, T, schedule, eps) and
    `kind` = "irsde" (default) or "denoising" (section 4.3: mu is the clean image, the noisy input is x_{t*});
    loss: "matching" (paper eq. 15, official) or "noise" (eq. 10); prediction: what the network outputs,
    "noise" (official) or "x0" / "residual" (not official, irsde/parameterization.py); sampler: default test-time
    options (`name` in irsde.samplers.SAMPLERS, `steps`, and `sigma` for the denoising samplers).
    """

    def __init__(self, net: nn.Module, sde: dict, loss: str = "matching", sampler: dict | None = None,
                 prediction: str = "noise", **kwargs):
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
        self.prediction = check_prediction(prediction)
        self.sampler_options = {"name": "posterior", "steps": None, **dict(sampler or {})}
        self.setup_ema()

    def training_loss(self, batch: dict):
        gt = self.to_memory_format(batch["gt"])
        lq = self.to_memory_format(batch["lq"])
        loss = LOSSES[self.loss_name](self.sde, as_noise_model(self.net, self.sde, self.prediction), gt, lq)
        return loss, {}

    def restorer(self, sampler: str | None = None, steps: int | None = None, sigma: float | None = None,
                 tile: int | None = None, overlap: int | None = None, clip_x0=None, order: int | None = None,
                 grid: str | None = None, progress: bool = False, net: nn.Module | None = None) -> IRSDERestorer:
        """The EMA network (or `net`) with this run's sampler (model.sampler) and these options over it."""
        given = {"name": sampler, "steps": steps, "sigma": sigma, "clip_x0": clip_x0, "order": order, "grid": grid}
        opts = {**self.sampler_options, **{k: v for k, v in given.items() if v is not None}}
        return IRSDERestorer(net if net is not None else self.eval_net, self.sde, sampler=opts["name"],
                             steps=opts.get("steps"), sigma=opts.get("sigma"), tile=tile, overlap=overlap,
                             clip_x0=opts.get("clip_x0"), order=opts.get("order"), grid=opts.get("grid"),
                             prediction=self.prediction, progress=progress)

    def read_release_network(self, path) -> nn.Module:
        """An official IR-SDE release file (a ConditionalUNet/NAFNet state dict)."""
        from irsde.official import load_network

        return load_network(path)

