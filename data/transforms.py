"""Paired training augmentation (identical crop, flips and 90-degree rotations for LQ, GT and mask) and the
fixed centre crop used for validation.

Arrays are numpy HxWxC float (images) and HxW float (masks). The official IR-SDE augmentation is a random
crop, then a horizontal flip, a vertical flip and a transpose, each with probability 1/2; HorizontalFlip +
VerticalFlip + RandomRotate90 draws from the same 8 dihedral transforms, uniformly.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network at import
import albumentations as A  # noqa: E402

from core.errors import DataError  # noqa: E402


def check_patch_scale(patch_size: int, scale: int) -> None:
    """A GT patch must cover whole LR pixels."""
    if scale < 1 or patch_size % scale:
        raise DataError(f"data.patch_size={patch_size} is not a multiple of the SR scale {scale}: "
                        f"choose a patch size divisible by {scale}.")


def _too_small(name: str, shape: tuple[int, ...], patch: int, what: str = "image") -> DataError:
    return DataError(f"Training {what} {name} is {shape[0]}x{shape[1]}, smaller than the {patch}x{patch} "
                     f"patch (data.patch_size): lower data.patch_size or remove this image from the training "
                     f"set.")



class PairedTransform:
    """Random crop + flips/rotations applied identically to GT, LQ (optional) and mask (optional).

    With scale > 1 the LQ is the LR image: a patch of patch_size // scale is cut at (y, x) in the LQ and the
    GT patch at (y * scale, x * scale), then the same flips/rotations are applied to both.
    flips: True (horizontal and vertical), "horizontal" (mirror only: faces stay upright) or False.
    """

    def __init__(self, patch_size: int, scale: int = 1, flips: bool | str = True, rot90: bool = True,
                 seed: int | None = None) -> None:
        check_patch_scale(patch_size, scale)
        self.patch_size, self.scale = int(patch_size), int(scale)
        if flips not in (True, False, "horizontal"):
            raise DataError(f"data.flips={flips!r}: use true, false or horizontal")
        geometric = [A.HorizontalFlip(p=0.5)] if flips else []
        geometric += [A.VerticalFlip(p=0.5)] if flips is True else []
        geometric += [A.RandomRotate90(p=1.0)] if rot90 else []
        # LQ is a second "image" target so it gets exactly the same parameters as GT (the "image").
        self._same_size = A.Compose([A.RandomCrop(self.patch_size, self.patch_size), *geometric],
                                    additional_targets={"lq": "image"}, seed=seed)
        # For LR/HR pairs only flips and rotations go through albumentations: they do not depend on the size.
        self._any_size = A.Compose(geometric, additional_targets={"lq": "image"}, is_check_shapes=False,
                                   seed=seed)
        self._rng = np.random.default_rng(seed)

    def set_random_seed(self, seed: int) -> None:
        """Reseed all randomness (called once per DataLoader worker so workers do not repeat each other)."""
        self._same_size.set_random_seed(seed)
        self._any_size.set_random_seed(seed)
        self._rng = np.random.default_rng(seed)

    def __call__(self, gt: np.ndarray, lq: np.ndarray | None = None, mask: np.ndarray | None = None,
                 name: str = "") -> dict[str, np.ndarray | None]:
        patch = self.patch_size
        if gt.shape[0] < patch or gt.shape[1] < patch:
            raise _too_small(name, gt.shape, patch)
        if lq is not None and self.scale == 1 and lq.shape[:2] != gt.shape[:2]:
            raise DataError(f"LQ and GT of {name} differ in size ({lq.shape[0]}x{lq.shape[1]} vs "
                            f"{gt.shape[0]}x{gt.shape[1]}): the pair is not aligned; fix or remove it.")
        if self.scale == 1:
            targets = {"image": gt}
            if lq is not None:
                targets["lq"] = lq
            if mask is not None:
                targets["mask"] = mask

            out = self._same_size(**targets)
            return {"gt": out["image"], "lq": out.get("lq"), "mask": out.get("mask")}
        return self._scaled(gt, lq, mask, name)

    def _scaled(self, gt: np.ndarray, lq: np.ndarray | None, mask: np.ndarray | None,
                name: str) -> dict[str, np.ndarray | None]:
        scale, patch = self.scale, self.patch_size
        lr_patch = patch // scale
        if lq is not None:
            lr_h, lr_w = lq.shape[:2]
            if lr_h * scale > gt.shape[0] or lr_w * scale > gt.shape[1] or lr_h < gt.shape[0] // scale \
                    or lr_w < gt.shape[1] // scale:
                raise DataError(f"LR image of {name} is {lr_h}x{lr_w} but its GT is "
                                f"{gt.shape[0]}x{gt.shape[1]}: expected GT size / {scale}. Check data.scale "
                                f"or the LR folder.")

            if lr_h < lr_patch or lr_w < lr_patch:
                raise _too_small(name, lq.shape, lr_patch, what=f"LR image (x{scale})")
            top = int(self._rng.integers(0, lr_h - lr_patch + 1))
            left = int(self._rng.integers(0, lr_w - lr_patch + 1))
            lq = lq[top:top + lr_patch, left:left + lr_patch]
            top, left = top * scale, left * scale
        else:
            top = int(self._rng.integers(0, gt.shape[0] - patch + 1))
            left = int(self._rng.integers(0, gt.shape[1] - patch + 1))
        gt = gt[top:top + patch, left:left + patch]
        targets = {"image": gt, **({"lq": lq} if lq is not None else {})}
        if mask is not None:
            targets["mask"] = mask[top:top + patch, left:left + patch]
        out = self._any_size(**targets)
        return {"gt": out["image"], "lq": out.get("lq"), "mask": out.get("mask")}


def paired_train_transform(patch_size: int, scale: int = 1, flips: bool | str = True, rot90: bool = True,
                           seed: int | None = None) -> PairedTransform:
    """The training augmentation: random crop (LR-aware when scale > 1), h/v flips, 90-degree turns."""
    return PairedTransform(patch_size, scale=scale, flips=flips, rot90=rot90, seed=seed)


def center_crop_pair(gt: np.ndarray, lq: np.ndarray | None = None, mask: np.ndarray | None = None,
                     size: int = 256, scale: int = 1,
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Centre crop of `size` (GT pixels) for validation, placed as the official loader does: the LR window
    starts at (H // 2 - lr_size // 2) and the GT window at scale times that. A shorter side is kept whole."""
    check_patch_scale(size, scale)
    lr_size = size // scale
    ref_h, ref_w = (lq.shape[:2] if (lq is not None and scale > 1) else (gt.shape[0] // scale,
                                                                         gt.shape[1] // scale))
    crop_h, crop_w = min(lr_size, ref_h), min(lr_size, ref_w)
    top, left = ref_h // 2 - crop_h // 2, ref_w // 2 - crop_w // 2
    gt_box = (slice(top * scale, (top + crop_h) * scale), slice(left * scale, (left + crop_w) * scale))
    if lq is not None:
        lq = lq[top:top + crop_h, left:left + crop_w] if scale > 1 else lq[gt_box]
    return gt[gt_box], lq, (mask[gt_box] if mask is not None else None)
