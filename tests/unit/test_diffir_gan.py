"""The S2-GAN pieces: VGG19 features and the perceptual/style loss (against torchvision and hand formulas), the
BasicSR discriminators, the GAN losses, and the S2-GAN module's configuration checks."""

from __future__ import annotations

import math
import os
from functools import partial
from types import SimpleNamespace

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchvision.models import vgg as tv_vgg  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from core.errors import CheckpointError, ConfigError  # noqa: E402
from core.perceptual import PerceptualLoss, VGGFeatures  # noqa: E402
from diffir.discriminators import UNetDiscriminatorSN, VGGStyleDiscriminator  # noqa: E402
from diffir.gan import GANLoss  # noqa: E402
from diffir.networks import DiffIRS2  # noqa: E402
from diffir.stage2_gan import DiffIRStage2GANModule  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TINY_NET = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1), n_encoder_res=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_vgg19_features(seed: int = 0) -> torch.nn.Sequential:
    """torchvision's VGG19 `features` with random weights (He init as torchvision's, plus small random biases,
    so features keep their scale through the 16 convolutions); built without the slow classifier."""
    torch.manual_seed(seed)
    features = tv_vgg.make_layers(tv_vgg.cfgs["E"]).eval()
    with torch.no_grad():
        for layer in features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                layer.bias.uniform_(-0.1, 0.1)
    return features


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """(reference features, path of a torchvision-style state dict file with the same random weights)."""
    features = random_vgg19_features()
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return features, path


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) / STD


@torch.no_grad()
def reference_features(reference: torch.nn.Sequential, x: torch.Tensor, index: dict[str, int]) -> dict:
    """The output of ``reference[: index[name] + 1]`` on the ImageNet-normalised ``x``, for every name."""
    out, h = {}, _normalise(x)
    for i, layer in enumerate(reference[: max(index.values()) + 1]):
        h = layer(h)
        out.update({name: h.clone() for name, j in index.items() if j == i})
    return out


# -- VGG features and the perceptual loss ---------------------------------------------------------------------
def test_missing_vgg_weights_name_the_file_the_setting_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ConfigError) as err:
        PerceptualLoss({"conv5_4": 1.0})
    message = str(err.value)
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert str(expected) in message
    assert "model.perceptual.weights_path=" in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "experiment=diffir_s2_div2k_sr" in message
    with pytest.raises(ConfigError, match="nowhere.pth"):
        PerceptualLoss({"conv5_4": 1.0}, weights_path=tmp_path / "nowhere.pth")


def test_vgg_weights_with_wrong_keys_or_shapes_are_a_checkpoint_error(tmp_path, vgg):
    wrong_keys = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, wrong_keys)
    with pytest.raises(CheckpointError, match="other.pth"):
        VGGFeatures(["conv1_1"], wrong_keys)
    wrong_shape = tmp_path / "vgg16ish.pth"
    torch.save({"features.0.weight": torch.zeros(32, 3, 3, 3), "features.0.bias": torch.zeros(32)}, wrong_shape)
    with pytest.raises(CheckpointError, match="vgg16ish.pth"):
        VGGFeatures(["conv1_1"], wrong_shape)
    with pytest.raises(ConfigError, match="conv6_1"):
        VGGFeatures(["conv6_1"], vgg[1])


def test_vgg_features_match_torchvision_on_the_normalised_input(vgg):
    reference, path = vgg
    features = VGGFeatures(["conv1_2", "relu2_1", "conv5_4"], path)
    x = torch.rand(1, 3, 32, 32)
    out = features(x)
    with torch.no_grad():  # the brief's reference: torchvision's vgg19().features[:35] on the normalised input
        torch.testing.assert_close(out["conv5_4"], reference[:35](_normalise(x)), rtol=1e-5, atol=1e-5)
    ref = reference_features(reference, x, {"conv1_2": 2, "relu2_1": 6})
    torch.testing.assert_close(out["conv1_2"], ref["conv1_2"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["relu2_1"], ref["relu2_1"], rtol=1e-5, atol=1e-6)
    assert (out["conv1_2"] < 0).any()  # taken before its ReLU, not overwritten by an in-place one
    assert len(features.features) == 35  # truncated after conv5_4
    assert not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training and not features.features[0].training
    # range_norm maps [-1, 1] inputs to [0, 1] first
    ranged = VGGFeatures(["conv1_2"], path, range_norm=True)
    torch.testing.assert_close(ranged(x * 2 - 1)["conv1_2"], out["conv1_2"], rtol=1e-5, atol=1e-5)


def test_perceptual_loss_against_hand_computation(vgg):
    reference, path = vgg
    weights = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    index = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
    loss = PerceptualLoss(weights, weights_path=path, perceptual_weight=0.5)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    zero, style = loss(x, x.clone())
    assert style is None and float(zero) == 0.0
    percep, _ = loss(x, y)
    fx, fy = reference_features(reference, x, index), reference_features(reference, y, index)
    expected = sum(w * (fx[k] - fy[k]).abs().mean() for k, w in weights.items())
    assert float(percep) > 0
    assert float(percep) == pytest.approx(0.5 * float(expected), rel=1e-5)
    # gradients reach the restored image, not the ground truth
    x.requires_grad_(True)
    loss(x, y)[0].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_style_loss_against_a_hand_gram_matrix(vgg):
    reference, path = vgg
    weights = {"conv2_2": 0.5, "conv3_4": 2.0}
    index = {"conv2_2": 7, "conv3_4": 16}
    loss = PerceptualLoss(weights, weights_path=path, perceptual_weight=0.0, style_weight=3.0, criterion="l2")
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    percep, style = loss(x, y)
    assert percep is None

    def gram(f):
        n, c, h, w = f.shape
        return torch.einsum("nci,ndi->ncd", f.reshape(n, c, -1), f.reshape(n, c, -1)) / (c * h * w)

    fx, fy = reference_features(reference, x, index), reference_features(reference, y, index)
    expected = sum(w * (gram(fx[k]) - gram(fy[k])).pow(2).mean() for k, w in weights.items())
    assert float(style) == pytest.approx(3.0 * float(expected), rel=1e-4)
    fro = PerceptualLoss({"conv1_2": 1.0}, weights_path=path, criterion="fro")(x, y)[0]
    diff = reference_features(reference, x, {"c": 2})["c"] - reference_features(reference, y, {"c": 2})["c"]
    assert float(fro) == pytest.approx(float(diff.pow(2).sum().sqrt()), rel=1e-5)
    with pytest.raises(ConfigError, match="model.perceptual.criterion"):
        PerceptualLoss({"conv1_2": 1.0}, weights_path=path, criterion="l3")


# -- discriminators ---------------------------------------------------------------------------------------------
def test_unet_discriminator_shapes_keys_and_spectral_norm():
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(num_in_ch=3, num_feat=8, skip_connection=True)
    x = torch.rand(2, 3, 64, 64)
    assert d(x).shape == (2, 1, 64, 64)
    assert UNetDiscriminatorSN(3, 8, skip_connection=False)(x).shape == (2, 1, 64, 64)
    # BasicSR's keys: spectral norm (hook version) on conv1..conv8, plain conv0 / conv9
    expected = {"conv0.weight", "conv0.bias", "conv9.weight", "conv9.bias"}
    for i in range(1, 9):
        expected |= {f"conv{i}.weight_orig", f"conv{i}.weight_u", f"conv{i}.weight_v"}
    assert set(d.state_dict()) == expected
    # power iterations in training forwards drive the largest singular value of each normalised weight to 1
    small = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        for _ in range(30):
            d(small)
    for i in range(1, 9):
        conv = getattr(d, f"conv{i}")
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        raw = torch.linalg.matrix_norm(conv.weight_orig.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.05) and float(raw) != pytest.approx(1.0, abs=0.05)
    with pytest.raises(ConfigError, match="multiples of 8"):
        d(torch.rand(1, 3, 60, 60))


def test_vgg_style_discriminator_shapes_and_keys():
    d = VGGStyleDiscriminator(num_in_ch=3, num_feat=4, input_size=128)
    assert d(torch.rand(2, 3, 128, 128)).shape == (2, 1)
    names = {"conv0_0.weight", "conv0_0.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    for i in range(5):
        for j in (0, 1):
            if (i, j) != (0, 0):
                names |= {f"conv{i}_{j}.weight"} | {
                    f"bn{i}_{j}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
                }
    assert set(d.state_dict()) == names
    assert d.linear1.in_features == 4 * 8 * 4 * 4
    big = VGGStyleDiscriminator(3, 4, input_size=256)
    assert big(torch.rand(1, 3, 256, 256)).shape == (1, 1) and hasattr(big, "conv5_1")
    # BasicSR's architecture ends at 4 x 4 after 5 (128 px) or 6 (256 px) halvings: other sizes are refused
    with pytest.raises(ConfigError, match="input_size"):
        VGGStyleDiscriminator(3, 4, input_size=64)
    with pytest.raises(ConfigError, match="data.patch_size"):
        d(torch.rand(1, 3, 64, 64))


# -- GAN losses -------------------------------------------------------------------------------------------------
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_gan_losses_against_hand_formulas():
    pred = torch.tensor([[-1.5, 0.2], [0.7, 2.0]])
    values = pred.flatten().tolist()

    def mean(f):
        return sum(f(v) for v in values) / len(values)

    vanilla = GANLoss("vanilla", loss_weight=0.3)
    assert float(vanilla(pred, True, is_disc=True)) == pytest.approx(mean(lambda v: -math.log(_sigmoid(v))))
    assert float(vanilla(pred, False, is_disc=True)) == pytest.approx(mean(lambda v: -math.log(1 - _sigmoid(v))))
    assert float(vanilla(pred, True)) == pytest.approx(0.3 * mean(lambda v: -math.log(_sigmoid(v))))
    smooth = GANLoss("vanilla", real_label_val=0.9)
    assert float(smooth(pred, True, is_disc=True)) == pytest.approx(
        mean(lambda v: -(0.9 * math.log(_sigmoid(v)) + 0.1 * math.log(1 - _sigmoid(v))))
    )

    lsgan = GANLoss("lsgan", loss_weight=2.0)
    assert float(lsgan(pred, True, is_disc=True)) == pytest.approx(mean(lambda v: (v - 1) ** 2))
    assert float(lsgan(pred, False, is_disc=True)) == pytest.approx(mean(lambda v: v**2))
    assert float(lsgan(pred, False)) == pytest.approx(2.0 * mean(lambda v: v**2))

    hinge = GANLoss("hinge", loss_weight=0.5)
    assert float(hinge(pred, True, is_disc=True)) == pytest.approx(mean(lambda v: max(0.0, 1 - v)))
    assert float(hinge(pred, False, is_disc=True)) == pytest.approx(mean(lambda v: max(0.0, 1 + v)))
    assert float(hinge(pred, True)) == pytest.approx(0.5 * -mean(lambda v: v))

    wgan = GANLoss("wgan")
    assert float(wgan(pred, True, is_disc=True)) == pytest.approx(-mean(lambda v: v))
    assert float(wgan(pred, False, is_disc=True)) == pytest.approx(mean(lambda v: v))
    soft = GANLoss("wgan_softplus", loss_weight=4.0)
    assert float(soft(pred, True, is_disc=True)) == pytest.approx(mean(lambda v: math.log1p(math.exp(-v))))
    assert float(soft(pred, False)) == pytest.approx(4.0 * mean(lambda v: math.log1p(math.exp(v))))

    with pytest.raises(ConfigError, match="model.gan.gan_type"):
        GANLoss("relativistic")


# -- the module ------------------------------------------------------------------------------------------------
def _module(**kwargs) -> DiffIRStage2GANModule:
    return DiffIRStage2GANModule(
        net=DiffIRS2(**TINY_NET),
        discriminator=UNetDiscriminatorSN(3, 4),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        optimizer_d=partial(torch.optim.Adam, lr=1e-3),
        **kwargs,
    )


def test_module_needs_no_vgg_until_training_and_keeps_it_out_of_checkpoints(tmp_path, vgg):
    module = _module(perceptual={"layer_weights": {"conv1_2": 1.0}, "weights_path": str(tmp_path / "no.pth")})
    assert not module.automatic_optimization
    assert not any(k.startswith("_loss_nets") or "vgg" in k for k in module.state_dict())
    with pytest.raises(ConfigError, match="no.pth"):  # training needs it
        module.build_perceptual()
    module = _module(perceptual={"layer_weights": {"conv1_2": 1.0}, "weights_path": str(vgg[1])})
    module.build_perceptual()
    assert not any("vgg" in k or "features" in k for k in module.state_dict())
    assert any(k.startswith("discriminator.conv1.weight_orig") for k in module.state_dict())


def test_module_refuses_manual_optimization_gaps_and_a_missing_stage2_checkpoint(tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    for setting in ({"gradient_clip_val": 0.5}, {"accumulate_grad_batches": 4}):  # Lightning's own check
        trainer = L.Trainer(**setting, accelerator="cpu", max_epochs=1, default_root_dir=tmp_path, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False)
        with pytest.raises(MisconfigurationException, match="not supported for manual optimization"):
            trainer.fit(_module(), train_dataloaders=[])
    module = _module()
    module.trainer, module.run_config = SimpleNamespace(ckpt_path=None), {"trainer": {"strategy": "ddp"}}
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_find_unused_parameters_true"):
        module.setup("fit")
    module.run_config = {"trainer": {"strategy": "ddp_find_unused_parameters_true"}}
    with pytest.raises(ConfigError, match="model.stage2_ckpt=<stage-2 run>"):
        module.setup("fit")
    module.run_config["ckpt_path"] = "resume.ckpt"  # resuming needs no stage-2 file
    module.setup("fit")
    with pytest.raises(ConfigError, match="model.net_d_iters"):
        _module(net_d_iters=0)
    assert [_module(net_d_iters=2, net_d_init_iters=3).generator_steps(i) for i in range(1, 9)] == [
        False,
        False,
        False,
        True,
        False,
        True,
        False,
        True,
    ]


def test_official_x4_config():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=diffir_s2gan_div2k_sr", "model.scheduler.gamma=0.25"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["net"]["scale"] == 4 and model["net"]["dim"] == 64 and model["net"]["num_blocks"] == [13, 1, 1, 1]
    assert model["optimizer"]["lr"] == 2e-4 and model["optimizer_d"]["lr"] == 1e-4
    assert model["optimizer"]["betas"] == model["optimizer_d"]["betas"] == [0.9, 0.99]
    assert model["scheduler"]["milestones"] == [200000]
    assert model["scheduler_d"] == model["scheduler"] and model["scheduler_d"]["gamma"] == 0.25  # follows G's
    assert model["perceptual"]["layer_weights"] == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_4": 1.0,
        "conv4_4": 1.0,
        "conv5_4": 1.0,
    }
    assert model["perceptual"]["style_weight"] == 0 and model["perceptual"]["criterion"] == "l1"
    assert model["gan"]["gan_type"] == "vanilla" and model["discriminator"]["num_feat"] == 64
    assert model["ema"]["decay"] == 0.999 and cfg.trainer.max_steps == 400000
    assert cfg.model.stage2_ckpt is None and cfg.model.stage1_ckpt is None and "stage2_ckpt" not in cfg
    # the x4 network is the one stage 2 trains in experiment=diffir_s2_div2k_sr
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        s2 = compose("train", overrides=["experiment=diffir_s2_div2k_sr"])
    assert OmegaConf.to_container(s2.model.net) == OmegaConf.to_container(cfg.model.net)
