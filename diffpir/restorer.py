"""DiffPIR as a restoration model: a prior network + a task + sampler settings, with the same face as the other
methods' modules (`restore`, `nfe`, `describe`, `sampler_summary`, `restore_inputs`), so evaluate.py and
restore.py run it like any checkpoint.

Evaluation simulates the measurement from the ground truth (`prepare_batch`), as the paper and the official
scripts do: the same seed gives the same measurement noise, kernels, masks and sampler noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.errors import ConfigError
from core.training import select_inputs
from diffpir.sampler import TASK_DEFAULTS, check_settings, diffpir_sample
from diffpir.schedule import DDPMSchedule
from diffpir.tasks import (
    KERNEL_SIZE,
    check_mask_kind,
    generated_mask,
    make_operator,
    modcrop_batch,
    parse_task,
    simulate,
    task_kernel,
)

# diffpir_sample's settings a user may set (evaluate.py / restore.py spell sigma_n as noise_sigma).
SETTINGS = ("sigma_n", "lam", "zeta", "nfe", "skip", "t_start", "eta", "return_last_prediction")


class DiffPIRRestorer(nn.Module):
    """prior: ε-network `net(x_t, t)` on [-1, 1] images; task: a name of diffpir.tasks; mask: where inpainting
    masks come from when the caller gives none (batch | box | pixels | strokes); kernel: a fixed blur kernel
    for every image (else the task's official kernel per image index); settings: diffpir_sample keywords,
    defaulting to the official ones of the task (diffpir.sampler.TASK_DEFAULTS)."""

    restore_inputs = ("mask", "kernel")

    def __init__(self, prior: nn.Module, task: str, schedule: DDPMSchedule | None = None, mask: str = "batch",
                 kernel: torch.Tensor | None = None, kernel_size: int = KERNEL_SIZE, sr_mode: str = "fft",
                 prior_name: str = "prior", **settings: Any) -> None:
        super().__init__()
        self.prior = prior  # diffpir_sample evaluates it in eval mode
        self.task = parse_task(task)
        self.schedule = schedule if schedule is not None else DDPMSchedule()
        self.mask_kind = check_mask_kind(mask)
        self.kernel, self.kernel_size, self.sr_mode = kernel, int(kernel_size), sr_mode
        self.prior_name = prior_name
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"DiffPIR has no setting {', '.join(unknown)}; settings: {', '.join(SETTINGS)}")
        self.settings = {**TASK_DEFAULTS[self.task.family], **{k: v for k, v in settings.items() if v is not None}}
        s = self.settings
        check_settings(float(s["sigma_n"]), float(s["lam"]), float(s["zeta"]), float(s.get("eta", 0.0)))
        self.schedule.timesteps(int(self.settings["nfe"]), self.settings["skip"], self.settings["t_start"])

    def restore_extras(self, batch: dict, device: torch.device | None = None) -> dict:
        return select_inputs(batch, self.restore_inputs, device)

    # -- measurements -----------------------------------------------------------------------------------------
    def prepare_batch(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The batch with `lq` replaced by the simulated measurement of its `gt` (and the mask / kernel used)."""
        gt = batch["gt"]
        if self.task.is_sr:
            gt = modcrop_batch(gt, self.task.scale)
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
        ys = [simulate(self.task, op, gt[s].to(device), float(self.settings["sigma_n"]), generator)
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
    def restore(self, lq: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
                kernel: torch.Tensor | None = None, progress: bool = False, **options: Any) -> torch.Tensor:
        """Restore measurements `lq` (NCHW in [0, 1]; the low-resolution image for SR) of the task."""
        settings = self._settings(options)
        if self.task.family == "inpainting" and mask is None:
            if self.mask_kind == "batch":
                raise ConfigError("DiffPIR inpainting needs the mask of each measurement: pass mask=FILE "
                                  "(white = known pixel) or a generated mask=box|pixels|strokes")
            mask = generated_mask(self.mask_kind, lq.shape[-2], lq.shape[-1], 0)[None]
        if kernel is None and self.kernel is not None:
            kernel = self.kernel
        if kernel is None and self.task.family.startswith("deblur"):
            kernel = self._official_kernel(0)
        if mask is not None:
            mask = mask.to(lq.device)
        outputs = []
        for operator, part in self._operators(mask, kernel, lq.shape[0]):
            outputs.append(diffpir_sample(self.prior, operator, lq[part], self.schedule, generator=generator,
                                          progress=progress, **settings))
        return torch.cat(outputs)

    def _settings(self, options: dict) -> dict:
        options = {k: v for k, v in options.items() if v is not None}
        if options.pop("tile", None):
            raise ConfigError("DiffPIR restores whole images (its data step is global): drop tile=")
        options.pop("overlap", None)
        if "steps" in options:  # evaluate.py's generic name for the number of evaluations
            options["nfe"] = options.pop("steps")
        unknown = sorted(set(options) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"DiffPIR has no option {', '.join(unknown)}; options: {', '.join(SETTINGS)}")
        return {**self.settings, **options}

    def nfe(self, **options: Any) -> int:
        s = self._settings(options)
        return len(self.schedule.timesteps(int(s["nfe"]), s["skip"], s["t_start"]))

    def describe(self) -> str:
        params = sum(p.numel() for p in self.prior.parameters()) / 1e6
        s = self.settings
        return (f"DiffPIR {self.task.name} with {self.prior_name} ({params:.2f} M params): sigma_n {s['sigma_n']}, "
                f"lambda {s['lam']}, zeta {s['zeta']}, {self.nfe()} NFEs ({s['skip']})")

    def sampler_summary(self, **options: Any) -> dict:
        return {"name": "DiffPIR", "task": self.task.name, **self._settings(options), "steps": self.nfe(**options)}
