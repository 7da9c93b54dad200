"""Pieces of the training recipe shared by every method's LightningModule.

`RestorationModule` holds what IR-SDE, DiffIR and the DiffPIR prior have in common: an EMA copy of the
network used for validation and test, optimizer/scheduler from config (Hydra partials), a non-finite loss that
stops the run before any bad weights are written, RNG state in checkpoints for exact resume, the run config
inside every checkpoint, and validation with paper-convention metrics reduced across DDP ranks.
Subclasses implement `training_loss(batch)` and `restore(lq, **options)`.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from core.ema import ema_update, make_ema_copy
from core.errors import UserError
from core.loggers import log_panels, make_panel
from core.metrics import ImageMetrics

# Expected, not actionable: the EMA copy is kept in eval mode, and validation metrics are already reduced across
# ranks by ImageMetrics (so self.log must not average them again).
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level.*")


def select_inputs(batch: dict, keys: tuple[str, ...], device: torch.device | None = None) -> dict:
    """The batch entries among `keys` that a method's restore() takes besides lq (mask, gt, kernel ...)."""
    return {k: (batch[k].to(device) if device is not None else batch[k]) for k in keys if k in batch}


class NonFiniteLossError(UserError):
    """The training loss became NaN/inf; the run stops and the last checkpoint on disk stays the last good one."""


class RestorationModule(L.LightningModule):
    def __init__(self, optimizer=None, scheduler=None, ema: dict | None = None, val_options: dict | None = None,
                 channels_last: bool = False, val_panels: int = 4):
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.ema_cfg = {"decay": 0.999, "every": 1, "start": 0, "warmup": False, **(ema or {})}
        self.use_ema = self.ema_cfg["decay"] is not None and self.ema_cfg["decay"] > 0
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
        self.val_metrics = ImageMetrics(y_channel=bool(getattr(dm, "metric_y_channel", False)),
                                        crop_border=int(getattr(dm, "metric_crop_border", 0)))

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
        if not self.use_ema:
            return
        step = self.global_step
        if step % self.ema_cfg["every"] == 0:
            ema_update(self.ema_net, self.net, self.ema_decay(step))

    def ema_decay(self, step: int) -> float:
        """The configured decay; 0 (copy) until `start`; with `warmup` at most (1 + n) / (10 + n) after n steps,
        so that early EMA weights are not dominated by the random initialisation."""
        n = step - self.ema_cfg["start"]
        if n <= 0:
            return 0.0
        decay = float(self.ema_cfg["decay"])
        return min(decay, (1 + n) / (10 + n)) if self.ema_cfg["warmup"] else decay

    def configure_optimizers(self):
        params = [p for net in self.trainable_networks() for p in net.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- restoration and validation ---------------------------------------------------------------------------
    def restore(self, lq: torch.Tensor, **options) -> torch.Tensor:
        raise NotImplementedError

    def nfe(self, **options) -> int:
        """Network evaluations per restored image with these options."""
        return 1

    #: batch keys besides "lq" that restore() takes (e.g. DiffIR stage 1: "gt"; inpainting: "mask")
    restore_inputs: tuple[str, ...] = ()

    def restore_extras(self, batch: dict, device: torch.device | None = None) -> dict:
        return select_inputs(batch, self.restore_inputs, device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lq, gt = self.to_memory_format(batch["lq"]), batch["gt"]
        # seeded by the image index: every validation (and every DDP layout) sees the same sampler noise
        generator = torch.Generator(device=lq.device).manual_seed(int(batch["index"][0]))
        restored = self.restore(lq, generator=generator, **self.restore_extras(batch), **self.val_options)
        restored = restored.float().clamp(0, 1)
        self.val_metrics.update(restored, gt.float(), batch["index"])
        if self.trainer.is_global_zero and len(self._panels) < self.val_panels:
            from core.evaluation import tensor_to_images

            for name, lq_i, out_i, gt_i in zip(batch["name"], tensor_to_images(batch["lq"]),
                                               tensor_to_images(restored), tensor_to_images(gt)):
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

    # -- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["config"] = self.run_config
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
