"""DiffIR's SRGAN fine-tuning stage (S2-GAN; official ``DiffIRGANS2Model``, DiffIR-SRGAN/options/
train_DiffIRS2_GAN_x4.yml): a trained stage-2 network fine-tuned with pixel, perceptual and adversarial losses.

Each iteration (1-based, as BasicSR counts), as the official ``optimize_parameters``:

1. The frozen stage-1 CPEN (``teacher``) gives the IPR of (lq, gt); the stage-2 network runs its training chain
   from it (the stage-1 IPR diffused to t = T-1, then denoised in T steps from CPEN_S2, all in the graph) and
   the DIRformer restores the image, exactly as in stage 2's joint phase.
2. Generator step, when ``iteration % net_d_iters == 0 and iteration > net_d_init_iters`` (every iteration
   with the official 1 / 0), with the discriminator's parameters frozen: ``L1 + l_abs + perceptual (+ style)
   + GAN(D(output), real)``. The IPR loss back-propagates ``l_abs`` and logs ``l_kd`` (``model.kd``), as the
   official code, which computes both from the last IPR of the chain.
3. Discriminator step, every iteration: ``GAN(D(real), real) + GAN(D(output.detach()), fake)``, unweighted.
   ``real`` is the official ``gan_gt``: with ``gan_gt_usm`` false (default; every official file) the batch's
   ``gt_plain`` when it has one (the unsharpened GT of the Real-ESRGAN recipes, ``diffir.realsr``), else its
   ``gt``; with ``gan_gt_usm`` true always its ``gt``. The pixel and perceptual losses and the stage-1 teacher use
   the batch's ``gt`` (the official ``l1_gt`` / ``percep_gt``: the USM-sharpened GT when the recipe sharpens).
4. Both learning-rate schedulers step; the EMA of the generator follows (``RestorationModule``).

Lightning, manual optimization. Lightning counts *every* ``LightningOptimizer.step()`` as a training step (with
two optimizers ``global_step`` would advance by 2 per iteration, and ``trainer.max_steps``, checkpoint names,
the EMA and ``ProgressivePatches`` would see twice the iterations). Here the discriminator's step, which runs
at every iteration, is the counted one, and the generator's goes through the same strategy / precision path
(gradient unscaling under 16-mixed) without the counter, so ``global_step`` = completed iterations, as in the
rest of the suite. Automatic gradient clipping and gradient accumulation do not exist in manual optimization:
Lightning rejects ``trainer.gradient_clip_val`` / ``trainer.accumulate_grad_batches`` before training. A non-finite
generator or discriminator loss stops the run before that optimizer's step (``NonFiniteLossError``).
The schedulers step after the optimizers (Lightning's ``interval: step`` convention, used by every suite recipe;
BasicSR steps them just before, so a milestone takes effect one iteration later here). ``training_step``
returns the generator loss (the discriminator's in ``net_d_init_iters`` warm-up iterations, where the generator
does not step). Many GPUs: each backward pass leaves the other network's parameters without gradients, so DDP
needs ``trainer.strategy=ddp_find_unused_parameters_true`` (plain ``ddp`` is rejected with that message).

Initialisation (``setup`` of a fresh run, ``diffir.stage2_init.load_stage2``): ``model.stage2_ckpt`` = a suite
stage-2 checkpoint (EMA weights, as the official ``param_key_g: params_ema``) or an official BasicSR stage-2 /
S2-GAN file; the teacher comes from the suite checkpoint, or from ``model.stage1_ckpt`` (required with official
files, which do not hold it: the official ``pretrain_network_S1``). The discriminator starts from scratch. Its
weights and both optimizers' and schedulers' states are in this module's checkpoints, so ``ckpt_path=`` resumes
exactly.

The VGG19 of the perceptual loss is a fixed part of the loss: it is read from disk when training starts
(``model.perceptual.weights_path`` or torchvision's cache) and is kept out of the checkpoints, so evaluating
or restoring with a checkpoint never needs the VGG file.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.errors import ConfigError
from core.training import NonFiniteLossError
from diffir.gan import GANLoss, generator_discriminator_optimizers
from diffir.stage2 import DiffIRStage2Module
from diffir.stage2_init import load_stage2


class DiffIRStage2GANModule(DiffIRStage2Module):
    """net: ``diffir.networks.DiffIRS2``; discriminator: an ``nn.Module`` (``diffir.discriminators``);
    optimizer / optimizer_d, scheduler / scheduler_d: Hydra partials for the generator (every trainable
    parameter of ``net``) and the discriminator; perceptual: ``core.perceptual.PerceptualLoss`` arguments (None:
    no perceptual loss); gan: ``diffir.gan.GANLoss`` arguments; net_d_iters / net_d_init_iters: the generator
    steps at iterations ``i % net_d_iters == 0 and i > net_d_init_iters``; stage2_ckpt: the stage-2 checkpoint a
    fresh run fine-tunes; stage2_match: keys of the data config that must equal the stage-2 run's (empty: no
    check); stage1_ckpt: the teacher's stage-1 checkpoint (needed with official stage-2 files only);
    gan_gt_usm: the discriminator's real images are the batch's ``gt`` (true) or its ``gt_plain`` when present
    (false, official DiffIR-RealSR ``gan_gt_usm: False``; batches without ``gt_plain`` use ``gt`` either way); kd,
    pixel_loss, stage1_match: as stage 2."""

    def __init__(
        self,
        net: nn.Module,
        discriminator: nn.Module,
        optimizer_d=None,
        scheduler_d=None,
        perceptual: dict | None = None,
        gan: dict | None = None,
        net_d_iters: int = 1,
        net_d_init_iters: int = 0,
        kd: dict | None = None,
        pixel_loss: dict | None = None,
        stage2_ckpt: str | None = None,
        stage1_ckpt: str | None = None,
        stage1_match: Sequence[str] = ("_target_", "task", "scale"),
        stage2_match: Sequence[str] = ("_target_", "task", "scale"),
        gan_gt_usm: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(net, encoder_iter=0, kd=kd, pixel_loss=pixel_loss, stage1_ckpt=stage1_ckpt,
                         stage1_match=stage1_match, **kwargs)
        self.automatic_optimization = False
        if not isinstance(discriminator, nn.Module):
            raise ConfigError(
                "model.discriminator must be a network config with a _target_ (e.g. "
                "diffir.discriminators.UNetDiscriminatorSN)"
            )
        if optimizer_d is None:
            raise ConfigError(
                "model.optimizer_d is missing: the discriminator needs its own optimizer (official: "
                "Adam lr 1e-4, betas [0.9, 0.99])"
            )
        if int(net_d_iters) < 1 or int(net_d_init_iters) < 0:
            raise ConfigError(
                f"model.net_d_iters={net_d_iters} must be >= 1 and model.net_d_init_iters={net_d_init_iters} >= 0"
            )
        self.discriminator = discriminator
        self.optimizer_d_factory, self.scheduler_d_factory = optimizer_d, scheduler_d
        self.gan_loss = GANLoss(**dict(gan or {}))
        self.net_d_iters, self.net_d_init_iters = int(net_d_iters), int(net_d_init_iters)
        self.stage2_ckpt, self.stage2_match = stage2_ckpt, tuple(stage2_match)
        self.gan_gt_usm = bool(gan_gt_usm)
        self.perceptual_cfg = dict(perceptual) if perceptual else None
        # a plain dict, not a submodule: the VGG stays out of state_dict() and so out of every checkpoint
        self._loss_nets: dict[str, nn.Module] = {}

    # -- the perceptual loss (built when training starts) -------------------------------------------------------
    def build_perceptual(self) -> None:
        """Load the VGG19 of the perceptual loss (ConfigError naming the file when it is missing)."""
        if self.perceptual_cfg is not None and "perceptual" not in self._loss_nets:
            from core.perceptual import PerceptualLoss

            self._loss_nets["perceptual"] = PerceptualLoss(**self.perceptual_cfg)

    def perceptual_loss(self, restored: torch.Tensor, gt: torch.Tensor):
        self.build_perceptual()
        loss = self._loss_nets.get("perceptual")
        if loss is None:
            return None, None
        if loss.vgg.mean.device != restored.device:
            loss.to(restored.device)
        return loss(restored, gt)

    def setup(self, stage: str) -> None:
        strategy = ((self.run_config or {}).get("trainer") or {}).get("strategy")
        if stage == "fit" and str(strategy) in ("ddp", "ddp_spawn", "ddp_fork"):
            raise ConfigError(
                f"trainer.strategy={strategy}: the DiffIR S2-GAN stage's generator and discriminator backward "
                "passes each leave the other network's parameters without gradients, which plain DDP refuses; "
                "use trainer.strategy=ddp_find_unused_parameters_true"
            )
        super().setup(stage)  # a fresh run loads its start weights here (load_initial_weights)
        if stage == "fit":
            self.build_perceptual()

    def load_initial_weights(self, data_cfg: dict | None = None) -> None:
        """Generator and teacher <- ``stage2_ckpt`` (and ``stage1_ckpt`` when given)."""
        if not self.stage2_ckpt:
            raise ConfigError(
                "The DiffIR S2-GAN stage starts from a trained stage-2 network: add model.stage2_ckpt=<stage-2 "
                "run>/checkpoints/last.ckpt (a run of the matching experiment=diffir_s2_...), or "
                "ckpt_path=<S2-GAN run>/checkpoints/last.ckpt to resume"
            )
        load_stage2(self, self.stage2_ckpt, data_cfg, self.stage1_ckpt)

    # -- optimizers --------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return generator_discriminator_optimizers(self)

    def generator_steps(self, iteration: int) -> bool:
        """Whether the generator is updated at this (1-based) iteration (the official condition)."""
        return iteration % self.net_d_iters == 0 and iteration > self.net_d_init_iters

    def _stop_if_nonfinite(self, loss: torch.Tensor, which: str, setting: str) -> None:
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise NonFiniteLossError(
                f"{which} loss became {loss.item()} at step {self.global_step}: stopped before the {which} "
                "optimizer step, so the checkpoints on disk are the last good ones. Lower the learning rate "
                f"({setting}=...) or use trainer.precision=32, then resume with "
                "ckpt_path=<run>/checkpoints/last.ckpt"
            )

    # -- training ----------------------------------------------------------------------------------------------
    def discriminator_target(self, batch: dict) -> torch.Tensor:
        """The discriminator's real images (official ``gan_gt``): ``gt``, or ``gt_plain`` when present and
        ``gan_gt_usm`` is false."""
        gt = batch["gt"]
        return gt if self.gan_gt_usm else batch.get("gt_plain", gt).to(gt.dtype)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        iteration = self.global_step + 1
        lq, gt, mask = batch["lq"], batch["gt"], batch.get("mask")
        n = gt.shape[0]
        inp = self.to_memory_format(self.network_input(lq, mask))
        ipr_s1 = self.teacher_ipr(inp, gt)
        step_g = self.generator_steps(iteration)
        logs: dict[str, torch.Tensor] = {}
        loss_g = None

        self.discriminator.requires_grad_(False)
        with torch.set_grad_enabled(step_g):
            restored, ipr, _ = self.net.forward_train(inp, ipr_s1)
        if step_g:
            l_pix = self.pixel_loss(restored, gt, mask if self.inpainting else None)
            l_ipr, ipr_logs = self.ipr_loss(ipr, ipr_s1)
            loss_g = l_pix + l_ipr
            logs.update(l_pix=l_pix.detach(), **ipr_logs)
            l_percep, l_style = self.perceptual_loss(restored, gt)
            if l_percep is not None:
                loss_g = loss_g + l_percep
                logs["l_percep"] = l_percep.detach()
            if l_style is not None:
                loss_g = loss_g + l_style
                logs["l_style"] = l_style.detach()
            l_g_gan = self.gan_loss(self.discriminator(restored), True, is_disc=False)
            loss_g = loss_g + l_g_gan
            logs["l_g_gan"] = l_g_gan.detach()
            self._stop_if_nonfinite(loss_g, "generator", "model.optimizer.lr")
            opt_g.zero_grad()
            self.manual_backward(loss_g)
            # not counted as a Lightning training step (see the module docstring): global_step = iterations
            self.trainer.strategy.optimizer_step(opt_g.optimizer, closure=_no_closure)

        self.discriminator.requires_grad_(True)
        real_pred = self.discriminator(self.discriminator_target(batch))
        l_d_real = self.gan_loss(real_pred, True, is_disc=True)
        fake_pred = self.discriminator(restored.detach())
        l_d_fake = self.gan_loss(fake_pred, False, is_disc=True)
        self._stop_if_nonfinite(l_d_real + l_d_fake, "discriminator", "model.optimizer_d.lr")
        opt_d.zero_grad()
        self.manual_backward(l_d_real + l_d_fake)  # = the official two backward calls, summed gradients
        opt_d.step()  # the counted step: global_step becomes `iteration`
        for config in self.trainer.lr_scheduler_configs:  # BasicSR steps every scheduler at every iteration
            config.scheduler.step()

        logs.update(
            l_d_real=l_d_real.detach(),
            l_d_fake=l_d_fake.detach(),
            out_d_real=real_pred.detach().float().mean(),
            out_d_fake=fake_pred.detach().float().mean(),
        )
        if loss_g is not None:
            self.log("train/loss", loss_g.detach(), prog_bar=True, batch_size=n)
        for key, value in logs.items():
            self.log(f"train/{key}", value, batch_size=n)
        # LossTrend and the progress bar follow the generator loss (the discriminator's during the official
        # net_d_init_iters warm-up, when the generator does not step)
        return (l_d_real + l_d_fake).detach() if loss_g is None else loss_g.detach()


def _no_closure() -> None:
    return None
