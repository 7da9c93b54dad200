"""Reading, writing and converting images.

Files are read into uint8 HxWx3 RGB arrays whatever their mode on disk, so every dataset sees three channels:
grayscale and palette images are expanded, 16-bit images are scaled to 8 bits, and an alpha channel is DROPPED
(not composited), as the official IR-SDE loader (cv2.IMREAD_UNCHANGED, then the first three channels) does.
EXIF orientation is not applied, again like that loader, so pixels match the files.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)


def _natural_key(path: Path) -> list[object]:
    # Digits compare as numbers so that rain-2 sorts before rain-10; text parts compare case-insensitively.
    parts = re.split(r"(\d+)", path.name)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, in natural order; hidden files (macOS `._*` copies) skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Image folder not found: {folder}. Check the path (data.root or the folder "
                        f"setting).")
    files = [
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    ]
    return sorted(files, key=_natural_key)


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"Image file not found: {path}. Check the path or remove it from the dataset list.")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"Cannot read image {path} ({err}). Re-download or delete this file.") from err


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit (or float) grayscale: PIL cannot convert these to RGB itself, so scale to 8 bits by hand.
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            peak = 65535.0
        elif img.mode == "F":
            peak = 1.0 if arr.max() <= 1.0 else 255.0
        else:  # 32-bit integer: 16-bit content in practice, unless it fits in 8 bits
            peak = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P":
        # Palettes may carry transparency: go through RGBA so the colours are right, then drop alpha.
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, RGBA, CMYK, 1, YCbCr...: alpha is discarded
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 HxWx3 RGB array (alpha dropped, gray expanded, 16-bit scaled)."""
    path = Path(path)
    img = _open(path)
    try:
        with img:
            img.load()
            return _to_rgb_array(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"Cannot decode image {path} ({err}). The file is truncated or corrupt: "
                        f"re-download or delete it.") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) read from the file header only (PIL opens lazily, no pixel decoding)."""
    path = Path(path)
    with _open(path) as img:
        width, height = img.size
    return height, width


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 (or HxW) array -> float32 CxHxW tensor in [0, 1]; a float array is taken as in [0, 1]."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"to_tensor expects an HxWxC or HxW array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        data = arr.astype(np.float32) / 255.0
    else:
        data = arr.astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float CxHxW -> uint8 HxWxC, or NxCxHxW -> NxHxWxC: clamped to [0, 1], x255, rounded half to even."""
    if img.ndim not in (3, 4):
        raise ValueError(f"to_uint8 expects a CHW or NCHW tensor, got shape {tuple(img.shape)}")
    data = img.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).mul(255.0).round()
    data = data.to(torch.uint8).movedim(-3, -1)
    return np.ascontiguousarray(data.numpy())


def write_image(path: str | Path, img: np.ndarray | torch.Tensor) -> None:
    """Save a uint8 HxWx3 / HxW array or a float CxHxW (or 1xCxHxW) tensor in [0, 1], atomically; makes parent
    dirs."""
    path = Path(path)
    if isinstance(img, torch.Tensor):
        if img.ndim == 4 and img.shape[0] == 1:
            img = img[0]
        arr = to_uint8(img)
    else:
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            raise TypeError(f"write_image expects a uint8 array or a float tensor, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    # through a hidden sibling and an atomic rename: a killed process never leaves a half-written image, so an
    # existing output is a complete one (restore.py skips those when rerun)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        # PNG at zlib level 1, the default of OpenCV's imwrite that the official codes save with: a 1411^2 photo
        # takes 0.17 s instead of 0.73 s at PIL's level 6, for a file 11 % larger (lossless either way)
        Image.fromarray(arr).save(tmp, **({"compress_level": 1} if path.suffix.lower() == ".png" else {}))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def image_seed(seed: int, name: str) -> int:
    """The sampler seed of the image file `name` (restore.py, the web page): seed + a hash of the name, so an
    image restores the same alone, within a folder or uploaded to the page."""
    return int(seed) + zlib.crc32(name.encode())
