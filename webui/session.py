"""One restoration as the page runs it, without Gradio: image + options in, restored image + numbers out.

The result equals, pixel for pixel, what `python restore.py ... input=<file named name> seed=S` writes for the
same model and options: the module prepared as restore.py prepares it (webui.catalogue), the restorer built by
the same `build_restorer`, the noise generator seeded the same way (by the seed and the file name), the same
autocast, and the same float -> uint8 conversion as `core.io.write_image`. Metrics use the evaluation's
`ImageMetrics`, so a PSNR here is a PSNR in evaluate.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import UserError
from core.io import image_seed


class Stopped(Exception):
    """The user pressed Stop: raised at the next network evaluation."""


@dataclass
class Options:
    """What the page lets a user choose; None = the model's own setting."""

    sampler: str | None = None
    order: int | None = None                     # the MR solvers' order (sampler mr_ode / mr_sde)
    steps: int | None = None
    sigma: float | None = None
    tile: int | None = None
    overlap: int | None = None
    seed: int = 0
    task: str | None = None                      # DiffPIR: sr_x2 | sr_x4 | deblur_gaussian | ... | inpainting
    conditions: dict = field(default_factory=dict)  # mask (1x1xHxW, 1 = known) / kernel (h x w) for DiffPIR

    def restorer_options(self) -> dict:
        return {"sampler": self.sampler, "order": self.order, "steps": self.steps, "sigma": self.sigma,
                "tile": self.tile, "overlap": self.overlap}


@dataclass
class Result:
    image: np.ndarray      # uint8 HxWx3: the pixels of the PNG restore.py writes
    nfe: int
    seconds: float
    description: str       # Restorer.describe()
    scores: dict = field(default_factory=dict)  # psnr, ssim (and psnr_input, ssim_input) when a GT was given
    warnings: list[str] = field(default_factory=list)
    measured: np.ndarray | None = None  # uint8: the input as the model takes it (inpainting: unknown pixels 0)


def restore_image(module, image: np.ndarray, name: str, options: Options, *, device: torch.device,
                  precision: str = "32", gt: np.ndarray | None = None, convention: dict | None = None,
                  stop: threading.Event | None = None, progress: bool = True) -> Result:
    """Restore `image` (uint8 HxWx3, from the file called `name`) with `module` (on `device`). With `gt` the result
    is scored (PSNR/SSIM under `convention`: y_channel, crop_border). `stop`, once set, ends the run at the next
    network evaluation with Stopped. progress: the samplers' tqdm bars, which the page's progress bar follows."""
    from core.io import to_tensor, to_uint8
    from core.restorer import build_restorer

    restorer = build_restorer(module, options.restorer_options(), progress=progress)
    lq = to_tensor(image)[None].to(device)
    generator = torch.Generator(device=device).manual_seed(image_seed(options.seed, name))
    conditions = {k: v.to(device) for k, v in options.conditions.items() if k in restorer.conditions}
    start = time.perf_counter()
    with _stoppable(module, stop), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        restored = restorer.restore(lq, generator=generator, **conditions).float()
    seconds = time.perf_counter() - start
    # the measurement y = m ⊙ x of inpainting, as evaluate.py's DiffPIR measure() makes it: scored and shown as
    # the input, so "input -> restored" compares what the model was given with what it made
    measured = lq * conditions["mask"] if "mask" in conditions else lq
    result = Result(to_uint8(restored[0]), restorer.nfe(), seconds, restorer.describe(),
                    measured=to_uint8(measured[0]))
    if gt is not None:
        try:  # a ground truth of the wrong size loses the scores, not the restoration
            result.scores = _scores(restored, measured, gt, {**(convention or {}), **restorer.scoring()})
        except UserError as err:
            result.warnings.append(str(err))
    return result


def _scores(restored: torch.Tensor, lq: torch.Tensor, gt: np.ndarray, convention: dict) -> dict:
    from core.evaluation import ImageMetrics
    from core.io import to_tensor

    target = to_tensor(gt)[None].to(restored.device)
    if target.shape != restored.shape:
        raise UserError(f"the ground truth of this image is {target.shape[-1]}x{target.shape[-2]} but the result is "
                        f"{restored.shape[-1]}x{restored.shape[-2]}: no PSNR/SSIM")
    metrics = ImageMetrics(y_channel=bool(convention.get("y_channel", False)),
                           crop_border=int(convention.get("crop_border", 0)))
    metrics.update(restored, target, torch.tensor([0]), lq=lq)
    row = metrics.per_image()[0]
    return {k: float(row[k]) for k in ("psnr", "ssim", "psnr_input", "ssim_input") if k in row}


@contextlib.contextmanager
def _stoppable(module, stop: threading.Event | None):
    """Check `stop` before every call of the module's networks (its direct children), the one place every
    sampler step passes through whatever the method."""
    if stop is None:
        yield
        return

    owner = threading.get_ident()

    def check(*_):  # only in this run's thread: a run that starts while a stopped one ends is not stopped too
        if stop.is_set() and threading.get_ident() == owner:
            raise Stopped("stopped by the user")

    handles = [child.register_forward_pre_hook(check) for child in module.children()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
