"""Places2 (Places365-Standard, high-resolution) inpainting, laid out as the official archives unpack:
``train_large_places365standard.tar`` -> ``data_large/<letter>/<category>/*.jpg`` (1.8 M images, short side 512)
and ``val_large.tar`` -> ``val_large/*.jpg`` (36,500 images). ``data.root`` holds both (``root/train/data_large``
and ``root/val/val_large``, LaMa's layout, work too).

Training takes ``patch_size`` crops (official 256) with horizontal flips; LaMa's geometric and colour distortions
(transform_variant "distortions") are not reproduced. Validation and test use the centre ``eval_crop`` square
(official evaluation: 512) with masks as the CelebA-HQ module makes them (a RePaint-style folder, or a generated
kind drawn per image index: LaMa's ``lama_thick_512`` by default); training masks are ``train_mask`` (LaMa's mix).
Names are the path below the split folder with "/" turned to "_" (category folders reuse file names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from core.errors import DataError
from core.io import IMAGE_EXTENSIONS, list_images
from data.datamodules import CelebAHQDataModule, PairedDataModule
from data.lama_masks import LAMA_KINDS
from data.layouts import Pair
from data.masks import MASK_KINDS, FolderMask

SPLIT_FOLDERS = {"train": ("data_large", "train/data_large"), "test": ("val_large", "val/val_large")}


def places2_images(root: str | Path, split: str) -> list[Pair]:
    """GT-only pairs of a split, every image below its folder (sorted, recursive)."""
    base = Path(root).expanduser()
    tried = [base / sub for sub in SPLIT_FOLDERS[split]]
    folder = next((p for p in tried if p.is_dir()), None)
    if folder is None:
        raise DataError(f"No Places2 {split} folder under {base}: looked for {', '.join(map(str, tried))}. Point "
                        "data.root at the folder where train_large_places365standard.tar and val_large.tar were "
                        "unpacked (data_large/ and val_large/), or set data.train_root / data.test_root.")
    files = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    if not files:
        raise DataError(f"No images in {folder} (searched its subfolders too).")
    return [Pair(lq=None, gt=f, name=str(f.relative_to(folder).with_suffix("")).replace("/", "_")) for f in files]


class Places2DataModule(PairedDataModule):
    """Places2 inpainting; ``mask_root`` / ``mask_kind`` / ``generated_mask`` / ``train_mask`` as
    ``CelebAHQDataModule``; ``eval_crop``: side of the centre square scored (None: whole images)."""

    name = "places2"

    def __init__(self, root: str | None = None, mask_root: str | None = None, mask_kind: str = "thick",
                 generated_mask: str = "lama_thick_512", train_mask: str | None = "lama",
                 eval_crop: int | None = 512, **options: Any) -> None:
        super().__init__(root, **options)
        for key, kind in (("generated_mask", generated_mask), ("train_mask", train_mask)):
            if kind is not None and kind not in (*MASK_KINDS, *LAMA_KINDS):
                raise DataError(f"data.{key}='{kind}': use one of {', '.join((*MASK_KINDS, *LAMA_KINDS))}.")
        self.mask_root, self.mask_kind = mask_root, mask_kind
        self.generated_mask, self.train_mask = generated_mask, train_mask
        self.eval_crop = int(eval_crop) if eval_crop else None

    def find_pairs(self, split: str) -> list[Pair]:
        return places2_images(self.split_root(split), split)

    def fit_files(self) -> list[Path]:
        return [*super().fit_files(), *(self.mask_files() if self.mask_root else ())]

    def mask_files(self) -> tuple[Path, ...]:
        root = Path(self.mask_root)  # type: ignore[arg-type]
        for folder in (root / self.mask_kind, root):
            if folder.is_dir() and list_images(folder):
                return tuple(list_images(folder))
        raise DataError(f"No mask images in {root / self.mask_kind} or {root}: set data.mask_root to a folder of "
                        "masks (white = keep; mask i goes to test image i % count) and data.mask_kind.")

    def dataset_options(self, train: bool) -> dict[str, Any]:
        if train and self.train_mask:
            return {"mask_fn": CelebAHQDataModule.generated_masks(self.train_mask)}
        if self.mask_root:
            return {"mask_fn": FolderMask(self.mask_files())}
        return {"mask_fn": CelebAHQDataModule.generated_masks(self.generated_mask)}

    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      center_crop: int | None = None) -> Dataset:
        if not train and center_crop is None:
            center_crop = self.eval_crop  # the test split too, not only validation
        return super().build_dataset(split, train, limit, center_crop)
