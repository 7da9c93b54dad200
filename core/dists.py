"""DISTS (Ding, Ma, Wang and Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
Similarity", TPAMI 2020), a full-reference score: 0 for identical images, lower is better.

As the authors' ``DISTS_pytorch`` (the code DiffIR-RealSR's ``Metric/dists.py`` copies): ImageNet-normalised
[0, 1] RGB through torchvision's VGG16 up to relu5_3, each max-pool replaced by an "L2 pooling" (Hanning 3x3
window, stride 2); at the image and the five stages, per channel, a structure term
``(2 mu_x mu_y + c) / (mu_x^2 + mu_y^2 + c)`` and a texture term ``(2 cov_xy + c) / (var_x + var_y + c)``
(global spatial moments, c = 1e-6), weighted by the learnt alpha / beta normalised to sum 1 together;
DISTS = 1 - the weighted sum. Full-size images, no resizing (as DiffIR's script).

Weights are read from disk only: the alpha / beta file shipped inside the ``dists-pytorch`` package
(``DISTS_pytorch/weights.pt``, found without importing it) and torchvision's VGG16 in the torch hub cache
(``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``). Without either, ``make_dists`` returns None after
one warning that names the missing file.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import CheckpointError
from core.weights import load_weights_file

log = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
DISTS_PACKAGE, DISTS_WEIGHTS_FILE = "DISTS_pytorch", "weights.pt"  # pip install dists-pytorch
CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, then relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# torchvision vgg16().features index ranges of the five stages; each stage after the first starts with the
# L2 pooling that replaces the max-pool at the index just before its range (4, 9, 16, 23).
STAGES = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
C = 1e-6

_WARNED: set[str] = set()


def vgg16_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def dists_weights_path() -> Path | None:
    """``DISTS_pytorch/weights.pt`` of the installed dists-pytorch package, or None."""
    spec = importlib.util.find_spec(DISTS_PACKAGE)  # located, not imported (importing it pulls the VGG download)
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / DISTS_WEIGHTS_FILE).is_file():
            return Path(root) / DISTS_WEIGHTS_FILE
    return None


def dists_available() -> bool:
    return dists_weights_path() is not None and vgg16_path().is_file()


def make_dists(device: torch.device | str = "cpu") -> DISTS | None:
    """The DISTS network on ``device`` when its weights are on disk, else None (one warning)."""
    weights = dists_weights_path()
    if weights is None or not vgg16_path().is_file():
        missing = (f"the dists-pytorch package ({DISTS_PACKAGE}/{DISTS_WEIGHTS_FILE}; pip install dists-pytorch)"
                   if weights is None else f"backbone weights {vgg16_path()} ({VGG16_URL})")
        if "dists" not in _WARNED:
            _WARNED.add("dists")
            log.warning(f"DISTS skipped: {missing} is missing; install or download it (TORCH_HOME sets the "
                        "hub folder) to enable it.")
        return None
    return DISTS(vgg16_path(), weights).to(device)


class L2Pool(nn.Module):
    """sqrt(blur(x^2) + 1e-12) with the 3x3 Hanning window (np.hanning(5)[1:-1], normalised), stride 2, pad 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.from_numpy(np.hanning(5)[1:-1]).float()
        window = a[:, None] * a[None, :]
        self.register_buffer("window", (window / window.sum()).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x * x, self.window, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """``forward(x, y) -> (N,)`` DISTS of two (N, 3, H, W) batches in [0, 1]; frozen, always in eval mode."""

    def __init__(self, vgg16_weights: str | Path, dists_weights: str | Path) -> None:
        super().__init__()
        self.stages = _vgg16_stages(Path(vgg16_weights))
        ab = load_weights_file(dists_weights, "cpu", False, CheckpointError)
        if not isinstance(ab, Mapping) or any(tuple(ab.get(k, torch.empty(0)).shape) != (1, sum(CHANNELS), 1, 1)
                                               for k in ("alpha", "beta")):
            raise CheckpointError(f"{dists_weights}: expected DISTS 'alpha' and 'beta' of shape (1, 1475, 1, 1)")
        total = ab["alpha"].sum() + ab["beta"].sum()
        self.register_buffer("alpha", (ab["alpha"] / total).float().reshape(-1), persistent=False)
        self.register_buffer("beta", (ab["beta"] / total).float().reshape(-1), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> DISTS:
        return super().train(False)

    def features(self, x: Tensor) -> list[Tensor]:
        out, h = [x], (x - self.mean) / self.std  # the image itself is the first "stage" (unnormalised)
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        structure, texture = [], []
        for fx, fy in zip(self.features(x), self.features(y)):
            mx, my = fx.mean((2, 3)), fy.mean((2, 3))
            vx = ((fx - mx[..., None, None]) ** 2).mean((2, 3))
            vy = ((fy - my[..., None, None]) ** 2).mean((2, 3))
            cov = (fx * fy).mean((2, 3)) - mx * my
            structure.append((2 * mx * my + C) / (mx**2 + my**2 + C))
            texture.append((2 * cov + C) / (vx + vy + C))
        return 1 - torch.cat(structure, 1) @ self.alpha - torch.cat(texture, 1) @ self.beta


def _vgg16_stages(path: Path) -> nn.ModuleList:
    """torchvision vgg16().features cut into DISTS's five stages (L2 pooling in place of max-pooling)."""
    import torchvision

    with torch.device("meta"):  # every weight comes from the file: no random initialisation
        features = torchvision.models.vgg16(weights=None).features
    raw = load_weights_file(path, "cpu", False, CheckpointError)
    state = {k[len("features."):]: v for k, v in raw.items() if k.startswith("features.")} if isinstance(
        raw, Mapping) else {}
    expected = features.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise CheckpointError(f"{path}: not torchvision VGG16 weights; use {VGG16_URL}")
    features.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    stages = []
    for i, (start, stop) in enumerate(STAGES):
        layers = [L2Pool(CHANNELS[i])] if i else []
        stages.append(nn.Sequential(*layers, *features[start:stop]))
    return nn.ModuleList(stages)
