"""Pieces of the training recipe shared by every method's LightningModule.

`RestorationModule` holds what IR-SDE, DiffIR and the DiffPIR prior have in common: an EMA copy of the
network used for validation and test, optimizer/scheduler from config (Hydra partials), a non-finite loss that
stops the run before any bad weights are written, RNG state in checkpoints for exact resume, the run config
inside every checkpoint, and validation with paper-convention metrics reduced across DDP ranks.
Subclasses implement `training_loss(batch)` and `restorer(**options)` (a `core.restorer.Restorer`).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from core.ema import EMA_DEFAULTS, ema_decay, ema_update, make_ema_copy
from core.errors import UserError
from core.evaluation import ImageMetrics, make_panel, restore_batch, tensor_to_images
from core.loggers import log_panels
from core.restorer import CONDITION_KEYS, Restorer, build_restorer

# Expected, not actionable: the EMA copy is kept in eval mode, and validation metrics are already reduced across
# ranks by ImageMetrics (so self.log must not average them again).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level.*")


class NonFiniteLossError(UserError):
    """The training loss became NaN/inf; the run stops and the last checkpoint on disk stays the last good one."""


class OutOfMemory(UserError):
    """A training step did not fit in the accelerator's memory."""


@contextlib.contextmanager
def explain_out_of_memory(data_cfg, trainer):
    """An out-of-memory error during training becomes one message with the per-device batch and patch size and
    the settings that lower the memory a step needs (the checkpoints on disk stay the last good ones)."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        precision = getattr(trainer, "precision", "?")
        raise OutOfMemory(
            f"out of accelerator memory at step {trainer.global_step} with data.batch_size="
            f"{data_cfg.get('batch_size')} per device, data.patch_size={data_cfg.get('patch_size')}, "
            f"precision {precision}: lower data.batch_size or data.patch_size (or the progressive schedule's "
            "callbacks.progressive.batch_sizes / patch_sizes), train with trainer.precision=bf16-mixed, or spread "
            "the batch over more devices (trainer=ddp trainer.devices=N); then resume with ckpt_path=last "
            f"({str(err).splitlines()[0][:160]})") from err


class RestorationModule(L.LightningModule):
    #: submodules only training needs (DiffIR's teacher CPEN): an exported inference checkpoint may lack them
    training_only: tuple[str, ...] = ()

    def __init__(self, optimizer=None, scheduler=None, ema: dict | None = None, val_options: dict | None = None,
                 channels_last: bool = False, val_panels: int = 4):
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.ema_cfg = {**EMA_DEFAULTS, **(ema or {})}
        self.use_ema = self.ema_cfg["decay"] is not None and self.ema_cfg["decay"] > 0
        ema_decay(0, self.ema_cfg)  # a bad key fails at start, not at the first step
        self.val_options = dict(val_options or {})
        self.channels_last = channels_last
        self.val_panels = val_panels
        self.run_config: dict | None = None  # set by train.py; stored in every checkpoint
        self.val_metrics: ImageMetrics | None = None
        self._panels: list = []

    # -- networks ---------------------------------------------------------------------------------------------
    def trainable_networks(self) -> list[nn.Module]:
        """The networks the optimizer steps (and the EMA follows)."""
        return [self.net]

    def setup_ema(self) -> None:
        if self.use_ema:
            self.ema_net = make_ema_copy(self.net)

    @property
    def eval_net(self) -> nn.Module:
        return self.ema_net if self.use_ema else self.net

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        dm = getattr(self.trainer, "datamodule", None)
        convention = {"y_channel": bool(getattr(dm, "metric_y_channel", False)),
                      "crop_border": int(getattr(dm, "metric_crop_border", 0))}
        self.val_metrics = ImageMetrics(**convention)
        if stage == "test":  # LPIPS and FID too, when their weights are on disk
            self.test_metrics = ImageMetrics(**convention, perceptual=True)

    # -- training ---------------------------------------------------------------------------------------------
    def training_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, extras = self.training_loss(batch)
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step}: stopped before the optimizer "
                "step, so the checkpoints on disk are the last good ones. Lower the learning rate "
                "(model.optimizer.lr=...), enable gradient clipping (trainer.gradient_clip_val=...) or use "
                "trainer.precision=32, then resume with ckpt_path=<run>/checkpoints/last.ckpt")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["gt"].shape[0])
        for key, value in extras.items():
            self.log(f"train/{key}", value, batch_size=batch["gt"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        decay = ema_decay(self.global_step, self.ema_cfg) if self.use_ema else None  # see core.ema
        if decay is not None:
            ema_update(self.ema_net, self.net, decay)

    def load_release_weights(self, path) -> None:
        """Official release weights (the method's `read_release_network`) replace the network and its EMA copy."""
        self.net = self.read_release_network(path)
        if self.use_ema:
            self.ema_net = make_ema_copy(self.net)

    def read_release_network(self, path) -> nn.Module:
        raise UserError(f"weights={path}: {type(self).__name__} has no release weights (use ckpt= or model=)")

    def configure_optimizers(self):
        params = [p for net in self.trainable_networks() for p in net.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- restoration, validation and test --------------------------------------------------------------------
    def restorer(self, **options) -> Restorer:
        """This method's `core.restorer.Restorer` over the EMA network, with these sampler options fixed."""
        raise NotImplementedError

    def restore(self, lq: torch.Tensor, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """Shorthand for tests and notebooks: `restorer(**options).restore(lq, **conditions)`, where the
        conditions are the keyword arguments named like batch entries (gt, mask, kernel)."""
        conditions = {k: kwargs.pop(k) for k in CONDITION_KEYS if k in kwargs}
        return build_restorer(self, kwargs).restore(lq, generator=generator, **conditions)

    def evaluation_step(self, batch: dict, metrics: ImageMetrics) -> tuple[dict, torch.Tensor]:
        """One step of the evaluation loop (core.evaluation.restore_batch) with the validation options; the
        sampler noise is seeded by the image index, so every validation and every DDP layout sees the same."""
        generator = torch.Generator(device=batch["lq"].device).manual_seed(int(batch["index"][0]))
        batch = {**batch, "lq": self.to_memory_format(batch["lq"])}
        batch, restored, seconds = restore_batch(build_restorer(self, self.val_options), batch, generator)
        metrics.update(restored, batch["gt"], batch["index"], lq=batch["lq"], seconds=seconds, names=batch["name"])
        return batch, restored

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        batch, restored = self.evaluation_step(batch, self.val_metrics)
        if self.trainer.is_global_zero and len(self._panels) < self.val_panels:
            for name, lq_i, out_i, gt_i in zip(batch["name"], tensor_to_images(batch["lq"]),
                                               tensor_to_images(restored), tensor_to_images(batch["gt"])):
                if len(self._panels) < self.val_panels:
                    self._panels.append((str(name).replace("/", "_"), make_panel(lq_i, out_i, gt_i)))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # synchronised across ranks, each image counted once
        self.val_metrics.reset()
        self.log("val/psnr", values["psnr"], sync_dist=False, prog_bar=True)
        self.log("val/ssim", values["ssim"], sync_dist=False)
        if self.trainer.is_global_zero and self._panels and not self.trainer.sanity_checking:
            log_panels(self.logger, [p for _, p in self._panels], [n for n, _ in self._panels],
                       self.global_step, self.trainer.default_root_dir)
        self._panels = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluation_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        for name, value in self.test_metrics.compute().items():
            self.log(f"test/{name}", value, sync_dist=False)
        self.test_metrics.reset()

    # -- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from core.resume_state import resumable_loop_state

        checkpoint["config"] = self.run_config
        if self._trainer is not None and "loops" in checkpoint:
            resumable_loop_state(self.trainer, checkpoint)  # a run ended by max_steps (or an epoch) resumes exactly
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(_numpy_state_from_plain(rng["numpy"]))
            random.setstate(rng["python"])
            if rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


# numpy's RNG state holds an ndarray, which Lightning's weights_only checkpoint loading refuses: store a tensor.
def _numpy_state_to_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached
