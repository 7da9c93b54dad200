"""DiffPIR as a `core.restorer.Restorer`: a prior network + a task + sampler settings fixed at construction.

Evaluation simulates the measurement from the ground truth (`measure`), as the paper and the official scripts do:
the same seed gives the same measurement noise, kernels, masks and sampler noise. `diffpir_model` builds the
restorer's source from a prior file for evaluate.py / restore.py (`model=diffpir prior_ckpt=... task=...`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError
from core.nn import count_parameters
from core.restorer import Restorer
from data.resize import modcrop
from diffpir.sampler import TASK_DEFAULTS, check_settings, diffpir_sample
from diffpir.schedule import DDPMSchedule
from diffpir.tasks import (
    KERNEL_SIZE,
    MASK_KINDS,
    check_mask_kind,
    generated_mask,
    make_operator,
    parse_task,
    simulate,
    task_kernel,
)

log = logging.getLogger(__name__)

# diffpir_sample's settings a user may set (evaluate.py / restore.py spell sigma_n as noise_sigma).
SETTINGS = ("sigma_n", "lam", "zeta", "nfe", "skip", "t_start", "eta", "return_last_prediction")


class DiffPIRRestorer(Restorer):
    """prior: ε-network `net(x_t, t)` on [-1, 1] images; task: a name of diffpir.tasks; mask: where inpainting
    masks come from when the caller gives none (batch | box | pixels | strokes); kernel: a fixed blur kernel
    for every image (else the task's official kernel per image index); settings: diffpir_sample keywords,
    defaulting to the official ones of the task (diffpir.sampler.TASK_DEFAULTS)."""

    conditions = ("mask", "kernel")

    def __init__(self, prior: nn.Module, task: str, schedule: DDPMSchedule | None = None, mask: str = "batch",
                 kernel: torch.Tensor | None = None, kernel_size: int = KERNEL_SIZE, sr_mode: str = "fft",
                 prior_name: str = "prior", progress: bool = False, **settings: Any) -> None:
        self.prior, self.progress = prior, progress  # diffpir_sample evaluates it in eval mode
        self.task = parse_task(task)
        self.schedule = schedule if schedule is not None else DDPMSchedule()
        self.mask_kind = check_mask_kind(mask)
        self.kernel, self.kernel_size, self.sr_mode = kernel, int(kernel_size), sr_mode
        self.prior_name = prior_name
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"DiffPIR has no setting {', '.join(unknown)}; settings: {', '.join(SETTINGS)}")
        s = {**TASK_DEFAULTS[self.task.family], **{k: v for k, v in settings.items() if v is not None}}
        self.sampler_settings = s
        check_settings(float(s["sigma_n"]), float(s["lam"]), float(s["zeta"]), float(s.get("eta", 0.0)))
        self.schedule.timesteps(int(s["nfe"]), s["skip"], s["t_start"])

    # -- measurements -----------------------------------------------------------------------------------------
    def measure(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch with `lq` replaced by the simulated measurement of its `gt` (and the mask / kernel used)."""
        gt = batch["gt"]
        if self.task.is_sr:
            gt = modcrop(gt, self.task.scale)
        indices = [int(i) for i in batch["index"]]
        out = {**batch, "gt": gt}
        if self.task.family == "inpainting":
            if self.mask_kind == "batch" and "mask" in batch:
                mask = batch["mask"]
            else:
                kind = "box" if self.mask_kind == "batch" else self.mask_kind
                mask = torch.stack([generated_mask(kind, gt.shape[-2], gt.shape[-1], i) for i in indices])
            out["mask"] = mask.to(gt.device, gt.dtype)
        elif not self.task.is_sr:
            kernels = ([self.kernel] * len(indices) if self.kernel is not None else
                       [self._official_kernel(i) for i in indices])
            out["kernel"] = torch.stack(kernels).to(gt.device)
        operators = self._operators(out.get("mask"), out.get("kernel"), gt.shape[0])
        device = generator.device if generator is not None else gt.device
        ys = [simulate(self.task, op, gt[s].to(device), float(self.sampler_settings["sigma_n"]), generator)
              for op, s in operators]
        out["lq"] = torch.cat(ys).to(gt.device)
        return out

    def _official_kernel(self, index: int) -> torch.Tensor:
        return task_kernel(self.task, index, self.kernel_size)

    def _operators(self, mask: torch.Tensor | None, kernel: torch.Tensor | None, batch: int):
        """[(operator, slice of the batch)]: one operator for the batch, or one per image when the kernels of
        the images differ (the FFT operator holds one kernel)."""
        if kernel is None or kernel.ndim == 2:
            return [(make_operator(self.task, kernel=kernel, mask=mask, sr_mode=self.sr_mode), slice(0, batch))]
        if kernel.shape[0] not in (1, batch):
            raise ConfigError(f"{kernel.shape[0]} kernels for a batch of {batch} images")
        if kernel.shape[0] == 1 or all(torch.equal(kernel[0], k) for k in kernel[1:]):
            return [(make_operator(self.task, kernel=kernel[0], sr_mode=self.sr_mode), slice(0, batch))]
        return [(make_operator(self.task, kernel=kernel[i], sr_mode=self.sr_mode), slice(i, i + 1))
                for i in range(batch)]

    # -- restoration ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, lq: torch.Tensor, *, generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
                kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Restore measurements `lq` (NCHW in [0, 1]; the low-resolution image for SR) of the task."""
        if self.task.family == "inpainting" and mask is None:
            if self.mask_kind == "batch":
                raise ConfigError("DiffPIR inpainting needs the mask of each measurement: pass mask=FILE "
                                  "(white = known pixel) or a generated mask=box|pixels|strokes")
            mask = generated_mask(self.mask_kind, lq.shape[-2], lq.shape[-1], 0)[None]
        if kernel is None and self.kernel is not None:
            kernel = self.kernel
        if kernel is None and self.task.family.startswith("deblur"):
            log.warning("DiffPIR %s without kernel=: using the official kernel of image 0 (pass kernel=FILE, a "
                        ".npy summing to 1 or an image, for the blur of your photos)", self.task.name)
            kernel = self._official_kernel(0)
        if mask is not None:
            mask = mask.to(lq.device)
        outputs = []
        for operator, part in self._operators(mask, kernel, lq.shape[0]):
            outputs.append(diffpir_sample(self.prior, operator, lq[part], self.schedule, generator=generator,
                                          progress=self.progress, **self.sampler_settings))
        return torch.cat(outputs)

    def nfe(self) -> int:
        s = self.sampler_settings
        return len(self.schedule.timesteps(int(s["nfe"]), s["skip"], s["t_start"]))

    def describe(self) -> str:
        params = count_parameters(self.prior) / 1e6
        s = self.sampler_settings
        return (f"DiffPIR {self.task.name} with {self.prior_name} ({params:.2f} M params): sigma_n {s['sigma_n']}, "
                f"lambda {s['lam']}, zeta {s['zeta']}, {self.nfe()} NFEs ({s['skip']})")

    def settings(self) -> dict:
        return {"name": "DiffPIR", "task": self.task.name, **self.sampler_settings, "steps": self.nfe()}

    def scoring(self) -> dict:
        return {"crop_border": self.task.scale} if self.task.is_sr else {}  # the official SR scores crop `scale`


def diffpir_model(prior_ckpt: str | None, task: str | None, preset: str | None = None, mask: str = "batch",
                  kernel: str | None = None, kernel_size: int = KERNEL_SIZE, sr_mode: str = "fft",
                  **settings: Any):
    """configs/model/diffpir.yaml (evaluate.py / restore.py model=diffpir prior_ckpt=... task=...): the prior of
    `prior_ckpt` (a suite prior checkpoint or a guided-diffusion file) in a DDPMPriorModule whose restorer runs
    `task` with these settings; its `run_config` is the prior's stored run config (the data it was trained on)."""
    from pathlib import Path

    from diffpir.kernels import IMAGE_SUFFIXES, load_kernel
    from diffpir.official import load_prior_with_config
    from diffpir.prior.module import DDPMPriorModule

    if not prior_ckpt:
        raise ConfigError("model=diffpir needs prior_ckpt=PATH: a prior trained with train.py "
                          "experiment=diffpir_prior_... or a guided-diffusion file such as ffhq_10m.pt")
    if not task:
        raise ConfigError("model=diffpir needs task=sr_x4|sr_x2|deblur_gaussian|deblur_motion|inpainting")
    if not Path(prior_ckpt).is_file():
        raise ConfigError(f"prior_ckpt={prior_ckpt}: no such file")
    mask = str(mask)
    if mask not in MASK_KINDS and not Path(mask).exists():
        raise ConfigError(f"mask={mask}: use batch (the data's masks), box, pixels, strokes, or a mask file / "
                          "folder of masks named like the inputs (restore.py; white = known pixel)")
    prior, config = load_prior_with_config(prior_ckpt, preset=preset)
    # a user's kernel: .npy must already sum to 1; an image (0..255) is divided by its sum
    kernel = load_kernel(kernel, normalize=Path(kernel).suffix.lower() in IMAGE_SUFFIXES) if kernel else None
    renamed = {"sigma_n" if k == "noise_sigma" else k: v for k, v in settings.items() if v is not None}
    task_cfg = {"task": str(task), "mask": mask if mask in MASK_KINDS else "batch",
                "kernel": kernel, "kernel_size": int(kernel_size), "sr_mode": sr_mode,
                "prior_name": Path(prior_ckpt).name, **renamed}
    DiffPIRRestorer(prior, **task_cfg)  # a bad task or setting fails here, before any image is loaded
    schedule = ((config or {}).get("model") or {}).get("schedule") or {}
    module = DDPMPriorModule(prior, schedule=schedule, ema={"decay": 0})
    module.val_task = task_cfg  # the task's official settings where not given (no validation defaults)
    module.run_config = config
    return module.eval()
