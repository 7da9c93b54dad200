"""LaMa's random inpainting masks (Suvorov et al., WACV 2022), as DiffIR-inpainting trains and evaluates with them.

LaMa's ``MixedMaskGenerator`` (saicinpainting/training/data/masks.py) picks, per mask, one generator by the
normalised probabilities ``irregular_proba`` / ``box_proba``:

* irregular: ``times`` strokes, each 1-5 straight segments drawn with ``cv2.line`` (round caps); a segment has
  angle ``0.01 + randint(max_angle)`` radians (mirrored to ``2*pi - angle`` for even strokes), length
  ``10 + randint(max_len)`` and width ``5 + randint(max_width)``, and its end is clipped to the image.
  LaMa's wrapper passes ``max_times + 1`` as the upper count, so ``times`` is uniform on
  ``[min_times, max_times + 1]`` (kept: that is what trained the released models).
* box: ``times`` uniform on ``[min_times, max_times]`` rectangles with sides uniform on
  ``[bbox_min_size, bbox_max_size]`` (capped at the image side minus two margins), ``margin`` px from the border.

Presets (``PRESETS``) carry the official numbers: ``train`` is DiffIR's training mix
(configs/training/data/abl-04-256-mh-dist*.yaml: strokes and boxes, half each); ``thin_*`` / ``medium_*`` /
``thick_*`` are LaMa's evaluation sets (configs/data_gen/random_<kind>_<size>.yaml: thin = the papers' "narrow"
masks, thick = "wide"), where ``bin/gen_mask_dataset.py`` draws 5 masks per image, drops those covering more
than half of it and keeps one at random. Sizes are pixels of an image whose short side is the preset's
``size`` (256 or 512); a mask for another size is drawn at that scale and resized (nearest).

Masks here follow the suite's convention (``data.masks``): float32 HxW, 1 = known pixel, 0 = to fill (LaMa's
own masks are the opposite). Every draw comes from ``numpy.random.default_rng(seed)``, so a seed gives one mask:
training seeds come from the epoch-seeded sampler, test seeds are the image index.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.masks import resize_mask_nearest

TWO_PI = 2 * 3.1415926  # LaMa's constant

IRREGULAR_TRAIN = dict(max_angle=4, max_len=200, max_width=100, min_times=1, max_times=5)
BOX_TRAIN = dict(margin=10, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=4)

# name -> (reference short side, irregular probability, its kwargs, box probability, its kwargs, evaluation set?)
PRESETS: dict[str, dict] = {
    "train": dict(size=256, irregular_proba=1.0, irregular=IRREGULAR_TRAIN, box_proba=1.0, box=BOX_TRAIN),
    "thin_256": dict(size=256, irregular_proba=1.0, box_proba=0.0, eval=True,
                     irregular=dict(max_angle=4, max_len=40, max_width=10, min_times=4, max_times=50)),
    "medium_256": dict(size=256, irregular_proba=1.0, box_proba=0.3, eval=True,
                       irregular=dict(max_angle=4, max_len=100, max_width=50, min_times=4, max_times=5),
                       box=dict(margin=0, bbox_min_size=10, bbox_max_size=50, min_times=1, max_times=5)),
    "thick_256": dict(size=256, irregular_proba=1.0, box_proba=0.3, eval=True,
                      irregular=dict(max_angle=4, max_len=200, max_width=100, min_times=1, max_times=5),
                      box=dict(margin=10, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=3)),
    "thin_512": dict(size=512, irregular_proba=1.0, box_proba=0.0, eval=True,
                     irregular=dict(max_angle=4, max_len=100, max_width=20, min_times=4, max_times=70)),
    "medium_512": dict(size=512, irregular_proba=1.0, box_proba=0.3, eval=True,
                       irregular=dict(max_angle=4, max_len=200, max_width=100, min_times=4, max_times=10),
                       box=dict(margin=0, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=5)),
    "thick_512": dict(size=512, irregular_proba=1.0, box_proba=0.3, eval=True,
                      irregular=dict(max_angle=4, max_len=450, max_width=250, min_times=1, max_times=5),
                      box=dict(margin=10, bbox_min_size=30, bbox_max_size=300, min_times=1, max_times=4)),
}
EVAL_VARIANTS = 5        # gen_mask_dataset.py: variants_n
EVAL_MAX_AREA = 0.5      # ... max_tamper_area
# The data-config names: "lama" is the training mix, "lama_<preset>" an evaluation set.
LAMA_KINDS = ("lama", *(f"lama_{name}" for name in PRESETS if name != "train"))


def strokes(rng: np.random.Generator, h: int, w: int, max_angle: int, max_len: int, max_width: int,
            min_times: int, max_times: int) -> list[list[tuple[int, int, int, int, int]]]:
    """LaMa's irregular strokes, each a list of segments (x0, y0, x1, y1, width) in pixels of an h x w canvas."""
    out = []
    for i in range(int(rng.integers(min_times, max_times + 2))):  # LaMa's wrapper: up to max_times + 1
        segments = []
        x, y = int(rng.integers(w)), int(rng.integers(h))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(max_angle))
            if i % 2 == 0:
                angle = TWO_PI - angle
            length = 10 + int(rng.integers(max_len))
            width = 5 + int(rng.integers(max_width))
            # as LaMa: truncate to int32, then clip to [0, side] (the side itself lies just outside the image)
            x1 = int(np.clip(np.int32(x + length * np.sin(angle)), 0, w))
            y1 = int(np.clip(np.int32(y + length * np.cos(angle)), 0, h))
            segments.append((x, y, x1, y1, width))
            x, y = x1, y1
        out.append(segments)
    return out


def boxes(rng: np.random.Generator, h: int, w: int, margin: int, bbox_min_size: int, bbox_max_size: int,
          min_times: int, max_times: int) -> list[tuple[int, int, int, int]]:
    """LaMa's rectangles as (top, left, height, width); sides uniform on [bbox_min_size, bbox_max_size]."""
    # LaMa's wrapper passes bbox_max_size + 1 as the exclusive bound, capped by the image minus the margins
    upper = min(bbox_max_size + 1, h - 2 * margin, w - 2 * margin)
    out = []
    for _ in range(int(rng.integers(min_times, max_times + 1))):
        bw, bh = int(rng.integers(bbox_min_size, upper)), int(rng.integers(bbox_min_size, upper))
        left = int(rng.integers(margin, w - margin - bw + 1))
        top = int(rng.integers(margin, h - margin - bh + 1))
        out.append((top, left, bh, bw))
    return out


def draw_holes(h: int, w: int, segments=(), rects=()) -> np.ndarray:
    """float32 h x w with 1 on the holes (LaMa's polarity) of the given segments and rectangles."""
    holes = np.zeros((h, w), np.float32)
    for x0, y0, x1, y1, width in segments:
        cv2.line(holes, (x0, y0), (x1, y1), 1.0, width)
    for top, left, bh, bw in rects:
        holes[top:top + bh, left:left + bw] = 1.0
    return holes


def draw_training_holes(rng: np.random.Generator, h: int, w: int, preset: dict) -> tuple[np.ndarray, str]:
    """One mask of LaMa's MixedMaskGenerator at h x w: (holes = 1, "irregular" | "box")."""
    probas = np.array([preset["irregular_proba"], preset["box_proba"]], dtype=np.float64)
    kind = ("irregular", "box")[int(rng.choice(2, p=probas / probas.sum()))]
    if kind == "irregular":
        segments = [seg for stroke in strokes(rng, h, w, **preset["irregular"]) for seg in stroke]
        return draw_holes(h, w, segments=segments), kind
    return draw_holes(h, w, rects=boxes(rng, h, w, **preset["box"])), kind


def draw_eval_holes(rng: np.random.Generator, h: int, w: int, preset: dict) -> np.ndarray:
    """gen_mask_dataset.py's choice: 5 candidates, those covering at most half the image, one at random.
    (LaMa skips an image whose 5 candidates are all too large; here more candidates are drawn instead.)"""
    for _ in range(20):
        fitting = [m for m in (draw_training_holes(rng, h, w, preset)[0] for _ in range(EVAL_VARIANTS))
                   if m.mean() <= EVAL_MAX_AREA]
        if fitting:
            return fitting[int(rng.integers(len(fitting)))]
    raise RuntimeError("no LaMa evaluation mask under half the image in 100 draws")  # not seen in practice


@dataclass(frozen=True)
class LamaMask:
    """Picklable mask maker f(h, w, seed) -> known-pixel mask for the datasets. ``preset``: a key of PRESETS
    ("train" = the training mix; the others draw as LaMa's evaluation-set generator)."""

    preset: str = "train"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown LaMa mask preset {self.preset!r}; use one of {', '.join(PRESETS)}")

    def holes(self, h: int, w: int, seed: int) -> np.ndarray:
        """LaMa-polarity mask (1 = hole) at h x w, drawn at the preset's scale."""
        preset = PRESETS[self.preset]
        rng = np.random.default_rng(seed)
        scale = min(h, w) / preset["size"]
        ch, cw = (h, w) if scale == 1 else (round(h / scale), round(w / scale))
        draw = draw_eval_holes if preset.get("eval") else (lambda r, a, b, p: draw_training_holes(r, a, b, p)[0])
        holes = draw(rng, ch, cw, preset)
        return holes if (ch, cw) == (h, w) else resize_mask_nearest(holes, (h, w))

    def __call__(self, h: int, w: int, seed: int) -> np.ndarray:
        return 1.0 - self.holes(h, w, seed)


def lama_mask(kind: str) -> LamaMask:
    """The maker of a data-config kind: "lama" (training mix) or "lama_<preset>" (an evaluation set)."""
    if kind not in LAMA_KINDS:
        raise ValueError(f"unknown LaMa mask kind {kind!r}; use one of {', '.join(LAMA_KINDS)}")
    return LamaMask("train" if kind == "lama" else kind[len("lama_"):])
