"""Image-quality metrics computed the way the papers compute them.

PSNR and SSIM follow BasicSR (`basicsr/metrics/psnr_ssim.py`), the convention IR-SDE, DiffIR and most
restoration papers report:

* images are 8-bit (the numbers are those of the saved PNG files), compared in float64;
* ``crop_border`` pixels are dropped on every side before anything else;
* ``test_y_channel`` compares only the BT.601 luma of MATLAB's ``rgb2ycbcr`` (range 16..235), unrounded;
* SSIM is Wang et al.'s: 11x11 Gaussian window with sigma 1.5, 'valid' region only, C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, averaged over the map and then over the channels;
* the PSNR of identical images is ``inf``.

The numpy functions take one uint8 HxWx3 RGB image pair; ``psnr_ssim`` does the same on a float NCHW batch
(it first quantises to 8 bit as saving a PNG would); ``core.evaluation.ImageMetrics`` accumulates them over a
run. LPIPS and FID are optional: they need backbone weights that are only used when already on disk (nothing is
ever downloaded).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

log = logging.getLogger(__name__)

# MATLAB rgb2ycbcr luma row: Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1] (Y in 0..255).
Y_COEFFS_RGB = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2

# Weight files torchvision / torch-fidelity look for under <torch hub dir>/checkpoints/ before downloading.
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LPIPS_BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
FID_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
FID_INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"

# Keys of the "metric skipped" warnings already logged: one line per process is enough.
_WARNED: set[str] = set()


# ----------------------------------------------------------------------------------------------------
# Luma (Y of YCbCr, ITU-R BT.601 as MATLAB's rgb2ycbcr)
# ----------------------------------------------------------------------------------------------------


def _luma(r: Any, g: Any, b: Any) -> Any:
    """MATLAB luma Y in 16..235 (of 255) from float64 R, G, B in [0, 1] (numpy or torch), not rounded.

    The terms are added in BasicSR's order (it dots a BGR pixel with (24.966, 128.553, 65.481)) so that our
    float64 values match its values, up to an ulp that the float32 cast that follows removes.
    """
    return b * Y_COEFFS_RGB[2] + g * Y_COEFFS_RGB[1] + r * Y_COEFFS_RGB[0] + Y_OFFSET


def _y_like_basicsr_np(img: np.ndarray) -> np.ndarray:
    """BasicSR's ``to_y_channel`` for an HxWx3 RGB array in 0..255: float32 HxWx1 Y in 0..255, not rounded.

    It reproduces BasicSR's float32 round trips (the image divided by 255 in float32, Y/255 cast to float32
    and multiplied back by 255 in float32): they change the last bits of Y, so the PSNR at the 1e-6 dB level.
    """
    x = (img.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    y = (_luma(x[..., 0], x[..., 1], x[..., 2]) / 255.0).astype(np.float32)
    return (y * np.float32(255.0))[..., None]


def _y_like_basicsr_torch(img: Tensor) -> Tensor:
    """Same as ``_y_like_basicsr_np`` for an (N, 3, H, W) tensor in 0..255: float32 (N, 1, H, W)."""
    x = (img.to(torch.float32) / 255.0).to(torch.float64)
    y = (_luma(x[:, 0:1], x[:, 1:2], x[:, 2:3]) / 255.0).to(torch.float32)
    return y * 255.0


def rgb_to_y(img: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """BT.601 luma of an RGB image, as MATLAB's ``rgb2ycbcr(...)(:, :, 1)`` (the Y range is 16..235 of 255).

    Units follow BasicSR:

    * integer input (uint8) is read as 0..255 and gives float32 Y in 0..255, *not rounded*: exactly the values
      BasicSR's metrics compare (``to_y_channel``, i.e. ``bgr2ycbcr(img / 255., y_only=True) * 255`` on the
      BGR version of the image);
    * float input is read as 0..1 and gives Y in 0..1 in the input's dtype (float32 input gives BasicSR's
      ``bgr2ycbcr(float32 image, y_only=True)`` / ``rgb2ycbcr_pt``).

    Layout: numpy arrays are channel-last (..., 3) and give (..., 1); tensors are channel-first (N, 3, H, W)
    or (3, H, W) and give (N, 1, H, W) or (1, H, W).
    """
    if isinstance(img, Tensor):
        if img.ndim not in (3, 4) or img.shape[-3] != 3:
            raise ValueError(
                f"rgb_to_y expects a (N, 3, H, W) or (3, H, W) tensor, got shape {tuple(img.shape)}"
            )
        batched = img if img.ndim == 4 else img.unsqueeze(0)
        if img.dtype.is_floating_point:
            x = batched.to(torch.float64)
            y = (_luma(x[:, 0:1], x[:, 1:2], x[:, 2:3]) / 255.0).to(img.dtype)
        else:
            y = _y_like_basicsr_torch(batched)
        return y if img.ndim == 4 else y.squeeze(0)

    arr = np.asarray(img)
    if arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_y expects a channel-last RGB array (..., 3), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float64)
        return (_luma(x[..., 0], x[..., 1], x[..., 2]) / 255.0).astype(arr.dtype)[..., None]
    return _y_like_basicsr_np(arr)


# ----------------------------------------------------------------------------------------------------
# PSNR / SSIM core (float64 NCHW tensors in 0..255)
# ----------------------------------------------------------------------------------------------------


def _gaussian_1d(device: torch.device) -> Tensor:
    """cv2.getGaussianKernel(11, 1.5) in float64: exp(-(i-5)^2 / (2 sigma^2)), normalised to sum 1."""
    coords = torch.arange(SSIM_WINDOW_SIZE, dtype=torch.float64, device=device) - (SSIM_WINDOW_SIZE - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def _gaussian_valid(x: Tensor) -> Tensor:
    """Filter every channel of x with the 11x11 Gaussian window, keeping the 'valid' region only.

    The window is the outer product of two 1-D Gaussians, so two 1-D passes give the 2-D filter with 22
    instead of 121 multiply-adds per pixel (float64 SSIM of a 1920x1080 RGB image takes a few seconds on CPU).
    """
    channels = x.shape[1]
    g = _gaussian_1d(x.device)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def _prepare_255(img: Tensor, img2: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    """Crop, optionally take the luma of, and cast to float64 a pair of (N, C, H, W) batches in 0..255."""
    if img.shape != img2.shape:
        raise ValueError(f"Image shapes differ: {tuple(img.shape)} vs {tuple(img2.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border > 0:
        if min(img.shape[-2:]) <= 2 * crop_border:
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {tuple(img.shape[-2:])} image")
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and img.shape[1] == 3:  # as BasicSR, a single-channel image is already "Y"
        img, img2 = _y_like_basicsr_torch(img), _y_like_basicsr_torch(img2)
    return img.to(torch.float64), img2.to(torch.float64)


def _psnr_255(img: Tensor, img2: Tensor) -> Tensor:
    """Per-image PSNR (N,) of float64 batches in 0..255; inf where the images are equal."""
    mse = ((img - img2) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # 255^2 / 0 = inf, log10(inf) = inf: BasicSR's value


def _ssim_255(img: Tensor, img2: Tensor) -> Tensor:
    """Per-image SSIM (N,) of float64 batches in 0..255: map mean per channel, then mean over channels."""
    n, c, h, w = img.shape
    if min(h, w) < SSIM_WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} after cropping, got {h}x{w}"
        )
    # One grouped filtering of the five maps: mu1, mu2, E[x^2], E[y^2], E[xy].
    stacked = torch.cat([img, img2, img * img, img2 * img2, img * img2], dim=1)
    mu1, mu2, e11, e22, e12 = _gaussian_valid(stacked).split(c, dim=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + SSIM_C1) * (2 * sigma12 + SSIM_C2)) / (
        (mu1_sq + mu2_sq + SSIM_C1) * (sigma1_sq + sigma2_sq + SSIM_C2)
    )
    # Every channel's map has the same size, so the mean over (C, H, W) is the mean of the channel means.
    return ssim_map.mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------------------------------
# Public PSNR / SSIM
# ----------------------------------------------------------------------------------------------------


def _hwc_uint8_to_batch(img: np.ndarray) -> Tensor:
    """HxW or HxWxC array (values 0..255) to a (1, C, H, W) float64 tensor, without changing any value."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"Expected an HxW or HxWxC image, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.astype(np.float64))).permute(2, 0, 1).unsqueeze(0)


def calculate_psnr(
    img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False
) -> float:
    """PSNR in dB of two uint8 HxWx3 RGB images, as BasicSR's ``calculate_psnr``; ``inf`` when equal."""
    a, b = _prepare_255(_hwc_uint8_to_batch(img), _hwc_uint8_to_batch(img2), crop_border, test_y_channel)
    return float(_psnr_255(a, b)[0])


def calculate_ssim(
    img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False
) -> float:
    """SSIM of two uint8 HxWx3 RGB images, as BasicSR's ``calculate_ssim`` (mean over the RGB channels)."""
    a, b = _prepare_255(_hwc_uint8_to_batch(img), _hwc_uint8_to_batch(img2), crop_border, test_y_channel)
    return float(_ssim_255(a, b)[0])


def quantize_8bit(x: Tensor) -> Tensor:
    """The 0..255 integer levels a [0, 1] float image gets when saved as an 8-bit PNG: clamp, *255, round.

    Computed in float32 as image writers do (round half to even, like numpy's ``round``); the result stays a
    float tensor holding whole numbers.
    """
    return (x.to(torch.float32).clamp(0.0, 1.0) * 255.0).round()


@torch.no_grad()
def psnr_ssim(restored: Tensor, gt: Tensor, y_channel: bool, crop_border: int) -> tuple[Tensor, Tensor]:
    """Per-image PSNR and SSIM (two float64 tensors of shape (N,)) of float NCHW batches in [0, 1].

    Both batches are quantised to 8 bit first (``quantize_8bit``), so the numbers equal ``calculate_psnr`` /
    ``calculate_ssim`` on the saved PNG files. Runs on the inputs' device.
    """
    if restored.ndim != 4:
        raise ValueError(f"psnr_ssim expects NCHW batches, got shape {tuple(restored.shape)}")
    a, b = _prepare_255(quantize_8bit(restored), quantize_8bit(gt), crop_border, y_channel)
    return _psnr_255(a, b), _ssim_255(a, b)


# ----------------------------------------------------------------------------------------------------
# Optional perceptual metrics (weights must already be on disk)
# ----------------------------------------------------------------------------------------------------


def _checkpoint_dir() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message)


def lpips_available(net: str = "alex") -> bool:
    """Whether the ImageNet backbone LPIPS needs for ``net`` ('alex' or 'vgg') is in the torch hub cache."""
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    return (_checkpoint_dir() / LPIPS_BACKBONE_FILES[net]).is_file()


def fid_available() -> bool:
    """Whether FID can run offline: torch-fidelity installed and its Inception weights in the hub cache."""
    return (
        importlib.util.find_spec("torch_fidelity") is not None
        and (_checkpoint_dir() / FID_INCEPTION_FILE).is_file()
    )


def make_lpips(device: torch.device | str = "cpu", net: str = "alex") -> torchmetrics.Metric | None:
    """torchmetrics LPIPS (inputs in [0, 1], ``normalize=True``, mean over images); None without weights.

    The check happens before construction because torchvision would otherwise try to download the backbone.
    The linear LPIPS heads ship inside torchmetrics; only the backbone is needed.
    """
    if not lpips_available(net):
        path = _checkpoint_dir() / LPIPS_BACKBONE_FILES[net]
        _warn_once(
            f"lpips-{net}",
            f"LPIPS skipped: backbone weights {path} are missing; download {LPIPS_BACKBONE_URLS[net]} "
            f"to that path (or set TORCH_HOME) to enable it.",
        )
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).to(device)


def make_fid(device: torch.device | str = "cpu") -> torchmetrics.Metric | None:
    """torchmetrics FID (2048-d Inception pool features, inputs in [0, 1]); None if it cannot run offline."""
    path = _checkpoint_dir() / FID_INCEPTION_FILE
    if importlib.util.find_spec("torch_fidelity") is None:
        _warn_once(
            "fid",
            "FID skipped: the torch-fidelity package is not installed "
            "(pip install torch-fidelity), and its Inception weights "
            f"{path} are needed too ({FID_INCEPTION_URL}).",
        )
        return None
    if not path.is_file():
        _warn_once(
            "fid",
            f"FID skipped: Inception weights {path} are missing; download {FID_INCEPTION_URL} "
            "to that path (or set TORCH_HOME) to enable it.",
        )
        return None
    from torchmetrics.image.fid import FrechetInceptionDistance

    # An explicit weights path keeps torch-fidelity from ever reaching for the network.
    return FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(path)
    ).to(device)
