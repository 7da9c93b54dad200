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
The teacher's weights are stored in this module's checkpoints, so a resumed run does not need the stage-1
file again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from core.errors import CheckpointError, ConfigError
from diffir.cpen import CPENS1, IPR_DIM
from diffir.dirformer import pad_by, pad_to_multiple
from diffir.losses import IPRLoss
from diffir.module import DiffIRModule

log = logging.getLogger(__name__)

# Architecture settings stage 2 must share with stage 1 (its DIRformer and teacher CPEN come from there).
SHARED_SETTINGS = ("inp_channels", "out_channels", "dim", "num_blocks", "num_refinement_blocks", "heads",
                   "bias", "LayerNorm_type", "scale", "n_encoder_res")


class DiffIRStage2Module(DiffIRModule):
    """net: ``diffir.networks.DiffIRS2``; encoder_iter: first iteration of the joint phase; kd:
    ``diffir.losses.IPRLoss`` arguments (weight, temperature, backprop); pixel_loss: ``PixelLoss`` arguments;
    stage1_match: keys of the data config that must equal the stage-1 run's (empty: no check)."""

    stage = 2

    def __init__(self, net: torch.nn.Module, encoder_iter: int = 0, kd: dict | None = None,
                 pixel_loss: dict | None = None, stage1_match: Sequence[str] = ("_target_", "task", "scale"),
                 **kwargs) -> None:
        super().__init__(net, pixel_loss, **kwargs)
        self.encoder_iter = int(encoder_iter)
        self.ipr_loss = IPRLoss(**dict(kd or {}))
        self.stage1_match = tuple(stage1_match)
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

    # -- restoration -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, lq: torch.Tensor, generator: torch.Generator | None = None,
                mask: torch.Tensor | None = None, model=None, **options) -> torch.Tensor:
        """The DiffIR restoration: IPR sampled from noise by the T-step chain, then the DIRformer.

        ``generator`` draws the initial IPR noise (without it, torch's global RNG does).
        """
        tile, overlap = self.check_options(options)
        net = model if model is not None else self.eval_net
        inp = self.network_input(lq, mask)
        noise = None
        if generator is not None:
            noise = torch.randn((inp.shape[0], IPR_DIM), generator=generator, device=generator.device)
            noise = noise.to(inp.device)
        ipr = net.estimate_ipr(inp, noise)
        return self.finish(self.run_restorer(net, inp, ipr, tile, overlap), lq, mask)

    def nfe(self, **options) -> int:
        """Denoiser evaluations per image (the DIRformer and CPEN_S2 run once)."""
        return int(self.net.config["timesteps"])

    def sampler_summary(self, **options) -> dict:
        return {"name": "IPR DDPM (posterior means from noise)", "steps": self.nfe(), "T": self.nfe()}

    # -- stage-1 initialisation ------------------------------------------------------------------------------
    def prepare_from_config(self, cfg) -> None:
        """Called by train.py: load ``cfg.stage1_ckpt`` (not needed when resuming with ``ckpt_path``)."""
        path = cfg.get("stage1_ckpt")
        if path:
            self.load_stage1(path, cfg.get("data"))
        elif not cfg.get("ckpt_path"):
            raise ConfigError("DiffIR stage 2 starts from a stage-1 checkpoint: add stage1_ckpt=<stage-1 "
                              "run>/checkpoints/last.ckpt (a run of the matching experiment=diffir_s1_...)")

    def load_stage1(self, path, data_cfg=None) -> None:
        """DIRformer <- stage-1 DIRformer and teacher <- CPEN_S1, EMA weights where the file has them.

        Accepts suite stage-1 checkpoints and official stage-1 files (BasicSR ``params_ema``). Raises
        ``ConfigError`` naming the setting when the architecture or the data differ from this run.
        """
        from core.checkpoint import load_checkpoint
        from core.ema import make_ema_copy
        from diffir.official import S1_SIGNATURE, infer_config, load_state_dict_any

        try:
            state = load_state_dict_any(path)
        except CheckpointError as err:
            raise CheckpointError(f"stage1_ckpt: {err}") from err
        if S1_SIGNATURE not in state:
            raise CheckpointError(f"stage1_ckpt={path} holds a DiffIR stage-2 network; stage 2 starts from "
                                  "the checkpoint of a stage-1 run (experiment=diffir_s1_...)")
        self._check_architecture(path, infer_config(state), state)
        stored = load_checkpoint(path).get("config")
        if data_cfg is not None and isinstance(stored, dict) and isinstance(stored.get("data"), dict):
            self._check_data(path, stored["data"], data_cfg)
        self.net.G.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("G.")})
        self.teacher.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("E.")})
        if self.use_ema:
            self.ema_net = make_ema_copy(self.net)
        log.info("DiffIR stage 2: DIRformer and teacher CPEN loaded from %s", path)

    def _check_architecture(self, path, found: dict, state: dict) -> None:
        mine = self.net.config
        for key in SHARED_SETTINGS:
            theirs, ours = _comparable(key, found.get(key)), _comparable(key, mine.get(key))
            if theirs != ours:
                raise ConfigError(f"stage1_ckpt={path} has {key}={theirs} but this run has model.net.{key}="
                                  f"{ours}: stage 2 must use the stage-1 architecture (set model.net.{key}="
                                  f"{theirs}, or start from the stage-1 run of this configuration)")
        for key, value in self.net.G.state_dict().items():
            other = state.get(f"G.{key}")
            if other is None or other.shape != value.shape:
                setting = "model.net.ffn_expansion_factor" if ".ffn." in key else "model.net"
                theirs = None if other is None else tuple(other.shape)
                raise ConfigError(f"stage1_ckpt={path}: its DIRformer does not fit this run's {setting} "
                                  f"(G.{key}: {theirs} vs {tuple(value.shape)})")

    def _check_data(self, path, theirs: dict, ours, setting: str = "stage1_ckpt") -> None:
        """The data settings named by model.<stage>_match must equal those of the run that wrote `path`."""
        match_key = setting.replace("_ckpt", "_match")
        for key in getattr(self, match_key):
            a, b = theirs.get(key), ours.get(key)
            if a != b:
                raise ConfigError(f"{setting}={path} was trained with data.{key}={a!r} but this run has "
                                  f"data.{key}={b!r}: start from the stage-{setting[5]} run of the same data "
                                  f"(or set model.{match_key}=[] to allow it)")


def _comparable(key: str, value):
    if key == "scale":
        return int(value or 1)
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return value


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
