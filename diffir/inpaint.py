"""DiffIR inpainting with its official recipe (DiffIR-inpainting, built on LaMa's trainer: saicinpainting/training/
trainers/defaultS1.py, defaultS2.py, configs/training/DiffIRS{1,2}-{celeba,place2}.yaml).

Every iteration (one counted step, as the suite's S2-GAN stage):

1. Generator step, the discriminator frozen: the network restores the masked image (stage 1 with the ground
   truth's IPR, stage 2 through its IPR diffusion from the frozen stage-1 CPEN's IPR, as ``DiffIRStage2Module``)
   and minimises, on its raw output (not the composite):
   masked L1 (known pixels x10, missing x0) + non-saturating adversarial x10 + discriminator feature matching
   x100 + high-receptive-field perceptual x30 (+ for stage 2 the IPR loss: L1 between IPRs, KL only logged).
2. Discriminator step: non-saturating loss on the real image and a fake one, the fake's known pixels counted as
   real (``mask_as_fake_target``), plus 0.001 x R1 on the real image.

Both steps clip the gradient norm of their network to ``gradient_clip_val`` (official trainer
gradient_clip_val 1, which Lightning 1.x applied to each optimizer's step). Adam 2e-4 (generator) and 1e-4
(discriminator) with torch's default betas, no schedule, no EMA. The official Lightning 1.x loop runs the
generator again for the discriminator's optimizer, after the generator has stepped: ``regenerate_fake=True``
(default) does the same without gradients; False reuses the generator step's output (one forward less).

The perceptual encoder (``diffir.hrf_perceptual``) is a fixed part of the loss: it is read from disk when training
starts (``model.hrf_perceptual.weights_path``) and kept out of the checkpoints, so evaluating or restoring a
checkpoint needs no encoder file. The discriminator is in the checkpoints (resume is exact); restoration never
uses it. Lightning manual optimization: ``trainer.gradient_clip_val`` must stay null (the model clips), and many
GPUs need ``trainer.strategy=ddp_find_unused_parameters_true``.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigError
from core.training import NonFiniteLossError
from diffir.gan import generator_discriminator_optimizers
from diffir.inpaint_losses import NonSaturatingR1, feature_matching_loss
from diffir.stage1 import DiffIRStage1Module
from diffir.stage2 import DiffIRStage2Module


class LamaRecipe:
    """What both stages share (a mixin placed before the stage's module class).

    discriminator: an ``nn.Module`` returning (logits, features) (``diffir.lama_discriminator``); optimizer_d /
    scheduler_d: Hydra partials for it; adversarial: ``NonSaturatingR1`` arguments; feature_matching: {weight};
    hrf_perceptual: ``diffir.hrf_perceptual.HRFPerceptualLoss`` arguments (None or weight 0: no such loss, no
    encoder file); regenerate_fake, gradient_clip_val: see the module docstring. The rest goes to the stage.
    """

    def __init__(self, net: nn.Module, discriminator: nn.Module | None = None, optimizer_d=None,
                 scheduler_d=None, adversarial: dict | None = None, feature_matching: dict | None = None,
                 hrf_perceptual: dict | None = None, regenerate_fake: bool = True,
                 gradient_clip_val: float | None = 1.0, **kwargs) -> None:
        super().__init__(net, **kwargs)
        self.automatic_optimization = False
        if not self.inpainting:
            raise ConfigError("the LaMa inpainting recipe trains a 4-channel inpainting network: set "
                              "model.net.inp_channels=4 (masked image + mask)")
        if not isinstance(discriminator, nn.Module):
            raise ConfigError("model.discriminator must be a network config with a _target_ "
                              "(diffir.lama_discriminator.NLayerDiscriminator)")
        if optimizer_d is None:
            raise ConfigError("model.optimizer_d is missing: the discriminator needs its own optimizer (official: "
                              "Adam lr 1e-4)")
        self.discriminator = discriminator
        self.optimizer_d_factory, self.scheduler_d_factory = optimizer_d, scheduler_d
        self.adversarial = NonSaturatingR1(**dict(adversarial or {}))
        self.fm_weight = float(dict(feature_matching or {}).get("weight", 100.0))
        self.hrf_cfg = dict(hrf_perceptual) if hrf_perceptual and hrf_perceptual.get("weight", 1) else None
        self.regenerate_fake = bool(regenerate_fake)
        self.gradient_clip_val = float(gradient_clip_val) if gradient_clip_val else None
        # a plain dict, not a submodule: the encoder stays out of state_dict() and so out of every checkpoint
        self._loss_nets: dict[str, nn.Module] = {}

    # -- the perceptual encoder, read when training starts -------------------------------------------------------
    def build_hrf(self) -> None:
        if self.hrf_cfg is not None and "hrf" not in self._loss_nets:
            from diffir.hrf_perceptual import HRFPerceptualLoss

            self._loss_nets["hrf"] = HRFPerceptualLoss(**self.hrf_cfg)

    def hrf_loss(self, restored: torch.Tensor, gt: torch.Tensor) -> torch.Tensor | None:
        self.build_hrf()
        loss = self._loss_nets.get("hrf")
        if loss is None:
            return None
        if loss.mean.device != restored.device:
            loss.to(restored.device)
        return loss(restored, gt)

    def setup(self, stage: str) -> None:
        strategy = ((self.run_config or {}).get("trainer") or {}).get("strategy")
        if stage == "fit" and str(strategy) in ("ddp", "ddp_spawn", "ddp_fork"):
            raise ConfigError(f"trainer.strategy={strategy}: the generator and discriminator backward passes each "
                              "leave the other network without gradients, which plain DDP refuses; use "
                              "trainer.strategy=ddp_find_unused_parameters_true")
        super().setup(stage)  # stage 2: a fresh run loads its stage-1 weights here
        if stage == "fit":
            self.build_hrf()  # a missing encoder file stops the run before the first step

    # -- optimizers ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return generator_discriminator_optimizers(self)

    # -- training ------------------------------------------------------------------------------------------------
    def generate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """(restored image, extra generator loss or None, values to log): the stage's training forward."""
        raise NotImplementedError

    def _stop_if_nonfinite(self, loss: torch.Tensor, which: str, setting: str) -> None:
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise NonFiniteLossError(
                f"{which} loss became {loss.item()} at step {self.global_step}: stopped before the {which} "
                f"optimizer step, so the checkpoints on disk are the last good ones. Lower the learning rate "
                f"({setting}=...) or use trainer.precision=32, then resume with ckpt_path=<run>/checkpoints/last.ckpt")

    def _clip(self, optimizer) -> None:
        if self.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        gt, known = batch["gt"], batch["mask"]
        missing, n = 1.0 - known, gt.shape[0]

        # generator step (the discriminator frozen; the real image's features are constants)
        self.discriminator.requires_grad_(False)
        restored, extra, logs = self.generate(batch)
        l_pix = self.pixel_loss(restored, gt, known)
        with torch.no_grad():
            _, real_features = self.discriminator(gt)
        fake_pred, fake_features = self.discriminator(restored)
        l_adv = self.adversarial.generator_loss(fake_pred)
        l_fm = self.fm_weight * feature_matching_loss(fake_features, real_features)
        loss_g = l_pix + l_adv + l_fm
        logs.update(l_pix=l_pix.detach(), l_adv=l_adv.detach(), l_fm=l_fm.detach())
        l_hrf = self.hrf_loss(restored, gt)
        if l_hrf is not None:
            loss_g = loss_g + l_hrf
            logs["l_hrf"] = l_hrf.detach()
        if extra is not None:
            loss_g = loss_g + extra
        self._stop_if_nonfinite(loss_g, "generator", "model.optimizer.lr")
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        self._clip(opt_g)
        # not counted as a Lightning training step: the discriminator's is, so global_step = iterations
        self.trainer.strategy.optimizer_step(opt_g.optimizer, closure=_no_closure)

        # discriminator step
        if self.regenerate_fake:
            with torch.no_grad():
                fake = self.generate(batch)[0]
        else:
            fake = restored.detach()
        self.discriminator.requires_grad_(True)
        real = gt.detach().requires_grad_(True)  # for R1
        real_pred, _ = self.discriminator(real)
        fake_pred, _ = self.discriminator(fake)
        loss_d, d_logs = self.adversarial.discriminator_loss(real_pred, fake_pred, real, missing)
        self._stop_if_nonfinite(loss_d, "discriminator", "model.optimizer_d.lr")
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        self._clip(opt_d)
        opt_d.step()  # the counted step: global_step becomes this iteration
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.step()

        logs.update(d_logs, l_d=loss_d.detach(), out_d_real=real_pred.detach().float().mean(),
                    out_d_fake=fake_pred.detach().float().mean())
        self.log("train/loss", loss_g.detach(), prog_bar=True, batch_size=n)
        for key, value in logs.items():
            self.log(f"train/{key}", value, batch_size=n)
        return loss_g.detach()


class DiffIRInpaintS1Module(LamaRecipe, DiffIRStage1Module):
    """Stage 1 (official defaultS1): CPEN_S1 and the DIRformer against the LaMa losses."""

    training_only = ("discriminator",)

    def generate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        inp = self.to_memory_format(self.network_input(batch["lq"], batch["mask"]))
        restored, _ = self.net.forward_train(inp, self.to_memory_format(batch["gt"]))
        return restored, None, {}


class DiffIRInpaintS2Module(LamaRecipe, DiffIRStage2Module):
    """Stage 2 (official defaultS2): joint from the first step, the LaMa losses plus the IPR loss against the
    frozen stage-1 CPEN (``model.stage1_ckpt`` = a stage-1 run of this recipe or of the L1 one)."""

    training_only = ("teacher", "discriminator")

    def __init__(self, net: nn.Module, **kwargs) -> None:
        super().__init__(net, encoder_iter=0, **kwargs)  # the official inpainting stage 2 has no encoder phase

    def generate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        inp = self.to_memory_format(self.network_input(batch["lq"], batch["mask"]))
        ipr_s1 = self.teacher_ipr(inp, batch["gt"])
        restored, ipr, _ = self.net.forward_train(inp, ipr_s1)
        l_ipr, logs = self.ipr_loss(ipr, ipr_s1)
        return restored, l_ipr, logs


def _no_closure() -> None:
    return None
