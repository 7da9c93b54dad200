"""Files uploaded on the page -> arrays and tensors, read with the same functions as restore.py (so the pixels
are the ones restore.py would see), and a message a person can act on when a file is bad.

Messages name the file as the user called it (`name`), not the temporary path the server stored it under.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import DataError, UserError
from core.io import image_size, read_image


class InputError(UserError):
    """An uploaded file or a page setting that cannot be used; the page shows the message."""


def read_upload(path: str | Path, name: str | None = None, max_pixels: int | None = None,
                tiled: bool = False) -> np.ndarray:
    """The image of an uploaded file as restore.py reads it (uint8 HxWx3). The size is checked from the header,
    before decoding, so a huge image is refused without using the memory it would need."""
    name = name or Path(path).name
    try:
        height, width = image_size(path)
    except (DataError, Image.DecompressionBombError) as err:
        if isinstance(err, Image.DecompressionBombError):
            raise InputError(f"{name} is too large to open safely ({err})") from err
        raise InputError(f"{name} is not an image this page can read: upload a PNG, JPEG, BMP, TIFF or WebP "
                         "file") from err
    if max_pixels and height * width > max_pixels:
        # the tiled limit counts the image's pixels, not a tile's: the sampler's state (several copies of the
        # whole image) stays whole, so a smaller tile cannot help
        advice = ("tiling bounds only the network's memory, not the whole-image state the sampler keeps, so a "
                  "smaller tile cannot help: upload a crop or a downscaled copy, or start the app with a larger "
                  "max_pixels_tiled=" if tiled else
                  "set a tile size (e.g. 256) to restore it tile by tile in fixed memory, or start the app with "
                  "a larger max_pixels=")
        raise InputError(f"{name} is {width}x{height} = {height * width / 1e6:.2f} M pixels, more than this "
                         f"page's limit of {max_pixels / 1e6:.2f} M pixels: {advice}")
    try:
        return read_image(path)
    except DataError as err:
        raise InputError(f"{name} is truncated or corrupt (its pixels cannot be decoded): upload the file "
                         "again or another copy") from err


def read_mask_upload(path: str | Path, shape: tuple[int, int], name: str | None = None) -> torch.Tensor:
    """An uploaded inpainting mask (white = known pixel) as restore.py mask=FILE reads it: 1 x 1 x H x W."""
    from data.masks import read_mask

    name = name or Path(path).name
    read_upload(path, name)  # the same messages for a file that is not an image
    mask = read_mask(path, None)
    _check_size(mask.shape, shape, f"the mask {name}")
    return torch.from_numpy(mask)[None, None]


def mask_from_drawing(editor: dict | None, shape: tuple[int, int]) -> torch.Tensor:
    """The mask painted in the page's image editor: painted pixels are the ones to fill (0), the rest known (1).
    The layers are RGBA arrays; a pixel counts as painted where any layer is not transparent."""
    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or [] if layer is not None]
    painted = [layer[..., 3] > 0 for layer in layers if layer.ndim == 3 and layer.shape[2] == 4]
    if not painted or not any(p.any() for p in painted):
        raise InputError("no mask drawn: paint over the region to fill in the mask editor, or choose another "
                         "mask source")
    _check_size(painted[0].shape, shape, "the drawn mask")
    hole = np.logical_or.reduce(painted)
    return torch.from_numpy((~hole).astype(np.float32))[None, None]


def read_kernel_upload(path: str | Path, name: str | None = None) -> torch.Tensor:
    """An uploaded blur kernel as restore.py kernel=FILE reads it: a .npy must sum to 1, an image is divided
    by its sum."""
    from diffpir.kernels import IMAGE_SUFFIXES, load_kernel

    name = name or Path(path).name
    try:
        return load_kernel(path, normalize=Path(path).suffix.lower() in IMAGE_SUFFIXES)
    except (DataError, ValueError, OSError) as err:
        raise InputError(f"kernel {name}: {str(err).replace(str(path), name)}") from err


def _check_size(got: tuple[int, ...], want: tuple[int, int], what: str) -> None:
    if tuple(got[:2]) != tuple(want):
        raise InputError(f"{what} is {got[1]}x{got[0]} pixels but the image is {want[1]}x{want[0]}: the mask "
                         "must have the image's size")
