"""DiffPIR tasks: a task name -> the degradation operator of one batch, and the simulated measurement.

A DiffPIR prior knows nothing about degradations; the task is chosen at run time:

  sr_x2, sr_x4 (any sr_xN)   y = MATLAB bicubic downscaling of x (the official measurement); the data step
                             uses the FFT closed form for the bicubic kernel (sr_mode="fft", official) or
                             iterative back-projection (sr_mode="backprojection")
  deblur_gaussian            61x61 Gaussian, std 3|2U + 1| drawn with seed 10 * image index (official)
  deblur_motion              61x61 random-trajectory motion kernel (intensity 0.5) seeded by the image index
  inpainting                 the batch's mask (the data module's) or a generated one: box (a missing
                             rectangle of half the height and width, the official 128x128 box at 256x256),
                             pixels (each pixel missing with p = 0.5, the official "random") or strokes

Blur is circular (the official measurement wraps around); AWGN of std σ_n (in [0, 1] units, 2σ_n in the
prior's [-1, 1]) is added to every measurement. A user's own kernel or mask replaces the generated one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import ConfigError, DataError
from data.masks import MASK_KINDS as GENERATED_MASKS
from data.masks import GeneratedMask
from data.resize import imresize
from diffpir.kernels import gaussian_kernel, motion_kernel, official_gaussian_sigma
from diffpir.operators import BackProjectionSR, Blur, Inpainting, Operator, SuperResolution

TASK_NAMES = ("sr_x2", "sr_x4", "deblur_gaussian", "deblur_motion", "inpainting")
MASK_KINDS = ("batch", *GENERATED_MASKS)
SR_MODES = ("fft", "backprojection")
KERNEL_SIZE = 61
MOTION_INTENSITY = 0.5


@dataclass(frozen=True)
class Task:
    """A parsed task name: `family` keys diffpir.sampler.TASK_DEFAULTS, `scale` > 1 only for SR."""

    name: str
    family: str
    scale: int = 1

    @property
    def is_sr(self) -> bool:
        return self.family == "sr"


def parse_task(name: str) -> Task:
    match = re.fullmatch(r"sr_x(\d+)", str(name))
    if match:
        scale = int(match.group(1))
        if scale < 2:
            raise ConfigError(f"task={name}: the super-resolution factor must be at least 2 (sr_x2, sr_x4)")
        return Task(str(name), "sr", scale)
    if name in ("deblur_gaussian", "deblur_motion", "inpainting"):
        return Task(str(name), str(name))
    raise ConfigError(f"task={name!r} is not a DiffPIR task: use one of {', '.join(TASK_NAMES)} (or sr_xN)")


def check_mask_kind(kind: str) -> str:
    if kind not in MASK_KINDS:
        raise ConfigError(f"mask={kind!r}: use one of {', '.join(MASK_KINDS)} (batch = the data's masks)")
    return kind


def generated_mask(kind: str, height: int, width: int, seed: int) -> torch.Tensor:
    """(1, H, W) float mask, 1 = known, drawn by data.masks with this seed."""
    return torch.from_numpy(np.ascontiguousarray(GeneratedMask(kind)(height, width, seed)))[None]


def task_kernel(task: Task, index: int, size: int = KERNEL_SIZE) -> torch.Tensor:
    """The official kernel of image number `index` for a deblurring task, on a size x size grid (61 official;
    smaller grids for small images, the Gaussian's std scaled with the grid)."""
    if task.family == "deblur_gaussian":
        sigma = official_gaussian_sigma(index)
        return gaussian_kernel(size, sigma if size == KERNEL_SIZE else sigma * size / KERNEL_SIZE)
    if task.family == "deblur_motion":
        return motion_kernel(size, MOTION_INTENSITY, seed=index)
    raise ValueError(f"task {task.name} has no blur kernel")


def make_operator(task: Task, *, kernel: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                  sr_mode: str = "fft") -> Operator:
    """The operator of `task` with this kernel (deblurring) or mask (inpainting: (N|1, 1|C, H, W), 1 = known)."""
    if task.is_sr:
        if sr_mode not in SR_MODES:
            raise ConfigError(f"sr_mode={sr_mode!r}: use fft (official closed form) or backprojection")
        return SuperResolution(task.scale) if sr_mode == "fft" else BackProjectionSR(task.scale)
    if task.family == "inpainting":
        if mask is None:
            raise DataError("inpainting needs a mask (1 = known pixel): pass mask=FILE, or mask=box|pixels|strokes")
        return Inpainting(mask)
    if kernel is None:
        raise DataError(f"task={task.name} needs a blur kernel")
    return Blur(kernel)


def simulate(task: Task, operator: Operator, gt: torch.Tensor, sigma_n: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The measurement y in [0, 1] (unclipped) of clean images gt (NCHW in [0, 1]), with AWGN of std σ_n."""
    if not task.is_sr:
        return operator.measure(gt, sigma_n, generator)
    height, width = gt.shape[-2:]
    if height % task.scale or width % task.scale:
        raise DataError(f"task={task.name}: a {height}x{width} image is not divisible by {task.scale}; "
                        "crop it to a multiple of the scale (evaluate.py mod-crops the ground truth)")
    y = imresize(gt.double(), scale=1.0 / task.scale).to(gt.dtype)
    if sigma_n > 0:
        y = y + sigma_n * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y
