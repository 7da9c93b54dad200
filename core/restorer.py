"""The one face every method shows to the entry points, the evaluation loop, the benchmarks and the tests.

A method's LightningModule (or, for DiffPIR, a prior plus a task) builds a `Restorer` with its sampler options
fixed: `module.restorer(sampler="ode", steps=25, tile=256)`. The options use one vocabulary across methods —
`sampler`, `steps` (network evaluations), `sigma`, `tile`, `overlap` — and a method that lacks one says so
(`build_restorer`). What a restorer needs besides the degraded image (a mask, a kernel, the ground truth for
DiffIR stage 1) it names in `conditions` and takes as keyword arguments of `restore`.

    restorer = build_restorer(module, {"steps": 10})
    batch = restorer.measure(batch, generator)          # identity unless the method simulates its measurement
    restored = restorer.restore(batch["lq"], generator=generator, **restorer.conditions_of(batch))
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from core.errors import ConfigError

#: the entry points' restorer options (evaluate.py / restore.py spell them sampler=, steps=, ...)
OPTION_KEYS = ("sampler", "steps", "sigma", "tile", "overlap", "order", "grid")
#: the batch entries a restorer may take besides lq
CONDITION_KEYS = ("gt", "mask", "kernel")


class Restorer(ABC):
    """A ready-to-run restoration method: networks in eval mode + sampler options fixed at construction."""

    #: batch keys besides "lq" that `restore` takes (e.g. "mask" for inpainting, "gt" for DiffIR stage 1)
    conditions: tuple[str, ...] = ()

    @abstractmethod
    def restore(self, lq: Tensor, *, generator: torch.Generator | None = None, **conditions: Tensor) -> Tensor:
        """Restored images (NCHW in [0, 1]) of the degraded batch `lq` (NCHW in [0, 1])."""

    @abstractmethod
    def nfe(self) -> int:
        """Network evaluations per restored image."""

    @abstractmethod
    def describe(self) -> str:
        """One line naming the network, its size and the sampler settings."""

    def settings(self) -> dict:
        """The sampler settings, for metrics.json."""
        return {"steps": self.nfe()}

    def measure(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch with `lq` as this method's measurement of `gt`: the data's own `lq` except for methods that
        simulate their measurement (DiffPIR)."""
        return batch

    def scoring(self) -> dict:
        """Overrides of the data's metric convention (DiffPIR SR crops `scale` pixels, as its official scripts)."""
        return {}

    def conditions_of(self, batch: dict, device: torch.device | None = None) -> dict:
        """The batch entries `restore` takes besides lq, moved to `device`."""
        return {k: (batch[k].to(device) if device is not None else batch[k]) for k in self.conditions if k in batch}


def build_restorer(source, options: dict | None = None, *, progress: bool = False, compile: bool = False) -> Restorer:
    """`source.restorer(**options)` with the unset options left out; an option the method lacks is a ConfigError
    naming the ones it has. progress: bars over the sampler's steps (and tiles) with the time left; compile:
    the network through `torch.compile` (pays a warm-up once, then runs faster on GPUs)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    accepted = inspect.signature(source.restorer).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        valid = [k for k in accepted if k not in ("self", "net", "progress")]
        raise ConfigError(f"{type(source).__name__} has no option {', '.join(unknown)}: its options are "
                          f"{', '.join(valid) or 'none'}")
    if compile:
        options["net"] = torch.compile(source.eval_net)
    return source.restorer(progress=progress, **options)


def prepare_for_inference(module: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
    """The module on `device` in eval mode; for precision=bf16 (the fast path, used with bf16 autocast) also in
    channels_last, which bf16 convolutions run fastest in on CPUs with bf16 units and on GPUs."""
    module = module.to(device).eval()
    if str(precision) == "bf16":
        module = module.to(memory_format=torch.channels_last)
    return module
