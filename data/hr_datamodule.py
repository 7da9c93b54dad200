"""HR-only data for blind SR (DiffIR-RealSR, Real-ESRGAN): the training items carry HR crops and the recipe degrades
them on the device (diffir.realsr); the validation / test LQ is made here, once per image, by the same degradation.

* ``HRDataModule`` (``data=df2k``): a folder of HR images, or the sub-images listed in an official meta-info file
  (``meta_info_DF2Kmultiscale+OST_sub.txt``: paths relative to ``root``; ``scripts/prepare_df2k.py`` writes one),
  plus ``test_root``, a folder of HR validation images.
* ``DemoHRDataModule`` (``data=demo_hr``): the built-in demo photographs (nothing downloaded).

``degradation``: "realesrgan" (training ``lq`` = a copy of the HR crop, to be replaced by the recipe; test ``lq`` =
Real-ESRGAN degradation of the whole image, seeded by (val_seed, 0, index), so every validation sees the same
inputs) or "bicubic" (MATLAB bicubic LR, the plain paired recipes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import DataError
from data.datamodules import PairedDataModule
from data.datasets import InMemoryImageDataset
from data.layouts import Pair, single_folder
from data.realesrgan import DegradationOptions, degrade, sample_generators

DEGRADATIONS = ("realesrgan", "bicubic")


class KeepGT:
    """Training ``make_lq``: the HR crop itself, a placeholder the Real-ESRGAN recipe replaces on the device."""

    def __call__(self, gt: np.ndarray, seed: int) -> np.ndarray:
        return gt.copy()


class RealESRGANLQ:
    """Test ``make_lq``: the Real-ESRGAN degradation of a whole HR image (H, W divisible by ``scale``), seeded by
    (seed, 0, item index); no final crop."""

    def __init__(self, scale: int, seed: int = 0, options: dict | None = None) -> None:
        self.scale, self.seed = int(scale), int(seed)
        self.options = DegradationOptions.from_config({**dict(options or {}), "gt_size": None})

    def __call__(self, gt: np.ndarray, seed: int) -> np.ndarray:
        hr = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32)).permute(2, 0, 1)[None]
        out = degrade(hr, sample_generators(self.seed, 0, [int(seed)]), self.scale, self.options)
        return out.lq[0].permute(1, 2, 0).numpy()


def meta_info_images(root: str | Path, meta_info: str | Path) -> list[Pair]:
    """The images a Real-ESRGAN meta-info file lists (one path relative to ``root`` per line; extra columns
    ignored), in the file's order."""
    root, meta_info = Path(root), Path(meta_info)
    if not meta_info.is_file():
        raise DataError(f"data.meta_info={meta_info} not found (a list of HR images relative to data.root).")
    lines = [line.split()[0] for line in meta_info.read_text().splitlines() if line.strip()]
    missing = [name for name in lines if not (root / name).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the {len(lines)} images listed in {meta_info} are not under "
                        f"data.root={root}: {missing[:3]}")
    return [Pair(lq=None, gt=root / name, name=Path(name).stem) for name in lines]


class HRDataModule(PairedDataModule):
    """HR images only (DF2K, DF2K+OST sub-images). Official defaults: HR crops of 400 (the official dataset's
    crop_pad_size; the recipe crops gt_size 256 after degrading), horizontal flips only (use_rot False),
    validation PSNR on Y without a border."""

    name = "df2k"
    default_y_channel = True

    def __init__(self, root: str | None = None, meta_info: str | None = None, scale: int = 4,
                 degradation: str = "realesrgan", val_degradation: dict | None = None, val_seed: int = 0,
                 **options: Any) -> None:
        if degradation not in DEGRADATIONS:
            raise DataError(f"data.degradation={degradation!r}: use one of {', '.join(DEGRADATIONS)}.")
        options.setdefault("flips", "horizontal")
        options.setdefault("rot90", False)
        super().__init__(root, scale=scale, **options)
        self.meta_info, self.degradation = meta_info, degradation
        self.val_degradation, self.val_seed = dict(val_degradation or {}), int(val_seed)

    def find_pairs(self, split: str) -> list[Pair]:
        if split == "train":
            root = self.split_root("train")
            return meta_info_images(root, self.meta_info) if self.meta_info else single_folder(root)
        if self.test_root is None:
            raise DataError(f"{self.name}: set data.test_root to a folder of HR validation images (their LQ is "
                            f"made by the {self.degradation} degradation).")
        return single_folder(self.test_root)

    def dataset_options(self, train: bool) -> dict[str, Any]:
        if self.degradation == "bicubic":
            return {}
        if train:
            return {"make_lq": KeepGT()}
        return {"make_lq": RealESRGANLQ(self.scale, self.val_seed, self.val_degradation)}


class DemoHRDataModule(HRDataModule):
    """The built-in demo photographs as HR images (data.demo): train_samples random crops per epoch from the
    training photos, the held-out photos (image_size squares) for validation."""

    name = "demo-hr"

    def __init__(self, patch_size: int = 64, image_size: int = 128, train_samples: int = 256,
                 num_workers: int = 0, **options: Any) -> None:
        options.setdefault("verify", False)
        super().__init__(None, patch_size=patch_size, num_workers=num_workers, **options)
        self.image_size, self.train_samples = int(image_size), int(train_samples)

    def fit_files(self) -> list[Path]:
        return []  # in memory: nothing to verify

    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      center_crop: int | None = None) -> Dataset:
        from data.demo import _photos  # the demo's photographs, sized as the demo data module sizes them

        if self.patch_size > 2 * self.image_size:
            raise DataError(f"demo_hr: patch_size={self.patch_size} exceeds the training photos' short side "
                            f"{2 * self.image_size}.")
        photos = list(_photos("train" if train else "test", self.image_size))
        if not train and limit is not None:
            photos = photos[:limit]
        return InMemoryImageDataset(photos, train, length=self.train_samples if train else None,
                                    patch_size=self.patch_size, scale=self.scale, flips=self.flips,
                                    rot90=self.rot90, center_crop=center_crop, **self.dataset_options(train))
