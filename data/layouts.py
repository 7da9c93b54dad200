"""Finding LQ/GT pairs in the folder trees the datasets are distributed in.

Each finder auto-detects the layout under `root` and returns `Pair`s in natural order of the GT names. It
raises DataError listing the layouts it looked for when none matches, when a folder is empty, or when LQ and
GT names do not pair up (with the first few mismatches). Splits are "train" and "test" ("val" means "test").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError
from core.io import list_images

SHOW = 5  # how many offending names an error message lists


@dataclass(frozen=True)
class Pair:
    """One sample: the degraded input (None when made on the fly), the ground truth and a display name."""

    lq: Path | None
    gt: Path
    name: str


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def _split(split: str) -> str:
    key = split.lower()
    if key in ("train", "training"):
        return "train"
    if key in ("test", "val", "valid", "validation"):
        return "test"
    raise DataError(f"Unknown data split '{split}': use 'train' or 'test'.")


def _existing_root(root: str | Path, dataset: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{dataset} folder not found: {path}. Set data.root to the folder holding the "
                        f"dataset.")
    return path


def _child(base: Path, name: str) -> Path | None:
    """Sub-folder `name` of `base` (a relative path, matched case-insensitively part by part), or None."""
    current = base
    for part in Path(name).parts:
        direct = current / part
        if direct.is_dir():
            current = direct
            continue
        if not current.is_dir():
            return None
        matches = [p for p in current.iterdir() if p.is_dir() and p.name.lower() == part.lower()]
        if not matches:
            return None
        current = matches[0]
    return current


def _first_child(base: Path, names: Sequence[str]) -> Path | None:
    return next((d for d in (_child(base, n) for n in names) if d is not None), None)


def _candidates(root: Path, aliases: Sequence[str]) -> list[Path]:
    """root/<alias> for each alias that exists, then root itself (the user may point at the split folder)."""
    found = [c for c in (_child(root, a) for a in aliases) if c is not None]
    return list(dict.fromkeys([*found, root]))


_PREFIX = re.compile(r"^(norain|no_rain|rain|clean|blur|sharp|input|target|gt|lq|hr|lr)[-_]", re.IGNORECASE)
_SUFFIX = re.compile(r"((?<=[\d_])x\d+|[-_](norain|rain|clean|gt|lq|hr|lr|blur|sharp|input|target))$",
                     re.IGNORECASE)


def pair_key(stem: str) -> str:
    """Name used to pair files whose stems differ only by dataset conventions: 'rain-1'/'norain-1',
    '0001x4'/'0001', 'img_rain'/'img_gt', '001'/'1' all give the same key."""
    key = _PREFIX.sub("", stem.lower())
    previous = None
    while previous != key:
        previous, key = key, _SUFFIX.sub("", key)
    key = key.strip("-_ ")
    return str(int(key)) if key.isdigit() else key


def _by_key(files: Iterable[Path], key: Callable[[str], str], folder: Path) -> dict[str, Path]:
    table: dict[str, Path] = {}
    for f in files:
        k = key(f.stem)
        if k in table:
            raise DataError(f"{table[k].name} and {f.name} in {folder} have the same name once normalised "
                            f"('{k}'), so pairing is ambiguous: rename or remove one of them.")
        table[k] = f
    return table


def _mismatch_error(lq_dir: Path, gt_dir: Path, lq: dict[str, Path], gt: dict[str, Path]) -> DataError:
    lonely_lq = [lq[k].name for k in lq if k not in gt][:SHOW]
    lonely_gt = [gt[k].name for k in gt if k not in lq][:SHOW]
    return DataError(
        f"LQ and GT images do not pair up: {len(lq)} in {lq_dir}, {len(gt)} in {gt_dir}. "
        f"LQ without GT (first {SHOW}): {lonely_lq or 'none'}; "
        f"GT without LQ (first {SHOW}): {lonely_gt or 'none'}. "
        f"Names must match exactly or after dataset prefixes/suffixes (rain-/norain-, x4, _gt...): "
        f"rename, remove the extra files or point at the right folders.")


def pair_files(lq_files: Sequence[Path], gt_files: Sequence[Path], lq_dir: Path, gt_dir: Path,
               prefix: str = "") -> list[Pair]:
    """Pair two lists of files by exact stem, else by `pair_key`; raise with the mismatches if neither."""
    for key in (lambda s: s, pair_key):
        lq, gt = _by_key(lq_files, key, lq_dir), _by_key(gt_files, key, gt_dir)
        if lq.keys() == gt.keys():
            return [Pair(lq=lq[k], gt=path, name=prefix + path.stem) for k, path in gt.items()]
    raise _mismatch_error(lq_dir, gt_dir, lq, gt)


def _nonempty(folder: Path) -> list[Path]:
    files = list_images(folder)
    if not files:
        raise DataError(f"No images in {folder}: the folder is empty or holds no .png/.jpg/... files. "
                        f"Fill it or point the data settings elsewhere.")
    return files


def _not_found(dataset: str, split: str, root: Path, searched: Sequence[Path], layouts: Sequence[str],
               split_folders: Sequence[str] = ()) -> DataError:
    where = ", ".join(str(p) for p in searched)
    listed = "; ".join(layouts)
    tried = f" (split folders recognised: {', '.join(split_folders)})" if split_folders else ""
    return DataError(f"No {dataset} layout found for split '{split}' under {root}. Looked in: {where}"
                     f"{tried}. "
                     f"Layouts looked for: {listed}. Point data.root at the dataset folder, or use the "
                     f"generic folder-pair data module with data.lq_dir and data.gt_dir.")


# ------------------------------------------------------------------------------------------------
# Generic
# ------------------------------------------------------------------------------------------------
def folder_pairs(lq_dir: str | Path, gt_dir: str | Path) -> list[Pair]:
    """Pair the images of two folders by name (exact stem, or after stripping common prefixes/suffixes)."""
    lq_dir, gt_dir = Path(lq_dir), Path(gt_dir)
    return pair_files(_nonempty(lq_dir), _nonempty(gt_dir), lq_dir, gt_dir)


def single_folder(root: str | Path) -> list[Pair]:
    """Clean images only (unconditional prior, synthetic degradations): Pair(lq=None, gt=file, name=stem)."""
    folder = Path(root)
    return [Pair(lq=None, gt=f, name=f.stem) for f in _nonempty(folder)]


_DIR_PAIRS = {
    "rain": ("rain", "norain"),
    "input": ("input", "target"),
    "lq": ("LQ", "GT"),
    "blur": ("blur", "sharp"),
}


def _dir_pair_layout(base: Path, kinds: Sequence[str]) -> list[Pair] | None:
    for kind in kinds:
        lq_name, gt_name = _DIR_PAIRS[kind]
        lq_dir, gt_dir = _child(base, lq_name), _child(base, gt_name)
        if lq_dir is not None and gt_dir is not None:
            return folder_pairs(lq_dir, gt_dir)
    return None


# ------------------------------------------------------------------------------------------------
# Rain100H
# ------------------------------------------------------------------------------------------------
RAIN_SPLITS = {
    "train": ("train/Rain100H", "train/RainTrainH", "RainTrainH", "trainH", "rain/trainH", "Rain100H/train",
              "train"),
    "test": ("test/Rain100H", "Rain100H/test", "Rain100H", "testH", "rain/testH", "test"),
}
RAIN_LAYOUTS = ("{rain,norain}/ (rain-N / norain-N or identical names)", "{input,target}/", "{LQ,GT}/",
                "one folder of rain-N.png + norain-N.png")


def _rain_single_folder(base: Path) -> list[Pair] | None:
    files = list_images(base)
    gt = [f for f in files if f.stem.lower().startswith(("norain-", "norain_"))]
    lq = [f for f in files if f.stem.lower().startswith(("rain-", "rain_"))]
    if not gt or not lq:
        return None
    return pair_files(lq, gt, base, base)


def rain100h_pairs(root: str | Path, split: str) -> list[Pair]:
    """Rain100H / RainTrainH pairs. Split folders tried, in order (case-insensitive), then root itself:
    train: train/Rain100H, train/RainTrainH, RainTrainH, trainH, rain/trainH, Rain100H/train, train;
    test: test/Rain100H, Rain100H/test, Rain100H, testH, rain/testH, test.
    In each: {rain,norain}/, {input,target}/, {LQ,GT}/, or one folder of rain-N + norain-N files."""
    split, base_root = _split(split), _existing_root(root, "Rain100H")
    searched = _candidates(base_root, RAIN_SPLITS[split])
    for base in searched:
        pairs = _dir_pair_layout(base, ("rain", "input", "lq"))
        if pairs is None:
            pairs = _rain_single_folder(base)
        if pairs is not None:
            return pairs
    raise _not_found("Rain100H", split, base_root, searched, RAIN_LAYOUTS, RAIN_SPLITS[split])


# ------------------------------------------------------------------------------------------------
# GoPro
# ------------------------------------------------------------------------------------------------
GOPRO_FLAT_SPLITS = {"train": ("train/GoPro", "GoPro/train", "train"),
                     "test": ("test/GoPro", "GoPro/test", "test")}
GOPRO_LAYOUTS = ("GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/", "<split>/{input,target}/",
                 "<split>/{blur,sharp}/", "<split>/{LQ,GT}/")


def _gopro_scenes(split_dir: Path, blur: str) -> list[Pair] | None:
    scenes = [d for d in sorted(split_dir.iterdir()) if d.is_dir() and _child(d, "sharp") is not None]
    if not scenes or _child(split_dir, "sharp") is not None:
        return None
    pairs: list[Pair] = []
    for scene in scenes:
        blur_dir = _child(scene, blur)
        if blur_dir is None:
            raise DataError(f"GoPro scene {scene} has a sharp/ folder but no {blur}/ folder: the download is "
                            f"incomplete, or set data.blur to a version that exists (blur or blur_gamma).")
        sharp_dir = _child(scene, "sharp")
        assert sharp_dir is not None  # scenes were chosen for having one
        pairs += pair_files(_nonempty(blur_dir), _nonempty(sharp_dir), blur_dir, sharp_dir,
                            prefix=f"{scene.name}/")
    return pairs


def gopro_pairs(root: str | Path, split: str, blur: str = "blur") -> list[Pair]:
    """GoPro pairs from GOPRO_Large/{train,test}/<scene>/{blur|blur_gamma, sharp}/ (root = GOPRO_Large or its
    parent; names '<scene>/<file>'), or a flat <split>/{input,target}, {blur,sharp} or {LQ,GT} layout."""
    if blur not in ("blur", "blur_gamma"):
        raise DataError(f"data.blur='{blur}' is not a GoPro version: use 'blur' or 'blur_gamma'.")
    split, base_root = _split(split), _existing_root(root, "GoPro")
    searched: list[Path] = []
    for top in (base_root, _child(base_root, "GOPRO_Large"), _child(base_root, "GoPro_Large")):
        split_dir = _child(top, split) if top is not None else None
        if split_dir is not None:
            searched.append(split_dir)
            pairs = _gopro_scenes(split_dir, blur)
            if pairs is not None:
                return pairs
    for base in _candidates(base_root, GOPRO_FLAT_SPLITS[split]):
        searched.append(base)
        pairs = _dir_pair_layout(base, ("input", "blur", "lq"))
        if pairs is not None:
            if blur != "blur":
                raise DataError(f"data.blur='{blur}' but {base} holds a single blurred version (flat "
                                f"layout): set data.blur=blur, or use the GOPRO_Large scene folders.")

            return pairs
    raise _not_found("GoPro", split, base_root, list(dict.fromkeys(searched)), GOPRO_LAYOUTS,
                     (split, *GOPRO_FLAT_SPLITS[split]))


# ------------------------------------------------------------------------------------------------
# DIV2K
# ------------------------------------------------------------------------------------------------
def div2k_pairs(root: str | Path, split: str, scale: int = 4) -> list[Pair]:
    """DIV2K_{train,valid}_HR/0001.png with DIV2K_{train,valid}_LR_bicubic/X{scale}/0001x{scale}.png (root or
    root/DIV2K). Without the LR folder, pairs have lq=None and the LR is made on the fly (MATLAB bicubic)."""
    split, base_root = _split(split), _existing_root(root, "DIV2K")
    tag = "train" if split == "train" else "valid"
    searched: list[Path] = []
    for base in (c for c in (base_root, _child(base_root, "DIV2K")) if c is not None):
        searched.append(base)
        hr_dir = _child(base, f"DIV2K_{tag}_HR")
        if hr_dir is None:
            continue
        lr_name = f"DIV2K_{tag}_LR_bicubic"
        # The official zips unpack to DIV2K_<tag>_LR_bicubic/X4/; some mirrors add a DIV2K_..._X4/ wrapper.
        lr_options = (f"{lr_name}/X{scale}", f"{lr_name}_X{scale}/{lr_name}/X{scale}", f"{lr_name}_X{scale}")
        lr_dir = _first_child(base, lr_options)
        if lr_dir is None:
            return single_folder(hr_dir)
        return folder_pairs(lr_dir, hr_dir)
    raise _not_found("DIV2K", split, base_root, searched,
                     (f"DIV2K_{tag}_HR/ (+ optional DIV2K_{tag}_LR_bicubic/X{scale}/)",))


# ------------------------------------------------------------------------------------------------
# CelebA-HQ
# ------------------------------------------------------------------------------------------------
CELEBA_DEFAULT_RANGES = {"train": (0, 27999), "test": (28000, 29999)}
CELEBA_SPLIT_FOLDERS = {"train": ("data256x256/trainHQ", "trainHQ", "train"),
                        "test": ("data256x256/testHQ", "testHQ", "test")}
CELEBA_IMAGE_FOLDERS = ("CelebA-HQ-img", "celeba_hq_256", "CelebAMask-HQ/CelebA-HQ-img", "celeba_hq",
                        "images")


def _read_list_file(list_file: str | Path) -> list[str]:
    path = Path(list_file)
    if not path.is_file():
        raise DataError(f"Split list file not found: {path}. Fix the list-file setting or remove it.")
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _select_listed(files: list[Path], names: list[str], list_file: str | Path) -> list[Pair]:
    by_stem = {f.stem: f for f in files}
    by_name = {f.name: f for f in files}
    chosen, missing = [], []
    for name in names:
        hit = by_name.get(name) or by_stem.get(Path(name).stem)
        (chosen.append(hit) if hit is not None else missing.append(name))
    if missing:
        raise DataError(f"{len(missing)} names in {list_file} are not images of the folder, e.g. "
                        f"{missing[:SHOW]}: fix the list or the data.root.")
    return [Pair(lq=None, gt=f, name=f.stem) for f in chosen]


def _select_range(files: list[Path], folder: Path, split: str, bounds: tuple[int, int]) -> list[Pair]:
    numeric = all(f.stem.isdigit() for f in files)
    # CelebA-HQ files are numbered (0.jpg or 00000.jpg): use the number; otherwise the natural-order position.
    index = [int(f.stem) for f in files] if numeric else list(range(len(files)))
    first, last = int(bounds[0]), int(bounds[1])
    chosen = [Pair(lq=None, gt=f, name=f.stem) for f, i in zip(files, index) if first <= i <= last]
    if not chosen:
        raise DataError(f"No image of {folder} has an index in [{first}, {last}] for split '{split}' "
                        f"(indices {min(index)}..{max(index)}): set data.split_ranges or a list file.")

    return chosen


def celebahq_images(root: str | Path, split: str, split_ranges: Mapping[str, Sequence[int]] | None = None,
                    list_file: str | Path | None = None) -> list[Pair]:
    """CelebA-HQ faces as GT-only pairs. Pre-split folders (data256x256/{trainHQ,testHQ}, {train,test}) are
    used as they are; otherwise one image folder (root, or root/CelebA-HQ-img, celeba_hq_256, ...) is split by
    index ranges (inclusive; default 0-27999 train, 28000-29999 test) or by a list file of names."""

    split, base_root = _split(split), _existing_root(root, "CelebA-HQ")
    split_dir = _first_child(base_root, CELEBA_SPLIT_FOLDERS[split])
    if split_dir is not None and list_file is None:
        return single_folder(split_dir)
    searched = [c for c in (_child(base_root, a) for a in CELEBA_IMAGE_FOLDERS) if c is not None]
    searched.append(base_root)
    folder = next((c for c in searched if list_images(c)), None)
    if folder is None:
        raise _not_found("CelebA-HQ", split, base_root, searched,
                         ("{trainHQ,testHQ}/ or {train,test}/ split folders",
                          "one image folder (CelebA-HQ-img/, celeba_hq_256/ or the root) split by index"))
    files = list_images(folder)
    if list_file is not None:
        return _select_listed(files, _read_list_file(list_file), list_file)
    ranges = {**CELEBA_DEFAULT_RANGES, **{_split(k): tuple(v) for k, v in (split_ranges or {}).items()}}
    return _select_range(files, folder, split, ranges[split])


# ------------------------------------------------------------------------------------------------
# NTIRE 2023 HR non-homogeneous dehazing and shadow removal (paired LQ/GT folders per split)
# ------------------------------------------------------------------------------------------------
NTIRE_SPLITS = {"train": ("train", "training", "Train"), "test": ("val", "valid", "validation", "test", "Val")}
# (LQ folder names, GT folder names) looked for in each split folder, case-insensitively, in order.
NTIRE_FOLDERS = {
    "dehaze": (("LQ", "hazy", "haze", "input", "HAZY"), ("GT", "clean", "gt", "target")),
    "shadow": (("LQ", "input", "shadow", "train_A", "test_A"), ("GT", "gt", "target", "shadow_free", "train_C",
                                                                 "test_C")),
}
# One folder of tagged files, as NH-HAZE ships: 01_hazy.png + 01_GT.png.
_NTIRE_TAGS = {"dehaze": ("hazy", "gt"), "shadow": ("shadow", "free")}


def _tagged_single_folder(base: Path, lq_tag: str, gt_tag: str) -> list[Pair] | None:
    files = list_images(base)
    def strip(tag: str) -> Callable[[str], str]:
        pattern = re.compile(rf"[-_]{tag}$", re.IGNORECASE)
        return lambda stem: pattern.sub("", stem)
    lq = [f for f in files if re.search(rf"[-_]{lq_tag}$", f.stem, re.IGNORECASE)]
    gt = [f for f in files if re.search(rf"[-_]{gt_tag}$", f.stem, re.IGNORECASE)]
    if not lq or not gt:
        return None
    lq_by, gt_by = _by_key(lq, strip(lq_tag), base), _by_key(gt, strip(gt_tag), base)
    if lq_by.keys() != gt_by.keys():
        raise _mismatch_error(base, base, lq_by, gt_by)
    return [Pair(lq=lq_by[k], gt=path, name=k) for k, path in gt_by.items()]


def ntire_pairs(root: str | Path, split: str, task: str) -> list[Pair]:
    """NTIRE 2023 pairs of `task` "dehaze" (HR non-homogeneous dehazing) or "shadow" (shadow removal).
    Split folders tried (case-insensitive), then root itself: train: train, training; test: val, valid,
    validation, test. In each: an LQ folder (dehaze: LQ, hazy, haze, input; shadow: LQ, input, shadow, train_A)
    beside a GT folder (GT, clean, target; shadow also shadow_free, train_C), or one folder of NN_hazy + NN_GT
    (dehaze) / NN_shadow + NN_free (shadow) files."""
    if task not in NTIRE_FOLDERS:
        raise DataError(f"data.task='{task}' is not an NTIRE task: use one of {', '.join(NTIRE_FOLDERS)}.")
    dataset = f"NTIRE 2023 {task}"
    split, base_root = _split(split), _existing_root(root, dataset)
    searched = _candidates(base_root, NTIRE_SPLITS[split])
    lq_names, gt_names = NTIRE_FOLDERS[task]
    for base in searched:
        lq_dir, gt_dir = _first_child(base, lq_names), _first_child(base, gt_names)
        if lq_dir is not None and gt_dir is not None and lq_dir != gt_dir:
            return folder_pairs(lq_dir, gt_dir)
        pairs = _tagged_single_folder(base, *_NTIRE_TAGS[task])
        if pairs is not None:
            return pairs
    layouts = (f"{{{'|'.join(lq_names)}}}/ + {{{'|'.join(gt_names)}}}/",
               f"one folder of N_{_NTIRE_TAGS[task][0]}.png + N_{_NTIRE_TAGS[task][1]}.png")
    raise _not_found(dataset, split, base_root, searched, layouts, NTIRE_SPLITS[split])
