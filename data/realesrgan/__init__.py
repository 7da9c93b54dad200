"""Real-ESRGAN's degradation model (Wang et al., ICCV-W 2021) with DiffIR-RealSR's official options, applied on
the device to each training batch: `lq, gt = degrade(gt, sample_generators(seed, epoch, batch["index"]), scale)`."""

from data.realesrgan.degrade import Degraded, degrade, sample_generators, sample_seed
from data.realesrgan.filters import usm_sharpen
from data.realesrgan.jpeg import diff_jpeg
from data.realesrgan.options import OFFICIAL, DegradationOptions

__all__ = ["OFFICIAL", "DegradationOptions", "Degraded", "degrade", "diff_jpeg", "sample_generators",
           "sample_seed", "usm_sharpen"]
