"""The LaMa losses of DiffIR's inpainting recipe against independent computations on tiny tensors: masked L1 by
hand, R1 on a linear discriminator (closed form), the discriminator/generator terms and feature matching with
numpy, LaMa's NLayerDiscriminator shapes and names, and the ADE20k dilated ResNet-50 of the perceptual loss
against LaMa's construction rule, its weights file and its missing-file message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from core.errors import CheckpointError, ConfigError
from diffir.hrf_perceptual import ADE20K_URL, DilatedResNet50, HRFPerceptualLoss, default_weights_path
from diffir.inpaint_losses import NonSaturatingR1, feature_matching_loss, r1_penalty, scale_mask
from diffir.lama_discriminator import NLayerDiscriminator
from diffir.losses import PixelLoss

pytestmark = pytest.mark.usefixtures("one_thread")


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(x))


def test_masked_l1_weights_known_pixels_ten_and_missing_zero():
    gen = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(2, 3, 4, 5, generator=gen), torch.rand(2, 3, 4, 5, generator=gen)
    known = (torch.rand(2, 1, 4, 5, generator=gen) > 0.4).float()
    p, g, k = pred.numpy(), gt.numpy(), known.numpy()
    total = sum(10.0 * abs(p[n, c, i, j] - g[n, c, i, j]) for n in range(2) for c in range(3) for i in range(4)
                for j in range(5) if k[n, 0, i, j] == 1)
    expected = total / pred.numel()  # LaMa's mean runs over every element, missing ones included
    got = PixelLoss(known_weight=10.0, missing_weight=0.0)(pred, gt, known)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm_times_pixels():
    """D(x) = w . x per pixel + b: d sum D / d x = w at every pixel, so R1 = H * W * |w|^2, and d R1 / d w = 2 H W w."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1))
    real = torch.rand(4, 3, 6, 7).requires_grad_(True)
    penalty = r1_penalty(conv(real), real)
    assert float(penalty.detach()) == pytest.approx(6 * 7 * (0.25 + 1.0 + 4.0), rel=1e-6)
    penalty.backward()  # create_graph: the discriminator's step differentiates the penalty
    torch.testing.assert_close(conv.weight.grad.view(3), 2 * 6 * 7 * torch.tensor([0.5, -1.0, 2.0]))


@pytest.mark.parametrize("mask_as_fake_target", [True, False])
def test_discriminator_loss_matches_a_numpy_computation(mask_as_fake_target):
    conv = nn.Conv2d(3, 1, 4, stride=2, padding=1)  # 8x8 images -> 4x4 logits: the mask is resized
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(2, 3, 8, 8, generator=gen).requires_grad_(True)
    fake = torch.rand(2, 3, 8, 8, generator=gen)
    missing = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    real_pred, fake_pred = conv(real), conv(fake)
    loss = NonSaturatingR1(weight=10.0, gp_coef=0.001, mask_as_fake_target=mask_as_fake_target)
    got, logs = loss.discriminator_loss(real_pred, fake_pred, real, missing)

    r, f = real_pred.detach().numpy(), fake_pred.detach().numpy()
    m = missing.numpy()[:, :, ::2, ::2]  # nearest 8 -> 4: source pixel floor(i * 8 / 4)
    (grad,) = torch.autograd.grad(real_pred.sum(), real)
    r1 = float((grad.reshape(2, -1) ** 2).sum(1).mean())
    fake_term = m * _softplus(f) + (1 - m) * _softplus(-f) if mask_as_fake_target else _softplus(f)
    expected = _softplus(-r).mean() + 0.001 * r1 + fake_term.mean()  # the discriminator term carries no weight
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(logs["r1"]) == pytest.approx(r1, rel=1e-5)
    f_only = fake_pred.detach()
    assert float(loss.generator_loss(f_only)) == pytest.approx(10.0 * _softplus(-f).mean(), rel=1e-5)


def test_mask_scaling_modes():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 1, 1] = 1.0  # a hole that nearest sampling (rows/cols 0, 2, 4, 6) misses and max pooling keeps
    assert float(scale_mask(mask, (4, 4), "nearest").sum()) == 0.0
    assert float(scale_mask(mask, (4, 4), "maxpool")[0, 0, 0, 0]) == 1.0
    assert scale_mask(mask, (8, 8)) is mask
    with pytest.raises(ConfigError, match="mask_scale_mode"):
        NonSaturatingR1(mask_scale_mode="cubic")


def test_feature_matching_is_the_mean_over_blocks_of_the_squared_difference():
    gen = torch.Generator().manual_seed(2)
    fake = [torch.rand(2, 4, 5, 5, generator=gen), torch.rand(2, 8, 3, 3, generator=gen)]
    real = [torch.rand(2, 4, 5, 5, generator=gen), torch.rand(2, 8, 3, 3, generator=gen)]
    expected = np.mean([((a.numpy() - b.numpy()) ** 2).mean() for a, b in zip(fake, real)])
    assert float(feature_matching_loss(fake, real)) == pytest.approx(expected, rel=1e-6)


def test_nlayer_discriminator_has_lamas_shapes_and_names():
    disc = NLayerDiscriminator(input_nc=3, ndf=64, n_layers=4)  # the official configuration
    logits, features = disc(torch.rand(2, 3, 32, 32))
    sides = [17, 9, 5, 3, 4]  # stride 2 four times, then stride 1, every conv padding 2 with a 4x4 kernel
    assert [tuple(f.shape[1:]) for f in features] == [(c, s, s) for c, s in zip((64, 128, 256, 512, 512), sides)]
    assert tuple(logits.shape) == (2, 1, 5, 5)
    keys = set(disc.state_dict())
    assert {"model0.0.weight", "model1.1.running_mean", "model4.0.weight", "model5.0.bias"} <= keys
    assert not any(k.startswith("model6") for k in keys)


# ---------------------------------------------------------------- the ADE20k encoder and the perceptual loss


def lama_rule_encoder(blocks, width) -> nn.Module:
    """LaMa's recipe written independently: a plain strided ResNet-50 (deep stem, torchvision bottlenecks), then
    models/ade20k ResnetDilated._nostride_dilate on layer3 (dilate 2) and layer4 (dilate 4)."""

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.conv1, self.bn1 = nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w)
            self.conv2, self.bn2 = nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
            self.conv3, self.bn3 = nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w)
            inplanes = 2 * w
            for i, (n, planes, stride) in enumerate(zip(blocks, (w, 2 * w, 4 * w, 8 * w), (1, 2, 2, 2)), 1):
                down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
                layers = [Bottleneck(inplanes, planes, stride, down)]
                layers += [Bottleneck(planes * 4, planes) for _ in range(n - 1)]
                setattr(self, f"layer{i}", nn.Sequential(*layers))
                inplanes = planes * 4

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            x = nn.functional.max_pool2d(torch.relu(self.bn3(self.conv3(x))), 3, 2, 1)
            out = []
            for i in range(1, 5):
                x = getattr(self, f"layer{i}")(x)
                out.append(x)
            return out

    def nostride_dilate(m, dilate):
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
                if m.kernel_size == (3, 3):
                    m.dilation, m.padding = (dilate // 2,) * 2, (dilate // 2,) * 2
            elif m.kernel_size == (3, 3):
                m.dilation, m.padding = (dilate,) * 2, (dilate,) * 2

    plain = Plain()
    plain.layer3.apply(lambda m: nostride_dilate(m, 2))
    plain.layer4.apply(lambda m: nostride_dilate(m, 4))
    return plain


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                if "running_var" in name:
                    value.copy_(0.5 + torch.rand(value.shape, generator=gen))
                else:
                    value.copy_(torch.randn(value.shape, generator=gen) * (0.3 if "weight" in name else 0.1))
    return module


def test_encoder_equals_lamas_dilated_resnet_rule():
    ours = _randomise(DilatedResNet50((1, 2, 2, 2), width=8), 3).eval()
    reference = lama_rule_encoder((1, 2, 2, 2), 8).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)  # same names: LaMa's weights load as they are
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        for a, b in zip(ours(x), reference(x), strict=True):
            torch.testing.assert_close(a, b)
    assert [f.shape[-1] for f in ours(x)] == [10, 5, 5, 5]  # output stride 8 after layer2


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    torch.manual_seed(4)
    encoder = _randomise(DilatedResNet50((1, 1, 1, 1), width=8), 4)
    path = tmp_path_factory.mktemp("ade20k") / "encoder_epoch_20.pth"
    # as the CSAIL files: DataParallel's prefix, no num_batches_tracked counters
    torch.save({f"module.{k}": v for k, v in encoder.state_dict().items() if "num_batches" not in k}, path)
    return {k: v.clone() for k, v in encoder.state_dict().items()}, path


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_hrf_perceptual_loss_is_the_weighted_sum_of_feature_mses(encoder_file, batch_statistics):
    state, path = encoder_file
    loss = HRFPerceptualLoss(weight=30.0, weights_path=path, batch_statistics=batch_statistics,
                             blocks=(1, 1, 1, 1), width=8)
    loss.eval()  # the module's mode does not matter: the setting decides the statistics
    assert loss.encoder.training is batch_statistics
    assert not any(p.requires_grad for p in loss.parameters())
    gen = torch.Generator().manual_seed(5)
    pred = torch.rand(2, 3, 32, 32, generator=gen).requires_grad_(True)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    reference = DilatedResNet50((1, 1, 1, 1), width=8)
    reference.load_state_dict(state)  # a fresh copy: batch-statistics passes move the running statistics
    reference.train(batch_statistics)
    with torch.no_grad():
        a, b = reference((pred - mean) / std), reference((target - mean) / std)
    expected = 30.0 * sum(float(((x - y) ** 2).mean()) for x, y in zip(a, b))
    got = loss(pred, target)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0


def test_missing_or_wrong_encoder_files(tmp_path, monkeypatch, encoder_file):
    missing = tmp_path / "nowhere" / "encoder_epoch_20.pth"
    with pytest.raises(ConfigError) as err:
        HRFPerceptualLoss(weights_path=missing)
    message = str(err.value)
    assert str(missing) in message and ADE20K_URL in message and "model.hrf_perceptual.weights_path=" in message
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected = tmp_path / "torch_home" / "ade20k" / "ade20k-resnet50dilated-ppm_deepsup" / "encoder_epoch_20.pth"
    assert default_weights_path() == expected
    with pytest.raises(ConfigError, match=r"looked for .*torch_home/ade20k"):
        HRFPerceptualLoss()
    with pytest.raises(CheckpointError, match="not the ADE20k resnet50dilated encoder"):
        HRFPerceptualLoss(weights_path=encoder_file[1], blocks=(3, 4, 6, 3), width=8)  # another depth
    assert math.isfinite(float(HRFPerceptualLoss(weights_path=encoder_file[1], blocks=(1, 1, 1, 1), width=8)(
        torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))))
