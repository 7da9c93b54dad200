"""DiffIR stage 2 (Xia et al., ICCV 2023): estimate the stage-1 IPR from the low-quality image alone.

CPEN_S2 and the IPR denoiser run the T-step IPR diffusion; the frozen stage-1 CPEN (``teacher``) gives the
target IPR from (lq, gt). Training follows the official ``DiffIRS2Model`` in two phases, with iterations
counted from 1 as BasicSR does (the k-th optimizer step is iteration k):

* iterations < ``encoder_iter``: only CPEN_S2 and the denoiser (the parameters named ``condition`` /
  ``denoise``) learn, from the IPR loss alone; the DIRformer is not run, so it cannot change.
* from ``encoder_iter`` on: CPEN_S2, the denoiser and the DIRformer (initialised from stage 1) learn jointly
  from the L1 reconstruction loss plus the IPR loss, with the whole T-step chain in the autograd graph.
  The official code switches to a second, fresh Adam here; the optimizer state is cleared to match.

``encoder_iter: 0`` trains jointly from the first step (the official SR and inpainting recipes). The IPR
loss back-propagates the L1 between IPRs and only logs the KL term by default (see ``diffir.losses``).
A fresh run starts from ``model.stage1_ckpt`` (loaded in ``setup``, see ``diffir.stage2_init``). The
teacher's weights are stored in this module's checkpoints, so a resumed run does not need the stage-1 file again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from core.errors import ConfigError
from core.nn import pad_by, pad_to_multiple
from diffir.cpen import CPENS1
from diffir.losses import IPRLoss
from diffir.module import DiffIRModule
from diffir.stage2_init import load_stage1

log = logging.getLogger(__name__)


class DiffIRStage2Module(DiffIRModule):
    """net: ``diffir.networks.DiffIRS2``; encoder_iter: first iteration of the joint phase; kd:
    ``diffir.losses.IPRLoss`` arguments (weight, temperature, backprop); pixel_loss: ``PixelLoss`` arguments;
    stage1_ckpt: the stage-1 checkpoint a fresh run starts from; stage1_match: keys of the data config that must
    equal the stage-1 run's (empty: no check)."""

    stage = 2
    training_only = ("teacher",)  # the frozen CPEN_S1: distillation only, never restoration

    def __init__(self, net: torch.nn.Module, encoder_iter: int = 0, kd: dict | None = None,
                 pixel_loss: dict | None = None, stage1_ckpt: str | None = None,
                 stage1_match: Sequence[str] = ("_target_", "task", "scale"), **kwargs) -> None:
        super().__init__(net, pixel_loss, **kwargs)
        self.encoder_iter = int(encoder_iter)
        self.ipr_loss = IPRLoss(**dict(kd or {}))
        self.stage1_ckpt, self.stage1_match = stage1_ckpt, tuple(stage1_match)
        cfg = net.config
        self.teacher = CPENS1(cfg["n_encoder_res"], lq_channels=cfg["inp_channels"],
                              gt_channels=cfg["out_channels"], scale=cfg["scale"] or 1)
        self.teacher.requires_grad_(False).eval()

    # -- the two phases --------------------------------------------------------------------------------------
    def in_encoder_phase(self, iteration: int) -> bool:
        return iteration < self.encoder_iter

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: it only provides targets
        return self

    def teacher_ipr(self, inp: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The stage-1 IPR of the (network input, ground truth) pair, padded as the networks pad."""
        scale = self.net.out_scale
        inp_pad, pad_h, pad_w = pad_to_multiple(inp, self.net.G.size_multiple)
        with torch.no_grad():
            return self.teacher(inp_pad, pad_by(gt, pad_h * scale, pad_w * scale))

    def ipr_chain(self, inp: torch.Tensor, ipr_s1: torch.Tensor) -> torch.Tensor:
        """The training chain alone (phase 1): diffuse the stage-1 IPR, denoise it in T steps from CPEN_S2."""
        inp_pad, _, _ = pad_to_multiple(inp, self.net.G.size_multiple)
        ipr, _ = self.net.diffusion.train_chain(ipr_s1, self.net.condition(inp_pad))
        return ipr

    def _dirformer_anchor(self) -> torch.Tensor:
        """0 * (sum of the DIRformer's weights). DDP needs every parameter in the graph of every step (or the
        slower find_unused_parameters): this adds zero to the loss and zero gradients, dropped after
        backward."""
        return sum(p.sum() for p in self.net.G.parameters()) * 0.0

    def on_after_backward(self) -> None:
        if self.in_encoder_phase(self.global_step + 1):
            for p in self.net.G.parameters():  # no gradient: the optimizer skips the DIRformer entirely
                p.grad = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.encoder_iter > 1 and self.global_step + 1 == self.encoder_iter:
            # the official phase 2 steps a new Adam (optimizer_g): no moments, bias correction from step 1
            optimizer = self.optimizers()
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.state.clear()
            log.info("DiffIR stage 2: joint training of CPEN_S2, denoiser and DIRformer from iteration %d",
                     self.encoder_iter)

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lq, gt, mask = batch["lq"], batch["gt"], batch.get("mask")
        inp = self.to_memory_format(self.network_input(lq, mask))
        ipr_s1 = self.teacher_ipr(inp, gt)
        if self.in_encoder_phase(self.global_step + 1):
            loss, logs = self.ipr_loss(self.ipr_chain(inp, ipr_s1), ipr_s1)
            return loss + self._dirformer_anchor(), {**logs, "phase": loss.new_tensor(1.0)}
        restored, ipr, _ = self.net.forward_train(inp, ipr_s1)
        l_pix = self.pixel_loss(restored, gt, mask if self.inpainting else None)
        l_ipr, logs = self.ipr_loss(ipr, ipr_s1)
        return l_pix + l_ipr, {"l_pix": l_pix.detach(), **logs, "phase": l_pix.new_tensor(2.0)}

    # -- initialisation of a fresh run -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """A fresh fit loads its start weights; a resumed one (``ckpt_path`` in train.py's ``run_config``, or a
        ``trainer.ckpt_path`` set before ``fit``: Lightning fills it in only after this hook) restores them all."""
        run = self.run_config or {}
        if stage == "fit" and not (run.get("ckpt_path") or self.trainer.ckpt_path):
            self.load_initial_weights(run.get("data"))
        super().setup(stage)

    def load_initial_weights(self, data_cfg: dict | None = None) -> None:
        """DIRformer and teacher <- ``stage1_ckpt`` (``data_cfg``: this run's data config, for the data check)."""
        if not self.stage1_ckpt:
            raise ConfigError("DiffIR stage 2 starts from a stage-1 checkpoint: add model.stage1_ckpt=<stage-1 "
                              "run>/checkpoints/last.ckpt (a run of the matching experiment=diffir_s1_...)")
        load_stage1(self, self.stage1_ckpt, data_cfg)


class TwoPhaseLR(LRScheduler):
    """The official stage-2 learning rate, set for every iteration (1-based, as BasicSR counts):

    * iteration < encoder_iter: ``encoder_lr * encoder_gamma ** (iteration // encoder_every)``
    * otherwise: ``joint_lr * joint_gamma ** ((iteration - encoder_iter) // joint_every)``

    ``encoder_lr`` / ``joint_lr`` default to the optimizer's lr. Official GoPro: encoder_iter 100000, 2e-4,
    0.1 every 60000 (lr_encoder, gamma_encoder, lr_decay_encoder); 2e-4, 0.5 every 80000 (lr_sr, gamma_sr,
    lr_decay_sr).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, encoder_iter: int, encoder_lr: float | None = None,
                 encoder_gamma: float = 0.1, encoder_every: int = 60000, joint_lr: float | None = None,
                 joint_gamma: float = 0.5, joint_every: int = 80000, last_epoch: int = -1) -> None:
        self.encoder_iter = int(encoder_iter)
        self.encoder_lr, self.encoder_gamma = encoder_lr, encoder_gamma
        self.encoder_every = int(encoder_every)
        self.joint_lr, self.joint_gamma, self.joint_every = joint_lr, joint_gamma, int(joint_every)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, iteration: int, base_lr: float) -> float:
        if iteration < self.encoder_iter:
            lr = base_lr if self.encoder_lr is None else self.encoder_lr
            return lr * self.encoder_gamma ** (iteration // self.encoder_every)
        lr = base_lr if self.joint_lr is None else self.joint_lr
        return lr * self.joint_gamma ** ((iteration - self.encoder_iter) // self.joint_every)

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch + 1, base) for base in self.base_lrs]
