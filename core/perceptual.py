"""VGG19 perceptual and style losses, as BasicSR's ``PerceptualLoss`` (the SRGAN / ESRGAN / Real-ESRGAN recipes).

``VGGFeatures`` is torchvision's ``vgg19().features`` cut after the deepest requested layer, with BasicSR's layer
names (``conv1_1``, ``relu1_1``, ..., ``pool5``; a ``convX_Y`` feature is taken before its ReLU). Inputs in
[0, 1] are normalised with the ImageNet mean/std first (``use_input_norm``); ``range_norm`` maps [-1, 1] to
[0, 1] before that. The network is frozen and always in eval mode.

The ImageNet weights are read from disk only, never downloaded: ``weights_path`` when given, otherwise the file
torchvision itself caches, ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` (see :func:`default_vgg19_path`).

``PerceptualLoss(x, gt)`` returns ``(percep, style)``: ``percep = perceptual_weight * sum_k w_k * C(phi_k(x),
phi_k(gt))`` and ``style = style_weight * sum_k w_k * C(G(phi_k(x)), G(phi_k(gt)))`` with the Gram matrix
``G(f) = f f^T / (c h w)`` of the (n, c, h*w) features and ``C`` the L1 / MSE mean, or the Frobenius norm of
the difference (``criterion="fro"``). A term whose weight is 0 is ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, ConfigError
from core.weights import load_weights_file

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"

# BasicSR's names of torchvision's vgg19().features modules, in order (index = position in `features`).
VGG19_LAYERS = (
    "conv1_1",
    "relu1_1",
    "conv1_2",
    "relu1_2",
    "pool1",
    "conv2_1",
    "relu2_1",
    "conv2_2",
    "relu2_2",
    "pool2",
    "conv3_1",
    "relu3_1",
    "conv3_2",
    "relu3_2",
    "conv3_3",
    "relu3_3",
    "conv3_4",
    "relu3_4",
    "pool3",
    "conv4_1",
    "relu4_1",
    "conv4_2",
    "relu4_2",
    "conv4_3",
    "relu4_3",
    "conv4_4",
    "relu4_4",
    "pool4",
    "conv5_1",
    "relu5_1",
    "conv5_2",
    "relu5_2",
    "conv5_3",
    "relu5_3",
    "conv5_4",
    "relu5_4",
    "pool5",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CRITERIA = ("l1", "l2", "fro")


def default_vgg19_path() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights: ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def _missing_weights_message(path: Path, given: bool) -> str:
    where = "model.perceptual.weights_path points to" if given else "looked for torchvision's cached file"
    return (
        f"VGG19 weights for the perceptual loss not found: {where} {path}. Nothing is downloaded at run "
        f"time: download {VGG19_URL} and either put it at {default_vgg19_path()} (torchvision's cache, "
        f"under $TORCH_HOME) or pass model.perceptual.weights_path=/path/to/{VGG19_FILE}. The pixel-loss "
        "recipe (e.g. experiment=diffir_s2_div2k_sr) needs no VGG weights."
    )


class VGGFeatures(nn.Module):
    """Frozen VGG19 features at ``layers`` (BasicSR names): ``forward(x) -> {name: feature}``."""

    def __init__(
        self,
        layers: Iterable[str],
        weights_path: str | Path | None = None,
        use_input_norm: bool = True,
        range_norm: bool = False,
    ) -> None:
        super().__init__()
        self.layers = tuple(layers)
        unknown = [name for name in self.layers if name not in VGG19_LAYERS]
        if unknown or not self.layers:
            raise ConfigError(
                f"model.perceptual.layer_weights: unknown VGG19 layer(s) {unknown or '(none given)'};"
                f" use names among {', '.join(VGG19_LAYERS)}"
            )
        self.use_input_norm, self.range_norm = bool(use_input_norm), bool(range_norm)
        path = Path(weights_path).expanduser() if weights_path else default_vgg19_path()
        if not path.is_file():
            raise ConfigError(_missing_weights_message(path, given=bool(weights_path)))
        last = max(VGG19_LAYERS.index(name) for name in self.layers)
        self.features = _load_features(path, last + 1)
        self.names = VGG19_LAYERS[: last + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # a fixed feature extractor: never in training mode

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.range_norm:
            x = (x + 1.0) / 2.0
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = {}
        for name, layer in zip(self.names, self.features):
            x = layer(x)
            if name in self.layers:
                out[name] = x
        return out


def _load_features(path: Path, n_layers: int) -> nn.Sequential:
    """torchvision's ``vgg19().features[:n_layers]`` with the weights of ``path`` (a torchvision VGG19 file)."""
    import torchvision

    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        features = torchvision.models.vgg19(weights=None).features[:n_layers]
    for module in features:
        if isinstance(module, nn.ReLU):
            module.inplace = False  # the conv features returned must not be overwritten by the next ReLU
    raw = load_weights_file(path, "cpu", False, CheckpointError)
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: not a VGG19 state dict (expected torchvision's {VGG19_FILE})")
    state = {k[len("features.") :]: v for k, v in raw.items() if k.startswith("features.")} or dict(raw)
    wanted = {}
    for key, param in features.state_dict().items():
        value = state.get(key)
        if value is None or tuple(value.shape) != tuple(param.shape):
            found = "missing" if value is None else f"shape {tuple(value.shape)}"
            raise CheckpointError(
                f"{path}: not torchvision VGG19 weights (features.{key}: {found}, expected "
                f"{tuple(param.shape)}); use {VGG19_URL}"
            )
        wanted[key] = value.detach().to(torch.float32).contiguous()
    features.load_state_dict(wanted, strict=True, assign=True)
    return features


def gram_matrix(feature: torch.Tensor) -> torch.Tensor:
    """(n, c, c) Gram matrix of (n, c, h, w) features, normalised by c * h * w (BasicSR's ``_gram_mat``)."""
    n, c, h, w = feature.shape
    flat = feature.reshape(n, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """BasicSR's VGG19 perceptual + style loss; ``forward(x, gt) -> (percep or None, style or None)``."""

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        weights_path: str | Path | None = None,
        criterion: str = "l1",
        use_input_norm: bool = True,
        range_norm: bool = False,
        perceptual_weight: float = 1.0,
        style_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise ConfigError(f"model.perceptual.criterion={criterion!r}: use one of {', '.join(CRITERIA)}")
        self.layer_weights = {str(k): float(v) for k, v in dict(layer_weights).items()}
        self.criterion = criterion
        self.perceptual_weight, self.style_weight = float(perceptual_weight), float(style_weight)
        self.vgg = VGGFeatures(self.layer_weights, weights_path, use_input_norm, range_norm)

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.criterion == "l1":
            return (a - b).abs().mean()
        if self.criterion == "l2":
            return (a - b).pow(2).mean()
        return torch.linalg.vector_norm(a - b)  # Frobenius norm of the whole difference

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x_features = self.vgg(x)
        with torch.no_grad():
            gt_features = self.vgg(gt.detach())
        percep = style = None
        if self.perceptual_weight > 0:
            percep = sum(self._distance(x_features[k], gt_features[k]) * w for k, w in self.layer_weights.items())
            percep = percep * self.perceptual_weight
        if self.style_weight > 0:
            style = sum(
                self._distance(gram_matrix(x_features[k]), gram_matrix(gt_features[k])) * w
                for k, w in self.layer_weights.items()
            )
            style = style * self.style_weight
        return percep, style
