"""DiffPIR tasks and the restorer: simulated measurements against direct computations, seeds, batches, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError, DataError
from diffpir.kernels import gaussian_kernel, official_gaussian_sigma
from diffpir.operators import SuperResolution
from diffpir.prior.unet import GuidedUNet, small_config
from diffpir.restorer import DiffPIRRestorer
from diffpir.tasks import generated_mask, make_operator, parse_task, simulate


def _faces(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (low-pass noise), so blur and bicubic have something to act on."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _circular_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """k ⊛ x with wrap-around borders, by padding and a plain convolution (kernel flipped: true convolution)."""
    kh, kw = kernel.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="circular")
    weight = kernel.flip(0, 1).expand(x.shape[1], 1, kh, kw).to(x.dtype)
    return F.conv2d(padded, weight, groups=x.shape[1])


@pytest.fixture(scope="module")
def prior() -> GuidedUNet:
    torch.manual_seed(0)
    return GuidedUNet(**small_config(image_size=32, channel_mult=(1, 2), num_head_channels=32)).eval()


def test_task_names_parse_and_bad_names_fail():
    assert parse_task("sr_x4").scale == 4 and parse_task("sr_x4").family == "sr"
    assert parse_task("deblur_motion").family == "deblur_motion"
    for bad in ("sr_x1", "denoise", "sr4"):
        with pytest.raises(ConfigError, match="task"):
            parse_task(bad)


def test_sr_measurement_is_bicubic_downscaling_away_from_the_borders():
    gt = _faces(1, 64)
    y = simulate(parse_task("sr_x4"), make_operator(parse_task("sr_x4")), gt, sigma_n=0.0)
    assert y.shape == (1, 3, 16, 16)
    # the data step's model of the measurement: circular bicubic-kernel blur + decimation
    model = (SuperResolution(4).forward(gt * 2 - 1) + 1) / 2
    assert torch.allclose(y[..., 3:-3, 3:-3], model[..., 3:-3, 3:-3], atol=2e-3)


def test_sr_needs_a_size_divisible_by_the_scale():
    with pytest.raises(DataError, match="divisible"):
        simulate(parse_task("sr_x4"), make_operator(parse_task("sr_x4")), _faces(1, 30), 0.0)


@pytest.mark.parametrize("task", ["sr_x2", "deblur_gaussian", "inpainting"])
def test_measurement_noise_has_std_sigma_n(task):
    gt = torch.full((1, 3, 64, 64), 0.5)
    parsed = parse_task(task)
    kernel = gaussian_kernel(9, 2.0) if parsed.family.startswith("deblur") else None
    mask = torch.ones(1, 1, 64, 64) if parsed.family == "inpainting" else None
    op = make_operator(parsed, kernel=kernel, mask=mask)
    y = simulate(parsed, op, gt, 0.05, torch.Generator().manual_seed(1))
    assert abs(float((y - 0.5).std()) - 0.05) < 0.003


def test_measure_uses_the_official_gaussian_kernel_and_circular_blur(prior):
    gt = _faces(2, 64)
    restorer = DiffPIRRestorer(prior, "deblur_gaussian", kernel_size=21, sigma_n=0.0)
    batch = restorer.measure({"gt": gt, "lq": gt, "index": torch.tensor([3, 7])})
    for row, index in enumerate((3, 7)):
        kernel = gaussian_kernel(21, official_gaussian_sigma(index) * 21 / 61)
        assert torch.allclose(batch["kernel"][row], kernel)
        assert torch.allclose(batch["lq"][row:row + 1], _circular_blur(gt[row:row + 1], kernel), atol=1e-5)


def test_measure_inpainting_masks_from_the_batch_or_generated(prior):
    gt = _faces(2)
    batch_mask = torch.ones(2, 1, 32, 32)
    batch_mask[:, :, 8:16, 8:16] = 0
    from_batch = DiffPIRRestorer(prior, "inpainting").measure(
        {"gt": gt, "lq": gt, "mask": batch_mask, "index": torch.tensor([0, 1])})
    assert torch.equal(from_batch["mask"], batch_mask)
    assert torch.all(from_batch["lq"][:, :, 8:16, 8:16] == 0)  # missing pixels are black, as the official
    assert torch.allclose(from_batch["lq"][:, :, 20:, 20:], gt[:, :, 20:, 20:])
    boxes = DiffPIRRestorer(prior, "inpainting", mask="box").measure(
        {"gt": gt, "lq": gt, "mask": batch_mask, "index": torch.tensor([0, 1])})
    assert torch.equal(boxes["mask"][1], generated_mask("box", 32, 32, 1))
    assert float(boxes["mask"].mean()) == pytest.approx(0.75)  # half height x half width missing


def test_fixed_seed_gives_identical_output_and_batches_work(prior):
    gt = _faces(2)
    restorer = DiffPIRRestorer(prior, "inpainting", mask="box", nfe=5)
    batch = restorer.measure({"gt": gt, "lq": gt, "index": torch.tensor([0, 1])})
    runs = [restorer.restore(batch["lq"], generator=torch.Generator().manual_seed(3), mask=batch["mask"])
            for _ in range(2)]
    assert runs[0].shape == gt.shape and torch.equal(runs[0], runs[1])
    other = restorer.restore(batch["lq"], generator=torch.Generator().manual_seed(4), mask=batch["mask"])
    assert not torch.equal(runs[0], other)
    known = batch["mask"].expand_as(gt) > 0  # the data step keeps the known pixels (up to the last t's noise)
    assert (runs[0] - gt)[known].abs().max() < 0.05


def test_different_kernels_in_one_batch_are_restored_per_image(prior):
    gt = _faces(2)
    restorer = DiffPIRRestorer(prior, "deblur_motion", kernel_size=9, nfe=3)
    batch = restorer.measure({"gt": gt, "lq": gt, "index": torch.tensor([0, 1])})
    assert not torch.equal(batch["kernel"][0], batch["kernel"][1])
    out = restorer.restore(batch["lq"], generator=torch.Generator().manual_seed(0), kernel=batch["kernel"])
    assert out.shape == gt.shape and torch.isfinite(out).all()


def test_sr_restores_to_the_high_resolution_size(prior):
    restorer = DiffPIRRestorer(prior, "sr_x2", nfe=3)
    assert restorer.restore(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)
    assert restorer.nfe() == 3 and restorer.settings()["lam"] == 6.0  # official SR settings


def test_bad_options_fail_clearly(prior):
    with pytest.raises(ConfigError, match="no setting"):
        DiffPIRRestorer(prior, "inpainting", gamma=1)
    with pytest.raises(ConfigError, match="mask="):
        DiffPIRRestorer(prior, "inpainting", mask="circle")
    with pytest.raises(ConfigError, match="lam=-1"):
        DiffPIRRestorer(prior, "sr_x2", lam=-1.0)  # at once, not after the prior has loaded and data is read
    restorer = DiffPIRRestorer(prior, "inpainting")
    with pytest.raises(ConfigError, match="needs the mask"):
        restorer.restore(torch.rand(1, 3, 32, 32))
    with pytest.raises(DataError, match="sums to"):
        DiffPIRRestorer(prior, "deblur_gaussian", kernel=torch.ones(3, 3)).restore(torch.rand(1, 3, 32, 32))


def test_model_diffpir_checks_its_settings_before_any_image(tmp_path, prior):
    """configs/model/diffpir.yaml's factory: bad masks and options fail at once; a mask folder is read per image."""
    from core.restorer import build_restorer
    from diffpir.restorer import diffpir_model

    torch.save(prior.state_dict(), tmp_path / "prior.pt")
    with pytest.raises(ConfigError, match="mask=circle"):
        diffpir_model(str(tmp_path / "prior.pt"), "inpainting", mask="circle")
    with pytest.raises(ConfigError, match="no such file"):
        diffpir_model(str(tmp_path / "missing.pt"), "inpainting")
    module = diffpir_model(str(tmp_path / "prior.pt"), "inpainting", mask=str(tmp_path))
    assert module.run_config is None and build_restorer(module).mask_kind == "batch"
    with pytest.raises(ConfigError, match="tile"):
        build_restorer(module, {"tile": 16})
    with pytest.raises(ConfigError, match="has no option sampler"):
        build_restorer(module, {"sampler": "ode"})
    assert build_restorer(module, {"steps": 7}).nfe() == 7


def test_deblurring_without_a_kernel_says_which_kernel_it_uses(prior, caplog):
    """restore.py task=deblur_gaussian without kernel=: one line saying the official kernel of image 0 is used."""
    import logging

    caplog.set_level(logging.WARNING, logger="diffpir.restorer")
    restorer = DiffPIRRestorer(prior, "deblur_gaussian", kernel_size=9, nfe=2)
    restorer.restore(torch.rand(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    (record,) = [r for r in caplog.records if r.name == "diffpir.restorer"]
    assert "without kernel=" in record.getMessage() and "image 0" in record.getMessage()
    caplog.clear()
    restorer.restore(torch.rand(1, 3, 32, 32), kernel=torch.full((9, 9), 1 / 81))
    assert not [r for r in caplog.records if r.name == "diffpir.restorer"]
