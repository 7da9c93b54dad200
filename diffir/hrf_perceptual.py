"""LaMa's high-receptive-field perceptual loss (``ResNetPL``, saicinpainting/training/losses/perceptual.py): the
squared feature distance of a dilated ResNet-50 trained for ADE20k segmentation.

The encoder is "resnet50dilated" of CSAIL's semantic-segmentation-pytorch (models/ade20k in LaMa): a ResNet-50
with a deep stem (three 3x3 convolutions, 64-64-128 channels, the first of stride 2, then a 3x3 max pool) and
layer3 / layer4 dilated instead of strided (output stride 8; torchvision's ``replace_stride_with_dilation`` does
the same to the blocks). Its feature maps after layer1 ... layer4 feed the loss:
``weight * sum_k mean((phi_k(pred) - phi_k(target))^2)`` on ImageNet-normalised [0, 1] images.

The weights are ``encoder_epoch_20.pth`` of ``ade20k-resnet50dilated-ppm_deepsup`` (:data:`ADE20K_URL`), read from
disk only: ``weights_path`` when given, otherwise where LaMa and DiffIR look for it, ``$TORCH_HOME/ade20k/
ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth``. A missing file is one ``ConfigError`` naming both.

Batch norm: LaMa's ``ResNetPL`` sets its encoder to eval mode, but the loss is a submodule of the Lightning 1.x
module, whose trainer calls ``train()`` on everything before training, so the official runs normalised the
encoder's features with each batch's statistics. ``batch_statistics=True`` (default) does the same; False uses the
stored running statistics (what the ``eval()`` call intended). The encoder itself never learns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from core.errors import CheckpointError, ConfigError
from core.weights import load_weights_file

ADE20K_FILE = "encoder_epoch_20.pth"
ADE20K_DIR = "ade20k/ade20k-resnet50dilated-ppm_deepsup"
ADE20K_URL = f"http://sceneparsing.csail.mit.edu/model/pytorch/ade20k-resnet50dilated-ppm_deepsup/{ADE20K_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torch_home() -> Path:
    """$TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch (torch.hub's rule)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))).expanduser()


def default_weights_path() -> Path:
    return torch_home() / ADE20K_DIR / ADE20K_FILE


def missing_weights_message(path: Path, given: bool) -> str:
    where = "model.hrf_perceptual.weights_path points to" if given else "looked for"
    return (
        f"ADE20k ResNet-50 (dilated) weights for the high-receptive-field perceptual loss not found: {where} "
        f"{path}. Nothing is downloaded at run time: download {ADE20K_URL} and either put it at "
        f"{default_weights_path()} ($TORCH_HOME/{ADE20K_DIR}/, where LaMa and DiffIR look) or pass "
        f"model.hrf_perceptual.weights_path=/path/to/{ADE20K_FILE}. The L1-only recipe "
        "(experiment=diffir_s1_celebahq_inpaint_l1) needs no weights."
    )


class DilatedResNet50(nn.Module):
    """The ADE20k "resnet50dilated" encoder with its parameter names; ``forward(x) -> [layer1 ... layer4]``.
    ``blocks`` / ``width``: the official (3, 4, 6, 3) / 64 unless a test wants a small stand-in."""

    def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        w = int(width)
        self.conv1, self.bn1 = nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
        self.conv3, self.bn3 = nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = 2 * w
        # (planes, stride, dilation of the first block, of the others): layer3 / layer4 trade stride for dilation
        specs = ((w, 1, 1, 1), (2 * w, 2, 1, 1), (4 * w, 1, 1, 2), (8 * w, 1, 2, 4))
        for i, (n, (planes, stride, first, rest)) in enumerate(zip(blocks, specs, strict=True), start=1):
            setattr(self, f"layer{i}", self._layer(planes, int(n), stride, first, rest))

    def _layer(self, planes: int, n: int, stride: int, first: int, rest: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        # every layer widens, so each first block projects; the dilated layers' projection loses its stride too
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, dilation=first)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, dilation=rest) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
        features = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            features.append(x)
        return features


def load_encoder(path: Path, blocks: Sequence[int], width: int) -> DilatedResNet50:
    """The encoder with the weights of ``path`` (every parameter and running statistic must be there)."""
    raw = load_weights_file(path, "cpu", False, CheckpointError)
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: not a state dict (expected {ADE20K_FILE} of {ADE20K_URL})")
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    encoder = DilatedResNet50(blocks, width)
    wanted = {}
    for key, value in encoder.state_dict().items():
        given = state.get(key)
        if given is None and key.endswith("num_batches_tracked"):
            given = value  # files written before torch 0.4.1 lack this counter; it is unused here
        if given is None or tuple(given.shape) != tuple(value.shape):
            found = "missing" if given is None else f"shape {tuple(given.shape)}"
            raise CheckpointError(f"{path}: not the ADE20k resnet50dilated encoder ({key}: {found}, expected "
                                  f"{tuple(value.shape)}); use {ADE20K_URL}")
        wanted[key] = given.to(value.dtype)
    encoder.load_state_dict(wanted, strict=True)
    return encoder


class HRFPerceptualLoss(nn.Module):
    """``forward(pred, target) -> weight * sum_k mse(phi_k(pred), phi_k(target))`` (official weight 30)."""

    def __init__(self, weight: float = 30.0, weights_path: str | Path | None = None, batch_statistics: bool = True,
                 blocks: Sequence[int] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        path = Path(weights_path).expanduser() if weights_path else default_weights_path()
        if not path.is_file():
            raise ConfigError(missing_weights_message(path, given=bool(weights_path)))
        self.weight, self.batch_statistics = float(weight), bool(batch_statistics)
        self.encoder = load_encoder(path, tuple(blocks), int(width)).requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.train(True)

    def train(self, mode: bool = True) -> HRFPerceptualLoss:
        super().train(mode)
        self.encoder.train(self.batch_statistics)  # the mode decides only which statistics batch norm uses
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(pred.dtype), self.std.to(pred.dtype)
        pred_features = self.encoder((pred - mean) / std)
        with torch.no_grad():
            target_features = self.encoder((target.detach() - mean) / std)
        terms = [F.mse_loss(p, t) for p, t in zip(pred_features, target_features, strict=True)]
        return torch.stack(terms).sum() * self.weight
