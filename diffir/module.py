"""What DiffIR's two training stages share: the network input, the restorer, release weights, and the official
progressive patch/batch schedule (a Lightning callback). Restoration itself is diffir.restorer.DiffIRRestorer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.training import RestorationModule
from diffir.losses import PixelLoss
from diffir.restorer import DiffIRRestorer, is_inpainting, network_input

log = logging.getLogger(__name__)


class DiffIRModule(RestorationModule):
    """Base of the stage-1 and stage-2 modules: ``net`` is a ``diffir.networks.DiffIRS1`` / ``DiffIRS2``."""

    stage: int = 0

    def __init__(self, net: nn.Module, pixel_loss: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = net
        self._check_stage(net, "model.net", ConfigError)
        self.pixel_loss = PixelLoss(**dict(pixel_loss or {}))
        self.setup_ema()

    @property
    def inpainting(self) -> bool:
        """True for the 4-channel (masked image + mask) inpainting network."""
        return is_inpainting(self.net)

    def network_input(self, lq: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return network_input(self.net, lq, mask)

    def restorer(self, tile: int | None = None, overlap: int | None = None, progress: bool = False,
                 net: nn.Module | None = None) -> DiffIRRestorer:
        """The EMA network (or `net`); DiffIR has no sampler options: its IPR diffusion always runs the timesteps
        it was trained with."""
        return DiffIRRestorer(net if net is not None else self.eval_net, tile=tile, overlap=overlap, progress=progress)

    def _check_stage(self, net: nn.Module, what: str, error: type[Exception] = CheckpointError) -> None:
        stage = net.config.get("stage") if hasattr(net, "config") else None
        if stage != self.stage:
            raise error(f"{what} is a DiffIR stage-{stage} network, but {type(self).__name__} "
                                  f"trains and runs stage {self.stage}")

    def read_release_network(self, path) -> nn.Module:
        """Official DiffIR weights (BasicSR ``params_ema`` / ``params``, inpainting ``generator.``) of this
        stage; the architecture is read off the weights."""
        from diffir.official import load_network

        net = load_network(path)
        self._check_stage(net, f"weights={path}")
        return net


class ProgressivePatches(L.Callback):
    """The official progressive training (Restormer-style): patch and batch size change at given iterations.

    The data module loads batches of the largest batch size at the largest patch size (``data.batch_size``,
    ``data.patch_size``); before each step this callback keeps a random subset of ``batch_sizes[j]`` samples
    and one random ``patch_sizes[j]`` crop shared by the whole batch, exactly as the official training loop
    does. Stage ``j`` covers iterations ``sum(iters[:j]) + 1 .. sum(iters[:j + 1])`` (BasicSR counts
    iterations from 1); after the last stage the last sizes stay. The random draws come from a generator
    seeded by (seed, iteration, rank), so a resumed run crops exactly as the uninterrupted one.
    """

    def __init__(self, iters: Sequence[int], patch_sizes: Sequence[int], batch_sizes: Sequence[int],
                 seed: int | None = None) -> None:
        if not (len(iters) == len(patch_sizes) == len(batch_sizes)) or not iters:
            raise ConfigError("callbacks.progressive: iters, patch_sizes and batch_sizes need one entry per "
                              f"stage (got {len(iters)}, {len(patch_sizes)}, {len(batch_sizes)})")
        self.iters, self.patch_sizes, self.batch_sizes = list(iters), list(patch_sizes), list(batch_sizes)
        self.ends = [sum(self.iters[: j + 1]) for j in range(len(self.iters))]
        self.seed = int(torch.initial_seed() if seed is None else seed) % 2**31
        self._announced: int | None = None

    def stage_at(self, iteration: int) -> int:
        """Index of the schedule stage of a 1-based iteration."""
        for j, end in enumerate(self.ends):
            if iteration <= end:
                return j
        return len(self.ends) - 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = getattr(trainer, "datamodule", None)
        patch, batch = getattr(dm, "patch_size", None), getattr(dm, "batch_size", None)
        if patch is not None and max(self.patch_sizes) > patch:
            raise ConfigError(f"data.patch_size={patch} is smaller than the largest progressive patch "
                              f"{max(self.patch_sizes)} (callbacks.progressive.patch_sizes): load batches at "
                              f"data.patch_size={max(self.patch_sizes)}")
        if batch is not None and max(self.batch_sizes) > batch:
            raise ConfigError(f"data.batch_size={batch} is smaller than the largest progressive batch "
                              f"{max(self.batch_sizes)} (callbacks.progressive.batch_sizes): set "
                              f"data.batch_size={max(self.batch_sizes)}")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        iteration = trainer.global_step + 1
        j = self.stage_at(iteration)
        if self._announced != j and trainer.is_global_zero:
            log.info("progressive training: patch size %d, batch size %d (per device) from iteration %d",
                     self.patch_sizes[j], self.batch_sizes[j], iteration)
        self._announced = j
        seed = self.seed * 1_000_003 + iteration * 101 + trainer.global_rank
        generator = torch.Generator().manual_seed(seed)
        # in place: Lightning hands this same dict to training_step
        batch.update(crop_batch(batch, self.patch_sizes[j], self.batch_sizes[j], generator))


def crop_batch(batch: dict, patch_size: int, batch_size: int, generator: torch.Generator) -> dict:
    """A random subset of ``batch_size`` samples, cropped to one random ``patch_size`` window (GT pixels).

    Every 4-D tensor of the GT's size (gt, mask, same-size lq) gets the same window; a smaller LR ``lq``
    (super-resolution) gets the matching window divided by the scale. Other per-sample entries (index, name)
    follow the subset.
    """
    gt = batch["gt"]
    n, (h, w) = gt.shape[0], gt.shape[-2:]
    if patch_size > min(h, w):
        raise ConfigError(f"progressive patch {patch_size} exceeds the loaded patch {h}x{w}: raise "
                          "data.patch_size")
    keep = None
    if batch_size < n:
        keep = torch.randperm(n, generator=generator)[:batch_size].sort().values
    scale = max(1, h // batch["lq"].shape[-2])
    if patch_size % scale:
        raise ConfigError(f"progressive patch {patch_size} is not a multiple of the SR scale {scale}")
    cell = patch_size // scale
    top = int(torch.randint(0, h // scale - cell + 1, (), generator=generator)) if patch_size < h else 0
    left = int(torch.randint(0, w // scale - cell + 1, (), generator=generator)) if patch_size < w else 0
    out = {}
    for key, value in batch.items():
        if keep is not None:
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
                value = value[keep.to(value.device)]
            elif isinstance(value, (list, tuple)) and len(value) == n:
                value = type(value)(value[i] for i in keep.tolist())
        if isinstance(value, torch.Tensor) and value.dim() == 4:
            if value.shape[-2:] == (h, w):
                y, x = top * scale, left * scale
                value = value[..., y: y + patch_size, x: x + patch_size]
            elif scale > 1 and value.shape[-2:] == (h // scale, w // scale):
                value = value[..., top: top + cell, left: left + cell]
        out[key] = value
    return out
