"""DiffIR training recipes: the losses, the stage-2 phases, stage-1 loading checks, the LR schedules, the
progressive patch schedule, restoration (inpainting input and composite), and the experiment configs."""

from __future__ import annotations

import math
import os
import re
from functools import partial
from types import SimpleNamespace

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from core.errors import CheckpointError, ConfigError  # noqa: E402
from diffir.losses import IPRLoss, PixelLoss, ipr_kd_losses  # noqa: E402
from diffir.module import ProgressivePatches, crop_batch  # noqa: E402
from diffir.networks import DiffIRS1, DiffIRS2  # noqa: E402
from diffir.stage1 import CyclicCosineLR, DiffIRStage1Module  # noqa: E402
from diffir.stage2 import DiffIRStage2Module, TwoPhaseLR  # noqa: E402
from diffir.stage2_init import load_stage1  # noqa: E402

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1), n_encoder_res=1)
ADAM = partial(torch.optim.Adam, lr=1e-3)


def _jitter(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- losses


def test_kd_losses_match_a_hand_computation():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(3, 256)), rng.normal(size=(3, 256))
    t, w = 0.15, 0.7
    p, q = _softmax(z1 / t), _softmax(z2 / t)
    kl = np.sum(p * (np.log(p) - np.log(q))) / 3  # KL(teacher || student), averaged over the batch
    l_abs = np.mean(np.abs(z2 - z1))
    l_kd, l_abs_t = ipr_kd_losses(torch.tensor(z2), torch.tensor(z1), temperature=t, weight=w)
    assert l_kd.item() == pytest.approx(w * kl, rel=1e-9)
    assert l_abs_t.item() == pytest.approx(w * l_abs, rel=1e-12)


@pytest.mark.parametrize("backprop", ["l_abs", "kd+l_abs"])
def test_ipr_loss_backpropagates_what_is_configured(backprop):
    torch.manual_seed(0)
    t, b, d = 0.15, 2, 256
    z1 = torch.randn(b, d, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(b, d, dtype=torch.float64, requires_grad=True)
    loss, logs = IPRLoss(weight=1.0, temperature=t, backprop=backprop)(z2, z1)
    loss.backward()
    # d/dz2 mean|z2 - z1| = sign / (B D); d/dz2 KL = (softmax(z2/T) - softmax(z1/T)) / (T B)
    expected = torch.sign(z2 - z1).detach() / (b * d)
    if backprop == "kd+l_abs":
        expected += (torch.softmax(z2 / t, 1) - torch.softmax(z1 / t, 1)).detach() / (t * b)
        assert loss.item() == pytest.approx((logs["l_kd"] + logs["l_abs"]).item())
    else:
        assert loss.item() == pytest.approx(logs["l_abs"].item())
    torch.testing.assert_close(z2.grad, expected)
    assert z1.grad is None  # the teacher's IPR is a target only
    assert logs["l_kd"].item() > 0


def test_ipr_loss_rejects_an_unknown_mode():
    with pytest.raises(ConfigError, match="model.kd.backprop"):
        IPRLoss(backprop="kl")


def test_pixel_loss_weights_known_and_missing_pixels():
    rng = np.random.default_rng(1)
    out, gt = rng.random((2, 3, 4, 5)), rng.random((2, 3, 4, 5))
    known = (rng.random((2, 1, 4, 5)) > 0.5).astype(float)
    weights = known * 10.0 + (1 - known) * 0.5
    expected = 2.0 * np.mean(weights * np.abs(out - gt))
    got = PixelLoss(weight=2.0, known_weight=10.0, missing_weight=0.5)(
        torch.tensor(out), torch.tensor(gt), torch.tensor(known))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert PixelLoss()(torch.tensor(out), torch.tensor(gt)).item() == pytest.approx(np.mean(np.abs(out - gt)))


# ---------------------------------------------------------------- stage 2: initialisation and phases


def _stage1_file(tmp_path, name="s1.pth", seed=1, **overrides):
    s1 = _jitter(DiffIRS1(**{**TINY, **overrides}), seed)
    path = tmp_path / name
    torch.save({"params_ema": s1.state_dict()}, path)  # the official BasicSR layout
    return s1, path


def _stage2(tmp_path, encoder_iter: int, **kwargs):
    s1, path = _stage1_file(tmp_path)
    module = DiffIRStage2Module(_jitter(DiffIRS2(**TINY), 2), encoder_iter=encoder_iter, optimizer=ADAM,
                                stage1_ckpt=str(path), **kwargs)
    module.load_initial_weights()
    return module, s1


def _batch(n=2, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, size, size, generator=gen)
    return {"lq": (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1), "gt": gt,
            "index": torch.arange(n), "name": [f"im{i}" for i in range(n)]}


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _one_step(module, batch) -> tuple[torch.Tensor, dict]:
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    loss, extras = module.training_loss(batch)
    loss.backward()
    module.on_after_backward()  # as Lightning calls it
    optimizer.step()
    return loss, extras


def test_stage1_weights_initialise_the_dirformer_and_the_teacher(tmp_path):
    module, s1 = _stage2(tmp_path, encoder_iter=0)
    for key, value in s1.G.state_dict().items():
        torch.testing.assert_close(module.net.G.state_dict()[key], value, rtol=0, atol=0)
        torch.testing.assert_close(module.ema_net.G.state_dict()[key], value, rtol=0, atol=0)
    for key, value in s1.E.state_dict().items():
        torch.testing.assert_close(module.teacher.state_dict()[key], value, rtol=0, atol=0)
    assert not any(p.requires_grad for p in module.teacher.parameters())
    module.train()
    assert not module.teacher.training


def test_phase1_trains_only_cpen_s2_and_the_denoiser(tmp_path):
    module, s1 = _stage2(tmp_path, encoder_iter=10)
    before = _snapshot(module)
    batch = _batch()
    torch.manual_seed(5)
    loss, extras = _one_step(module, batch)
    after = _snapshot(module)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert all(k.startswith(("net.condition.", "net.denoise.")) for k in changed), sorted(changed)[:5]
    for prefix in ("net.condition.", "net.denoise."):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert "l_pix" not in extras
    assert all(p.grad is None for p in module.net.G.parameters())  # not stepped at all, not even by zero
    # the loss is the official l_abs: L1 between the chain's IPR and the stage-1 IPR (via DiffIRS1.encode)
    reference = DiffIRS2Reference(before)  # built before seeding: its initialisation draws random numbers
    torch.manual_seed(5)
    with torch.no_grad():
        target = s1.encode(batch["lq"], batch["gt"])
        _, ipr, _ = reference.forward_train(batch["lq"], target)
    assert loss.item() == pytest.approx((ipr - target).abs().mean().item(), rel=1e-5)


def DiffIRS2Reference(params: dict[str, torch.Tensor]) -> DiffIRS2:  # noqa: N802 - reads like a class
    """A fresh DiffIRS2 holding the module's parameters as they were before the step."""
    net = DiffIRS2(**TINY)
    net.load_state_dict({k[4:]: v for k, v in params.items() if k.startswith("net.")}, strict=False)
    return net


def test_phase2_trains_the_dirformer_jointly(tmp_path):
    module, s1 = _stage2(tmp_path, encoder_iter=0)
    before = _snapshot(module)
    batch = _batch()
    torch.manual_seed(7)
    loss, extras = _one_step(module, batch)
    after = _snapshot(module)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for prefix in ("net.G.", "net.condition.", "net.denoise."):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert not any(k.startswith(("teacher.", "ema_net.")) for k in changed)
    # L1 reconstruction + l_abs, computed here from the networks' own public calls
    reference = DiffIRS2Reference(before)
    torch.manual_seed(7)
    with torch.no_grad():
        target = s1.encode(batch["lq"], batch["gt"])
        restored, ipr, _ = reference.forward_train(batch["lq"], target)
    expected = (restored - batch["gt"]).abs().mean() + (ipr - target).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert extras["l_pix"].item() == pytest.approx((restored - batch["gt"]).abs().mean().item(), rel=1e-5)


def test_stage1_file_of_another_shape_is_refused_naming_the_setting(tmp_path):
    _, path = _stage1_file(tmp_path, dim=16)
    module = DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM)
    with pytest.raises(ConfigError, match=r"model\.stage1_ckpt=.*model\.net\.dim=8"):
        load_stage1(module, path)
    _, path = _stage1_file(tmp_path, name="ffn.pth", ffn_expansion_factor=3.0)
    with pytest.raises(ConfigError, match=r"model\.net\.ffn_expansion_factor"):
        load_stage1(module, path)


def test_stage2_file_or_missing_file_is_refused(tmp_path):
    module = DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM)
    torch.save({"params_ema": DiffIRS2(**TINY).state_dict()}, tmp_path / "s2.pth")
    with pytest.raises(CheckpointError, match="stage-2 network"):
        load_stage1(module, tmp_path / "s2.pth")
    with pytest.raises(CheckpointError, match="model.stage1_ckpt"):
        load_stage1(module, tmp_path / "missing.pth")


def test_setup_loads_stage1_only_when_a_fresh_run_starts(tmp_path):
    """Lightning's setup hook: a fresh fit loads model.stage1_ckpt; resuming (trainer.ckpt_path) and
    evaluation do not need it; a fresh fit without it is refused naming the setting."""
    s1, path = _stage1_file(tmp_path)
    for resume, trainer_path, stage in [("r.ckpt", None, "fit"), (None, "r.ckpt", "fit"), (None, None, "validate"),
                                        (None, None, "test")]:
        module = DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM)  # no stage1_ckpt: never read
        module.trainer, module.run_config = SimpleNamespace(ckpt_path=trainer_path), {"ckpt_path": resume}
        module.setup(stage)
    module.trainer, module.run_config = SimpleNamespace(ckpt_path=None), {"ckpt_path": None}
    with pytest.raises(ConfigError, match=r"model\.stage1_ckpt=<stage-1 run>"):
        module.setup("fit")
    module = DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM, stage1_ckpt=str(path))
    module.trainer = SimpleNamespace(ckpt_path=None)  # an official file stores no data config: nothing to check
    module.run_config = {"data": {"task": "rain"}}
    module.setup("fit")
    for key, value in s1.G.state_dict().items():
        torch.testing.assert_close(module.ema_net.G.state_dict()[key], value, rtol=0, atol=0)


def test_stage1_run_on_other_data_is_refused(tmp_path):
    s1 = DiffIRS1(**TINY)
    path = tmp_path / "suite.ckpt"
    stored_data = {"_target_": "data.datamodules.DemoDataModule", "task": "rain", "patch_size": 64}
    torch.save({"state_dict": {f"ema_net.{k}": v for k, v in s1.state_dict().items()},
                "config": {"data": stored_data}}, path)
    ours = {**stored_data, "task": "blur", "patch_size": 32}  # patch size may differ, the task may not
    module = DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM)
    with pytest.raises(ConfigError, match=r"model\.stage1_ckpt=.*data\.task='rain'.*data\.task='blur'"):
        load_stage1(module, path, ours)
    load_stage1(DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM, stage1_match=[]), path, ours)
    load_stage1(module, path, {**stored_data, "patch_size": 32})
    module.trainer, module.run_config = SimpleNamespace(ckpt_path=None), {"data": ours}  # setup: the run's data
    module.stage1_ckpt = str(path)
    with pytest.raises(ConfigError, match=r"data\.task='rain'"):
        module.setup("fit")


def test_release_weights_replace_the_network_of_the_same_stage(tmp_path):
    release = _jitter(DiffIRS2(**TINY), 9)
    torch.save({"params_ema": release.state_dict()}, tmp_path / "net_g.pth")
    module = DiffIRStage2Module(DiffIRS2(**TINY), optimizer=ADAM)
    module.load_release_weights(tmp_path / "net_g.pth")
    for key, value in release.state_dict().items():
        torch.testing.assert_close(module.eval_net.state_dict()[key], value, rtol=0, atol=0)
    _, s1_path = _stage1_file(tmp_path)
    with pytest.raises(CheckpointError, match="stage-1"):
        module.load_release_weights(s1_path)


def test_a_module_refuses_the_other_stage_network():
    with pytest.raises(ConfigError, match="stage-2"):
        DiffIRStage1Module(DiffIRS2(**TINY), optimizer=ADAM)


# ---------------------------------------------------------------- learning-rate schedules


def _lrs(scheduler_factory, steps: int, lr: float = 2e-4) -> list[float]:
    """The lr each of the first `steps` optimizer steps uses (as Lightning steps the scheduler)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = scheduler_factory(optimizer)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_two_phase_lr_is_the_official_formula():
    # official: iter < 100000: 2e-4 * 0.1^(iter // 60000); else 2e-4 * 0.5^((iter - 100000) // 80000)
    sched = TwoPhaseLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4), encoder_iter=100000)
    for iteration, lr in [(1, 2e-4), (59999, 2e-4), (60000, 2e-5), (99999, 2e-5), (100000, 2e-4),
                          (179999, 2e-4), (180000, 1e-4), (339999, 5e-5), (340000, 2.5e-5)]:
        assert sched.lr_at(iteration, 2e-4) == pytest.approx(lr, rel=1e-12), iteration
    # stepped: the k-th optimizer step is iteration k (encoder_iter 5, decays every 2 / 3 iterations)
    got = _lrs(partial(TwoPhaseLR, encoder_iter=5, encoder_gamma=0.1, encoder_every=2, joint_lr=1.0,
                       joint_gamma=0.5, joint_every=3), 10, lr=1.0)
    expected = [1.0 * 0.1 ** (k // 2) if k < 5 else 0.5 ** ((k - 5) // 3) for k in range(1, 11)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cyclic_cosine_lr_matches_basicsr():
    base, periods, weights, mins = 2e-4, [4, 6], [1.0, 0.5], [3e-4, 1e-6]
    got = _lrs(partial(CyclicCosineLR, periods=periods, restart_weights=weights, eta_mins=mins), 12, lr=base)
    expected = []
    for it in range(1, 13):  # BasicSR: cycle i holds iterations (start, end], start = sum(periods[:i])
        i = 0 if it <= 4 else 1 if it <= 10 else None
        if i is None:
            expected.append(mins[-1])
            continue
        start = [0, 4][i]
        expected.append(mins[i] + weights[i] * 0.5 * (base - mins[i]) * (1 + math.cos(math.pi * (it - start)
                                                                                        / periods[i])))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    gopro = CyclicCosineLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4), [92000, 208000],
                           [1, 1], [0.000285, 0.000001])
    assert gopro.lr_at(92000, 2e-4) == pytest.approx(2.85e-4)
    assert gopro.lr_at(300000, 2e-4) == pytest.approx(1e-6)


# ---------------------------------------------------------------- progressive patches


def _find_window(big: torch.Tensor, small: torch.Tensor) -> tuple[int, int] | None:
    p = small.shape[-1]
    for y in range(big.shape[-2] - p + 1):
        for x in range(big.shape[-1] - p + 1):
            if torch.equal(big[..., y:y + p, x:x + p], small):
                return y, x
    return None


@pytest.mark.parametrize("scale", [1, 2])
def test_crop_batch_keeps_a_subset_and_one_shared_window(scale):
    n, size = 6, 16
    gt = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    lq = torch.nn.functional.avg_pool2d(gt, scale) if scale > 1 else gt * 0.5
    mask = (torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    names = [f"n{i}" for i in range(n)]
    batch = {"lq": lq, "gt": gt, "mask": mask, "index": torch.arange(n) + 10, "name": names}
    origins = set()
    for seed in range(4):
        out = crop_batch(batch, patch_size=8, batch_size=3, generator=torch.Generator().manual_seed(seed))
        assert out["gt"].shape == (3, 3, 8, 8) and out["mask"].shape == (3, 1, 8, 8)
        assert out["lq"].shape == (3, 3, 8 // scale, 8 // scale)
        rows = (out["index"] - 10).tolist()
        assert len(set(rows)) == 3 and out["name"] == [f"n{i}" for i in rows]
        windows = {_find_window(gt[r], out["gt"][i]) for i, r in enumerate(rows)}
        assert len(windows) == 1 and None not in windows
        y, x = windows.pop()
        assert y % scale == 0 and x % scale == 0
        for i, r in enumerate(rows):
            assert torch.equal(out["mask"][i], mask[r][..., y:y + 8, x:x + 8])
            ly, lx, cell = y // scale, x // scale, 8 // scale
            assert torch.equal(out["lq"][i], lq[r][..., ly:ly + cell, lx:lx + cell])
        origins.add((y, x))
    assert len(origins) > 1  # the window moves


def test_progressive_callback_follows_the_official_schedule():
    gopro = ProgressivePatches([92000, 80000, 38000, 33000, 33000, 24000], [192, 256, 320, 384, 464, 512],
                               [8, 4, 2, 2, 1, 1], seed=0)
    expected = [(1, 0), (92000, 0), (92001, 1), (172000, 1), (172001, 2), (300000, 5), (400000, 5)]
    for iteration, stage in expected:
        assert gopro.stage_at(iteration) == stage, iteration
    callback = ProgressivePatches([2, 3], [8, 16], [2, 4], seed=0)
    sizes = []
    for step in range(6):
        batch = _batch(n=4, size=16)
        trainer = SimpleNamespace(global_step=step, global_rank=0, is_global_zero=True)
        callback.on_train_batch_start(trainer, None, batch, step)  # crops the batch in place
        sizes.append(tuple(batch["gt"].shape))
    assert sizes == [(2, 3, 8, 8)] * 2 + [(4, 3, 16, 16)] * 4
    trainer = SimpleNamespace(datamodule=SimpleNamespace(patch_size=12, batch_size=4))
    with pytest.raises(ConfigError, match="data.patch_size=12"):
        callback.setup(trainer, None, "fit")


# ---------------------------------------------------------------- restoration


def test_stage1_restores_with_the_ground_truth_prior():
    net = _jitter(DiffIRS1(**TINY), 3)
    module = DiffIRStage1Module(net, optimizer=ADAM, ema={"decay": 0})
    batch = _batch(n=1, size=20)
    with pytest.raises(ConfigError, match="gt="):
        module.restore(batch["lq"])
    with torch.no_grad():
        expected = net.eval()(batch["lq"], batch["gt"]).clamp(0, 1)
    torch.testing.assert_close(module.restore(batch["lq"], gt=batch["gt"]), expected)
    assert module.restorer().conditions == ("gt",)


def test_stage2_restore_is_seeded_and_tiles_share_one_ipr(tmp_path):
    module, _ = _stage2(tmp_path, encoder_iter=0)
    lq = _batch(n=1, size=24)["lq"]
    out = module.restore(lq, generator=torch.Generator().manual_seed(4))
    again = module.restore(lq, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    with torch.no_grad():
        noise = torch.randn((1, 256), generator=torch.Generator().manual_seed(4))
        expected = module.ema_net(lq, noise=noise).clamp(0, 1)
    torch.testing.assert_close(out, expected)
    one_tile = module.restore(lq, generator=torch.Generator().manual_seed(4), tile=32)
    torch.testing.assert_close(one_tile, out, rtol=0, atol=0)
    tiled = module.restore(lq, generator=torch.Generator().manual_seed(4), tile=16, overlap=8)
    assert tiled.shape == out.shape and torch.isfinite(tiled).all()
    with pytest.raises(ConfigError, match="has no option steps"):
        module.restore(lq, steps=3)
    assert module.restorer().nfe() == 4


def test_inpainting_input_and_composite():
    net = _jitter(DiffIRS1(inp_channels=4, **TINY), 4)
    module = DiffIRStage1Module(net, optimizer=ADAM, ema={"decay": 0})
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 3, 16, 16, generator=gen) * 0.9
    known = (torch.rand(1, 1, 16, 16, generator=gen) > 0.3).float()
    lq = gt * known + (1 - known)  # missing pixels white, as data.masks.apply_mask
    inp = module.network_input(lq, known)
    torch.testing.assert_close(inp, torch.cat([gt * known, 1 - known], dim=1))
    torch.testing.assert_close(module.network_input(lq, None), inp)  # mask read off the white pixels
    out = module.restore(lq, gt=gt, mask=known)
    kept = known.expand_as(out).bool()
    assert torch.equal(out[kept], lq[kept])
    with torch.no_grad():
        raw = net.eval()(inp, gt).clamp(0, 1)
    torch.testing.assert_close(out[~kept], raw[~kept])
    assert module.restorer().conditions == ("gt", "mask")


# ---------------------------------------------------------------- experiment configs

SMALL_NET = ["model.net.dim=8", "model.net.num_blocks=[1,1,1,1]", "model.net.num_refinement_blocks=1",
             "model.net.n_encoder_res=1"]
DIFFIR_EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("diffir_*.yaml"))


@pytest.mark.parametrize("experiment", DIFFIR_EXPERIMENTS)
def test_experiment_builds_its_module_optimizer_and_callbacks(experiment):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *SMALL_NET])
    module = instantiate(cfg.model)
    assert module.stage == (1 if re.search(r"_s1(_|$)", experiment) else 2)
    configured = module.configure_optimizers()
    if isinstance(configured, dict):
        scheduler = configured["lr_scheduler"]["scheduler"]
        if isinstance(scheduler, TwoPhaseLR):
            assert scheduler.encoder_iter == cfg.model.encoder_iter
    if cfg.callbacks.get("progressive"):
        progressive = instantiate(cfg.callbacks.progressive)
        assert max(progressive.patch_sizes) == cfg.data.patch_size
        assert max(progressive.batch_sizes) == cfg.data.batch_size
    assert module.inpainting == ("inpaint" in experiment)
    if module.stage == 2 and ("inpaint" in experiment or "_sr" in experiment):
        assert module.encoder_iter == 0  # official SR / inpainting / S2-GAN recipes: joint from the start
