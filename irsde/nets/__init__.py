"""Noise networks of IR-SDE: the conditional U-Net (IR-SDE) and the conditional NAFNet (Refusion)."""

from irsde.nets.nafnet import ConditionalNAFNet
from irsde.nets.unet import ConditionalUNet

__all__ = ["ConditionalNAFNet", "ConditionalUNet"]
