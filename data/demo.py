"""The built-in demo set: photographs that ship with scikit-image, degraded synthetically. Nothing is
downloaded.

Whole photographs are split once into training and held-out test images (a test photo never appears in
training). Training items are random patches of the training photos (scaled so their short side is twice the
test size) with the degradation drawn afresh for every sample; test items are the held-out photos resized and
centre-cropped to `image_size` squares, degraded with a seed equal to their index, so they never change.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import skimage.data

from core.errors import DataError
from core.io import write_image
from data.datasets import InMemoryImageDataset
from data.masks import GeneratedMask
from data.resize import imresize
from data.synthetic import BlurLQ, NoiseLQ, RainLQ

TASKS = ("rain", "noise", "blur", "sr", "inpaint")
SCALE = 4  # the "sr" task's factor
NOISE_SIGMA = 25.0  # 0-255 scale
BLUR_SIGMA = 1.5  # px, fixed Gaussian: learnable by a small model in minutes
# All of these load offline from scikit-image's bundled files (checked with scikit-image 0.26). chelsea and
# cat are the same photo, so only one is used; clock is already motion-blurred, so it is left out.
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                "stereo_motorcycle", "brick", "grass")

TEST_PHOTOS = ("chelsea", "camera", "retina", "coins", "moon")
# The demo faces (DiffPIR's demo prior): the 100 face images of scikit-image's bundled LFW subset (25x25 grey
# crops); the first 90 train, the last 10 are held out.
SOURCES = ("photos", "faces")
FACE_COUNT, FACE_TEST = 100, 10


@cache
def load_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float32 HxWx3 in [0, 1] (grayscale repeated, stereo pair: left view)."""
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3], dtype=np.float32) / 255.0


def _short_side_to(img: np.ndarray, short: int) -> np.ndarray:
    h, w = img.shape[:2]
    ratio = short / min(h, w)
    size = (max(short, round(h * ratio)), max(short, round(w * ratio)))
    return np.clip(imresize(img, size=size), 0.0, 1.0)


def _centre_square(img: np.ndarray, side: int) -> np.ndarray:
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return np.ascontiguousarray(img[top:top + side, left:left + side])


@lru_cache(maxsize=8)
def _faces(split: str, image_size: int) -> tuple[tuple[str, np.ndarray], ...]:
    faces = skimage.data.lfw_subset()[:FACE_COUNT].astype(np.float32)  # float in [0, 1], HxW
    chosen = range(FACE_COUNT - FACE_TEST) if split == "train" else range(FACE_COUNT - FACE_TEST, FACE_COUNT)
    out = []
    for i in chosen:
        face = np.clip(imresize(faces[i], size=(image_size, image_size)), 0.0, 1.0)
        out.append((f"face{i:03d}", np.repeat(face[:, :, None], 3, axis=2)))
    return tuple(out)


@lru_cache(maxsize=8)
def _photos(split: str, image_size: int) -> tuple[tuple[str, np.ndarray], ...]:
    if split == "train":
        return tuple((n, _short_side_to(load_photo(n), 2 * image_size)) for n in TRAIN_PHOTOS)
    return tuple((n, _centre_square(_short_side_to(load_photo(n), image_size), image_size))
                 for n in TEST_PHOTOS)


def task_options(task: str) -> dict[str, object]:
    """PairedImageDataset arguments that make the task's degradation."""
    if task == "rain":
        return {"make_lq": RainLQ()}
    if task == "noise":
        return {"make_lq": NoiseLQ(NOISE_SIGMA)}
    if task == "blur":
        return {"make_lq": BlurLQ(BLUR_SIGMA)}
    if task == "sr":
        return {"scale": SCALE, "upsample_lq": True}  # LR by MATLAB bicubic, then bicubic back to HR size
    if task == "inpaint":
        return {"mask_fn": GeneratedMask("strokes")}
    raise DataError(f"Unknown demo task '{task}': use one of {', '.join(TASKS)}.")


def build_demo_split(task: str, split: str, patch_size: int = 64, image_size: int = 128,
                     train_samples: int = 256, max_images: int | None = None,
                     source: str = "photos") -> InMemoryImageDataset:
    """The demo Dataset of `task` for split "train" (train_samples random patches per epoch) or "test"
    (the held-out images, at most `max_images`). Items are those of PairedImageDataset. source="faces" uses
    the LFW faces (training faces at image_size, so a patch_size equal to it gives whole faces)."""
    options = task_options(task)
    if patch_size > image_size:
        raise DataError(f"Demo patch_size={patch_size} exceeds image_size={image_size}: lower the patch "
                        f"size.")
    if source not in SOURCES:
        raise DataError(f"data.source='{source}' is not a demo source: use one of {', '.join(SOURCES)}.")
    train = split == "train"
    pick = _faces if source == "faces" else _photos
    photos = list(pick("train" if train else "test", int(image_size)))
    if not train and max_images is not None:
        photos = photos[:max_images]
    return InMemoryImageDataset(photos, train, length=train_samples if train else None, patch_size=patch_size,
                                **options)


def export_demo(folder: str | Path, task: str = "rain", image_size: int = 128,
                source: str = "photos") -> list[Path]:
    """Write the demo test set as folder/<task>/{lq,gt}/<name>.png (and mask/ for inpainting) to look at, or
    to use with the folder-pair data module; returns the files written."""
    root = Path(folder) / task
    written: list[Path] = []
    dataset = build_demo_split(task, "test", patch_size=min(64, image_size), image_size=image_size,
                               source=source)
    for i in range(len(dataset)):
        item = dataset[i]
        for key in ("lq", "gt", "mask"):
            if key in item:
                path = root / key / f"{item['name']}.png"
                write_image(path, item[key])
                written.append(path)
    return written


def real_world_photo(photo: str = "chelsea", size: int = 256, scale: int = SCALE, quality: int = 60,
                     seed: int = 0) -> tuple[np.ndarray, bytes]:
    """A held-out photograph made "real": downscaled by `scale` (PIL bicubic), with sensor-like noise (shot noise
    of a 400-photon full well + read noise of 1 %), saved by a real JPEG encoder (PIL's libjpeg) at `quality`:
    not the Real-ESRGAN simulation the real-world demo model trained on. (GT uint8 size x size x 3, JPEG bytes.)"""
    import io

    from PIL import Image

    if photo not in TEST_PHOTOS:
        raise DataError(f"photo={photo}: a held-out demo photo is one of {', '.join(TEST_PHOTOS)}")
    gt = _centre_square(_short_side_to(load_photo(photo), size), size)
    gt8 = np.clip(np.rint(gt * 255), 0, 255).astype(np.uint8)
    small = np.asarray(Image.fromarray(gt8).resize((size // scale, size // scale), Image.BICUBIC), np.float64) / 255
    rng = np.random.default_rng(seed)
    photons = 400.0  # shot noise std = sqrt(signal / photons)
    noisy = rng.poisson(small * photons) / photons + rng.normal(0.0, 0.01, small.shape)
    noisy8 = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy8).save(buffer, format="JPEG", quality=quality)
    return gt8, buffer.getvalue()
