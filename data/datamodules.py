"""LightningDataModules: one per dataset, all over `PairedImageDataset`.

The base class finds the pairs of each split, checks them before any training step (every training and
validation file fully decoded once, see data.verify; counts, pairing, LQ sizes, training images at least the
patch size), and serves the loaders. A subclass says where the pairs are (`find_pairs`), how LQs are made
(`dataset_options`) and its metric convention (`metric_y_channel`, `metric_crop_border`, read by the evaluation
code). Validation uses the first `val_max_images` test images.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from core.errors import DataError
from core.io import image_size, list_images
from data.datasets import PairedImageDataset
from data.lama_masks import LAMA_KINDS, lama_mask
from data.layouts import (
    SHOW,
    Pair,
    celebahq_images,
    div2k_pairs,
    folder_pairs,
    gopro_pairs,
    ntire_pairs,
    rain100h_pairs,
    single_folder,
)
from data.masks import MASK_KINDS, FolderMask, GeneratedMask
from data.samplers import EpochSeededSampler, ResumableLoader
from data.swap import SwapPairs
from data.synthetic import NoiseLQ
from data.verify import require_decodable, verify_images

log = logging.getLogger(__name__)


class PairedDataModule(L.LightningDataModule):
    """Shared settings and behaviour; subclasses override `find_pairs` and, if needed, `dataset_options`."""

    name = "paired"
    default_y_channel = False
    default_crop_border = 0

    def __init__(self, root: str | None = None, patch_size: int = 128, batch_size: int = 4,
                 num_workers: int = 4, val_batch_size: int = 1, test_batch_size: int = 1,
                 val_max_images: int | None = None, val_center_crop: int | None = None,
                 metric_y_channel: bool | None = None, metric_crop_border: int | None = None, scale: int = 1,
                 upsample_lq: bool = False, flips: bool | str = True, rot90: bool = True, check_files: bool = True,
                 verify: bool = True, train_root: str | None = None, test_root: str | None = None,
                 swap: float = 0.0) -> None:
        super().__init__()
        self.root = root
        self.swap = float(swap)  # training LQ/GT trade places with this probability (data.swap)
        self.train_root, self.test_root = train_root, test_root
        self.patch_size, self.scale, self.upsample_lq = int(patch_size), int(scale), bool(upsample_lq)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_batch_size, self.test_batch_size = int(val_batch_size), int(test_batch_size)
        self.val_max_images, self.val_center_crop = val_max_images, val_center_crop
        self.flips, self.rot90, self.check_files, self.verify = flips, rot90, check_files, bool(verify)
        self._verified = False
        self.metric_y_channel = self.default_y_channel if metric_y_channel is None else bool(metric_y_channel)
        self.metric_crop_border = (self.default_crop_border if metric_crop_border is None
                                   else int(metric_crop_border))
        self._pairs: dict[str, list[Pair]] = {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what subclasses provide ---------------------------------------------------------------------------
    def split_root(self, split: str) -> Path:
        """Folder searched for `split`: train_root / test_root when given, else root."""
        chosen = self.train_root if split == "train" else self.test_root
        chosen = chosen if chosen is not None else self.root
        if chosen is None:
            raise DataError(f"No dataset folder set for {self.name}: set data.root (or data.{split}_root).")
        return Path(chosen)

    def find_pairs(self, split: str) -> list[Pair]:
        raise NotImplementedError

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """Extra PairedImageDataset arguments (make_lq, mask_fn, gt_size)."""
        return {}

    def training_size(self, pair: Pair) -> tuple[int, int]:
        """GT size a training crop is taken from (the file's, unless the data module resizes)."""
        return image_size(pair.gt)

    # -- pairs and checks ----------------------------------------------------------------------------------
    def pairs_for(self, split: str) -> list[Pair]:
        """The pairs of "train" or "test" (found once, then cached)."""
        key = "train" if split == "train" else "test"
        if key not in self._pairs:
            self._pairs[key] = self.find_pairs(key)
        return self._pairs[key]

    def check_pairs(self, pairs: Sequence[Pair], train: bool) -> None:
        """Read every header: unreadable files, LQ sizes that do not match the GT, and training images smaller
        than the patch are reported together with the first offenders' names."""
        if train and len(pairs) < self.batch_size:
            raise DataError(f"{self.name}: only {len(pairs)} training images, fewer than data.batch_size="
                            f"{self.batch_size}: lower the batch size or add images.")
        if not self.check_files:
            return
        small, misfit = [], []
        for pair in pairs:
            gt_h, gt_w = image_size(pair.gt)
            if pair.lq is not None:
                expected = (gt_h // self.scale, gt_w // self.scale)
                lq_size = image_size(pair.lq)
                if lq_size != expected:
                    misfit.append(f"{pair.lq} is {lq_size[0]}x{lq_size[1]}, expected "
                                  f"{expected[0]}x{expected[1]}")
            if train:
                h, w = self.training_size(pair)
                if h < self.patch_size or w < self.patch_size:
                    small.append(f"{pair.gt} ({h}x{w})")
        problems = []
        if misfit:
            problems.append(f"{len(misfit)} LQ images do not match their GT size (x{self.scale}): "
                            f"{misfit[:SHOW]}; fix data.scale or the files")
        if small:
            problems.append(f"{len(small)} training images are smaller than the patch, data.patch_size="
                            f"{self.patch_size}: {small[:SHOW]}; lower data.patch_size or remove them")
        if problems:
            raise DataError(f"{self.name}: " + ". ".join(problems) + ".")

    def fit_files(self) -> list[Path]:
        """Every file a fit reads: LQ and GT of the training and validation pairs (subclasses add masks)."""
        pairs = [*self.pairs_for("train"), *self.pairs_for("test")[:self.val_max_images]]
        return [f for pair in pairs for f in (pair.lq, pair.gt) if f is not None]

    def prepare_data(self) -> None:
        # Lightning calls this in one process per node before setup() runs on every rank: the files are decoded
        # here once, and each rank's check in setup() then finds them in the cache. Errors are setup()'s to
        # report, on every rank alike.
        if self.verify:
            with contextlib.suppress(DataError):
                verify_images(self.fit_files())

    # -- datasets ------------------------------------------------------------------------------------------
    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      center_crop: int | None = None) -> Dataset:
        pairs = self.pairs_for(split)[:limit] if limit is not None else self.pairs_for(split)
        self.check_pairs(pairs, train)
        return PairedImageDataset(pairs, train, patch_size=self.patch_size, scale=self.scale,
                                  upsample_lq=self.upsample_lq, center_crop=center_crop, flips=self.flips,
                                  rot90=self.rot90, **self.dataset_options(train))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.verify and not self._verified:
            require_decodable(self.fit_files(), self.name)
            self._verified = True
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self.build_dataset("train", train=True)
            if self.swap:
                self.train_set = SwapPairs(self.train_set, self.swap)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self.build_dataset("test", train=False, limit=self.val_max_images,
                                              center_crop=self.val_center_crop)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self.build_dataset("test", train=False)
        self._warn_overlap()

    def _warn_overlap(self) -> None:
        if "train" in self._pairs and "test" in self._pairs:
            shared = {p.gt for p in self._pairs["train"]} & {p.gt for p in self._pairs["test"]}
            if shared:
                log.warning("%s: %d images are in both the training and the test split (e.g. %s): "
                            "set data.train_root / data.test_root to separate them.", self.name, len(shared),
                            sorted(shared)[0])

    # -- loaders -------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset | None, batch_size: int, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        workers = self.num_workers
        sampler = EpochSeededSampler(len(dataset)) if train else None
        # training: a loader whose position Lightning checkpoints, resumed at any step (data.samplers)
        loader_class = ResumableLoader if train else DataLoader
        # A private generator for the loader's own seed draws (one per iterator): they would otherwise consume
        # torch's global RNG, whose state the checkpoint restores for the training noise.
        return loader_class(dataset, batch_size=batch_size, sampler=sampler, drop_last=train, num_workers=workers,
                            persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.test_batch_size, train=False)


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------
class Rain100HDataModule(PairedDataModule):
    """Rain100H deraining (train: RainTrainH / Rain100H train; test: the 100 Rain100H test pairs). PSNR/SSIM
    on Y, no border crop, by default (the official code crops 4 px: set metric_crop_border=4 to match it)."""

    name = "rain100h"
    default_y_channel = True

    def find_pairs(self, split: str) -> list[Pair]:
        return rain100h_pairs(self.split_root(split), split)


class GoProDataModule(PairedDataModule):
    """GoPro motion deblurring with the `blur` or gamma-corrected `blur_gamma` inputs; RGB metrics."""

    name = "gopro"

    def __init__(self, root: str | None = None, blur: str = "blur", **options: Any) -> None:
        super().__init__(root, **options)
        self.blur = blur

    def find_pairs(self, split: str) -> list[Pair]:
        return gopro_pairs(self.split_root(split), split, blur=self.blur)


class DIV2KDataModule(PairedDataModule):
    """DIV2K bicubic SR (LR files when present, else MATLAB-bicubic LR on the fly). `upsample_lq=True`
    feeds the LR bicubic-upsampled to HR size (IR-SDE); False keeps the small LR (DiffIR). Y channel,
    border = scale."""

    name = "div2k"
    default_y_channel = True

    def __init__(self, root: str | None = None, scale: int = 4, upsample_lq: bool = False,
                 **options: Any) -> None:
        options.setdefault("metric_crop_border", scale)
        super().__init__(root, scale=scale, upsample_lq=upsample_lq, **options)

    def find_pairs(self, split: str) -> list[Pair]:
        return div2k_pairs(self.split_root(split), split, scale=self.scale)


class CelebAHQDataModule(PairedDataModule):
    """CelebA-HQ inpainting at `image_size`. Masks from `mask_root` (RePaint gt_keep_masks: mask_root/<kind>
    or mask_root itself; test image i gets mask i % count, training a random one), else generated ones
    (`generated_mask`: box | strokes | pixels, or LaMa's evaluation sets lama_thin_256 ... lama_thick_512, see
    data.lama_masks). `train_mask`: a generated kind for training only (e.g. "lama", LaMa's training mix, as
    DiffIR-inpainting trains), whatever the evaluation masks are; None: training draws from the same source."""

    name = "celebahq"

    def __init__(self, root: str | None = None, mask_root: str | None = None, mask_kind: str = "thin",
                 generated_mask: str = "box", split_ranges: Mapping[str, Sequence[int]] | None = None,
                 train_list_file: str | None = None, test_list_file: str | None = None, image_size: int = 256,
                 train_mask: str | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        for key, kind in (("generated_mask", generated_mask), ("train_mask", train_mask)):
            if kind is not None and kind not in (*MASK_KINDS, *LAMA_KINDS):
                raise DataError(f"data.{key}='{kind}': use one of {', '.join((*MASK_KINDS, *LAMA_KINDS))}.")
        self.train_mask = train_mask
        if self.patch_size > image_size:
            raise DataError(f"data.patch_size={self.patch_size} is larger than data.image_size={image_size}: "
                            f"lower the patch size.")
        self.mask_root, self.mask_kind, self.generated_mask = mask_root, mask_kind, generated_mask
        self.split_ranges = dict(split_ranges) if split_ranges is not None else None
        self.list_files = {"train": train_list_file, "test": test_list_file}
        self.image_size = int(image_size)

    def find_pairs(self, split: str) -> list[Pair]:
        return celebahq_images(self.split_root(split), split, self.split_ranges, self.list_files[split])

    def training_size(self, pair: Pair) -> tuple[int, int]:
        return self.image_size, self.image_size

    def fit_files(self) -> list[Path]:
        return [*super().fit_files(), *(self.mask_files() if self.mask_root else ())]

    def mask_files(self) -> tuple[Path, ...]:
        root = Path(self.mask_root)  # type: ignore[arg-type]
        for folder in (root / self.mask_kind, root):
            if folder.is_dir() and list_images(folder):
                return tuple(list_images(folder))
        raise DataError(f"No mask images in {root / self.mask_kind} or {root}: set data.mask_root to "
                        f"RePaint's gt_keep_masks folder (with thin/, thick/, ex64/, genhalf/...) and "
                        f"data.mask_kind.")

    def dataset_options(self, train: bool) -> dict[str, Any]:
        if train and self.train_mask:
            masks = self.generated_masks(self.train_mask)
        else:
            masks = FolderMask(self.mask_files()) if self.mask_root else self.generated_masks(self.generated_mask)
        return {"mask_fn": masks, "gt_size": (self.image_size, self.image_size)}

    @staticmethod
    def generated_masks(kind: str):
        """The mask maker f(h, w, seed) of a generated kind (data.masks or data.lama_masks)."""
        return lama_mask(kind) if kind in LAMA_KINDS else GeneratedMask(kind)


def clean_images(root: Path, split: str) -> list[Pair]:
    """Clean GT images of a split: DIV2K HR folders, else root/<split>/, else every image in root."""
    try:
        return [Pair(lq=None, gt=p.gt, name=p.name) for p in div2k_pairs(root, split)]
    except DataError:
        pass
    aliases = ("train", "trainHR", "train_HR") if split == "train" else ("test", "val", "valid", "testHR")
    for alias in aliases:
        if (root / alias).is_dir():
            return single_folder(root / alias)
    return single_folder(root)


class DenoisingDataModule(PairedDataModule):
    """Gaussian denoising: LQ = GT + N(0, (sigma/255)^2), a fixed seed per test image, unclipped. Clean images
    from DIV2K (train HR / valid HR) or any folder (root/train + root/test, or `test_root` e.g. McMaster)."""

    name = "denoising"

    def __init__(self, root: str | None = None, sigma: float = 25.0, **options: Any) -> None:
        super().__init__(root, **options)
        self.sigma = float(sigma)

    def find_pairs(self, split: str) -> list[Pair]:
        return clean_images(self.split_root(split), split)

    def dataset_options(self, train: bool) -> dict[str, Any]:
        return {"make_lq": NoiseLQ(self.sigma)}


class NTIREDataModule(PairedDataModule):
    """NTIRE 2023 paired LQ/GT folders: task "dehaze" (HR non-homogeneous dehazing, latent Refusion's paper
    task) or "shadow" (shadow removal); layouts in data.layouts.ntire_pairs. RGB metrics, no border."""

    name = "ntire"

    def __init__(self, root: str | None = None, task: str = "dehaze", **options: Any) -> None:
        super().__init__(root, **options)
        self.task = task
        self.name = f"ntire-{task}"

    def find_pairs(self, split: str) -> list[Pair]:
        return ntire_pairs(self.split_root(split), split, self.task)


class FolderPairDataModule(PairedDataModule):
    """Any two folders of images paired by name. The test split uses test_lq_dir/test_gt_dir when given, else
    the same folders as training. Metric convention: RGB and no border unless set."""

    name = "folders"

    def __init__(self, lq_dir: str, gt_dir: str, test_lq_dir: str | None = None,
                 test_gt_dir: str | None = None, **options: Any) -> None:
        super().__init__(None, **options)
        self.dirs = {"train": (lq_dir, gt_dir), "test": (test_lq_dir or lq_dir, test_gt_dir or gt_dir)}

    def find_pairs(self, split: str) -> list[Pair]:
        lq_dir, gt_dir = self.dirs[split]
        return folder_pairs(lq_dir, gt_dir)


class DemoDataModule(PairedDataModule):
    """The built-in demo (scikit-image photographs, nothing downloaded): see data.demo. Metrics in RGB, with a
    border of 4 for "sr"."""

    name = "demo"

    def __init__(self, task: str = "rain", patch_size: int = 64, image_size: int = 128,
                 train_samples: int = 256, batch_size: int = 4, num_workers: int = 0, source: str = "photos",
                 **options: Any) -> None:
        from data.demo import SCALE, TASKS

        if task not in TASKS:
            raise DataError(f"data.task='{task}' is not a demo task: use one of {', '.join(TASKS)}.")
        if task == "sr":
            options.setdefault("metric_crop_border", SCALE)
        super().__init__(None, patch_size=patch_size, batch_size=batch_size, num_workers=num_workers,
                         **options)
        self.task, self.image_size, self.train_samples = task, int(image_size), int(train_samples)
        self.source = source
        self.name = f"demo-{task}" if source == "photos" else f"demo-{source}-{task}"

    def fit_files(self) -> list[Path]:
        return []  # in memory: nothing to verify

    def pairs_for(self, split: str) -> list[Pair]:
        raise DataError("The demo data live in memory and have no files: use data.demo.export_demo(folder) "
                        "to write them as PNGs.")

    def build_dataset(self, split: str, train: bool, limit: int | None = None,
                      center_crop: int | None = None) -> Dataset:
        from data.demo import build_demo_split

        dataset = build_demo_split(self.task, split, patch_size=self.patch_size, image_size=self.image_size,
                                   train_samples=self.train_samples, max_images=limit, source=self.source)
        if train and len(dataset) < self.batch_size:
            raise DataError(f"demo: train_samples={len(dataset)} is smaller than data.batch_size="
                            f"{self.batch_size}.")
        return dataset
