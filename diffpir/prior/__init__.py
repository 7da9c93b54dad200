"""DiffPIR's diffusion prior: guided-diffusion's UNet with the official parameter names."""

from diffpir.prior.unet import PRESETS, GuidedUNet, small_config

__all__ = ["PRESETS", "GuidedUNet", "small_config"]
