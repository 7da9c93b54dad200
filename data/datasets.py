"""The one paired-image Dataset every data module uses.

Items are `{"lq": float CxHxW, "gt": float CxHxW, "name": str, "index": int}` plus `"mask"` (1xHxW, 1 = known)
for inpainting. Values are in [0, 1], except where a degradation is additive by definition (Gaussian noise) or
the LQ is bicubic-upsampled (overshoot), which are left unclipped as in the official code.

Randomness: at test time every random choice (noise, mask) is seeded by the item index, so each evaluation
sees the same inputs. In training, each process (main or DataLoader worker) reseeds its generators from
`torch.initial_seed()`, which differs per worker and per epoch, and follows `seed_everything`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import DataError
from core.io import read_image, to_tensor
from data.layouts import Pair
from data.masks import apply_mask
from data.resize import imresize, modcrop, upsample_bicubic
from data.synthetic import BicubicDownLQ
from data.transforms import center_crop_pair, check_patch_scale, paired_train_transform

LQMaker = Callable[[np.ndarray, int], np.ndarray]  # (gt HxWx3 float, seed) -> lq
MaskMaker = Callable[[int, int, int], np.ndarray]  # (h, w, seed) -> HxW mask, 1 = known


def read_float(path: str | Path) -> np.ndarray:
    """uint8 file -> float32 HxWx3 in [0, 1]."""
    return read_image(path).astype(np.float32) / 255.0


class PairedImageDataset(Dataset):
    """LQ/GT pairs from files, with the LQ optionally made on the fly.

    Args:
        pairs: the samples (see data.layouts). `lq=None` means the LQ is made from the GT: by `make_lq`, else
            by MATLAB bicubic x1/scale when scale > 1, else it is a copy of the GT (unconditional prior).
        train: random crop/flip/rotation and fresh randomness, or whole images with index-seeded randomness.
        patch_size: GT crop size in training.
        scale: SR factor (LQ files are GT/scale; test GTs are mod-cropped to a multiple of scale).
        make_lq: callable (gt, seed) -> lq for synthetic degradations (applied after the training crop).
        mask_fn: callable (h, w, seed) -> mask; the LQ is then masked (missing pixels white) and "mask" added.
        upsample_lq: bicubic-upsample the LR to GT size (IR-SDE's mu for SR), after the crop as the official.
        center_crop: fixed centre crop of this GT size at test/validation time.
        gt_size: resize every GT to (h, w) first (MATLAB bicubic), e.g. CelebA-HQ 1024 -> 256.
    """

    def __init__(self, pairs: Sequence[Pair], train: bool, patch_size: int = 128, scale: int = 1,
                 make_lq: LQMaker | None = None, mask_fn: MaskMaker | None = None, upsample_lq: bool = False,
                 center_crop: int | None = None, gt_size: tuple[int, int] | None = None, flips: bool | str = True,
                 rot90: bool = True) -> None:
        check_patch_scale(patch_size, scale)
        self.pairs = list(pairs)
        self.train, self.patch_size, self.scale = train, int(patch_size), int(scale)
        self.make_lq = make_lq if make_lq is not None else (BicubicDownLQ(scale) if scale > 1 else None)
        self.mask_fn, self.upsample_lq = mask_fn, upsample_lq
        self.center_crop = center_crop
        self.gt_size = tuple(gt_size) if gt_size is not None else None
        self.transform = paired_train_transform(patch_size, scale=scale, flips=flips, rot90=rot90)
        # The training transform for GT-only samples: the LQ is derived after the crop, so no LR-aware crop.
        self.gt_transform = paired_train_transform(patch_size, scale=1, flips=flips, rot90=rot90)

    def __len__(self) -> int:
        return len(self.pairs)

    # -- loading -------------------------------------------------------------------------------------------
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """GT, LQ (None if it is to be made) and name of sample `index`, as float32 HxWx3 arrays."""
        pair = self.pairs[index]
        return read_float(pair.gt), (read_float(pair.lq) if pair.lq is not None else None), pair.name

    @staticmethod
    def _draw_seed() -> int:
        # Without an EpochSeededSampler: torch's global generator (distinct per DataLoader worker).
        return int(torch.randint(0, 2**31 - 1, ()).item())

    # -- one item ------------------------------------------------------------------------------------------
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object]:
        # key: an index, or (index, sample_seed) from data.samplers.EpochSeededSampler (resume-exact training)
        index, sample_seed = key if isinstance(key, tuple) else (key, None)
        gt, lq, name = self.load(index)
        if self.gt_size is not None and gt.shape[:2] != self.gt_size:
            gt = np.clip(imresize(gt, size=self.gt_size), 0.0, 1.0)
        if self.train:
            seed = self._draw_seed() if sample_seed is None else int(sample_seed)
            transform = self.transform if lq is not None else self.gt_transform
            transform.set_random_seed(seed)
            out = transform(gt, lq, name=name)
            gt, lq = out["gt"], out["lq"]
        else:
            seed = index
            gt, lq = self._whole_image(gt, lq, name)
        mask = self.mask_fn(gt.shape[0], gt.shape[1], seed) if self.mask_fn is not None else None
        if lq is None:
            lq = self.make_lq(gt, seed) if self.make_lq is not None else gt.copy()
        if mask is not None:
            lq = apply_mask(lq, mask)
        lq_t = to_tensor(np.ascontiguousarray(lq, dtype=np.float32))
        if self.upsample_lq and self.scale > 1:
            lq_t = upsample_bicubic(lq_t, self.scale)
        item: dict[str, object] = {"lq": lq_t, "gt": to_tensor(np.ascontiguousarray(gt, dtype=np.float32)),
                                   "name": name, "index": index}
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return item

    def _whole_image(self, gt: np.ndarray, lq: np.ndarray | None,
                     name: str) -> tuple[np.ndarray, np.ndarray | None]:
        if self.scale > 1:
            gt = modcrop(gt, self.scale)
            if lq is not None and lq.shape[:2] != (gt.shape[0] // self.scale, gt.shape[1] // self.scale):
                raise DataError(f"LR image of {name} is {lq.shape[0]}x{lq.shape[1]}, expected its GT size "
                                f"{gt.shape[0]}x{gt.shape[1]} / {self.scale}: check data.scale or the LR "
                                f"folder.")
        elif lq is not None and lq.shape[:2] != gt.shape[:2]:
            raise DataError(f"LQ and GT of {name} differ in size ({lq.shape[0]}x{lq.shape[1]} vs "
                            f"{gt.shape[0]}x{gt.shape[1]}): the pair is not aligned; fix or remove it.")
        if self.center_crop is not None:
            gt, lq, _ = center_crop_pair(gt, lq, size=self.center_crop, scale=self.scale)
        return gt, lq


class InMemoryImageDataset(PairedImageDataset):
    """The same items from images already in memory (float32 HxWx3 GTs with names), e.g. the built-in demo.

    With `length` larger than the number of images (training), item i uses image i % count, each time with a
    new random crop, so an epoch can hold many patches of a few photographs."""

    def __init__(self, images: Sequence[tuple[str, np.ndarray]], train: bool, length: int | None = None,
                 **options: object) -> None:
        names = [name for name, _ in images]
        super().__init__([], train, **options)  # type: ignore[arg-type]
        self.images = [np.ascontiguousarray(img, dtype=np.float32) for _, img in images]
        self.names = names
        self.length = length if length is not None else len(self.images)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        which = index % len(self.images)
        return self.images[which].copy(), None, self.names[which]
