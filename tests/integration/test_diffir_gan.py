"""DiffIR S2-GAN end to end on tiny demo data: train.py stage 1 -> stage 2 -> S2-GAN -> evaluate.py; what each
step trains (generator and discriminator) and keeps frozen (teacher), one counted step per iteration, exact
resume, and clear errors for a wrong model.stage2_ckpt."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchvision.models import vgg as tv_vgg  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from core.errors import CheckpointError, ConfigError  # noqa: E402

# the tiny overrides of test_diffir_pipeline.py, on the demo "sr" task; 2 batches an epoch
TINY = [
    "model.net.dim=8",
    "model.net.num_blocks=[1,1,1,1]",
    "model.net.heads=[1,1,1,1]",
    "model.net.num_refinement_blocks=1",
    "model.net.n_encoder_res=1",
    "model.val_panels=2",
    "data.task=sr",
    "data.patch_size=32",
    "data.image_size=32",
    "data.train_samples=8",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.precision=32",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks.checkpoint.save_top_k=-1",
]
# both learning rates halve at every iteration (the demo's are constant), to see both schedulers step
GAN = [
    "model.discriminator.num_feat=8",
    "trainer.max_steps=4",
    "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Snapshots(L.Callback):
    """Copies of the generator, discriminator and teacher weights before training and after the first step."""

    taken: dict[str, dict[str, dict[str, torch.Tensor]]] = {}

    @staticmethod
    def _take(pl_module) -> dict[str, dict[str, torch.Tensor]]:
        return {
            name: {k: v.detach().clone() for k, v in getattr(pl_module, name).state_dict().items()}
            for name in ("net", "discriminator", "teacher")
        }

    def on_train_start(self, trainer, pl_module) -> None:
        Snapshots.taken["start"] = self._take(pl_module)
        Snapshots.taken["global_step_start"] = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "first" not in Snapshots.taken:
            Snapshots.taken["first"] = self._take(pl_module)
            Snapshots.taken["global_step_first"] = trainer.global_step


class NaNAt2(L.Callback):
    """Makes the ground truth of iteration 2 NaN, after copying the weights."""

    module = None
    before: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            NaNAt2.module = pl_module
            NaNAt2.before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            batch["gt"].fill_(float("nan"))


def write_random_vgg19(path: Path) -> Path:
    """A torchvision-style VGG19 state dict with random weights (``features.*`` only; nothing downloaded)."""
    torch.manual_seed(0)
    features = tv_vgg.make_layers(tv_vgg.cfgs["E"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def config(experiment: str, out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train", overrides=[f"experiment={experiment}", *TINY, f"paths.output_dir={out_dir}", *overrides]
        )


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 (2 steps), stage 2 from it (2 joint steps), S2-GAN from that (4 steps, checkpoints at 2 and 4)."""
    from train import train

    root = tmp_path_factory.mktemp("diffir_gan")
    vgg = write_random_vgg19(root / "vgg19-random.pth")
    train(config("diffir_s1_demo", root / "s1"))
    stage1 = root / "s1" / "checkpoints" / "last.ckpt"
    train(config("diffir_s2_demo", root / "s2", f"model.stage1_ckpt={stage1}", "model.encoder_iter=0"))
    stage2 = root / "s2" / "checkpoints" / "last.ckpt"
    Snapshots.taken = {}
    gan_args = [*GAN, f"model.stage2_ckpt={stage2}", f"model.perceptual.weights_path={vgg}"]
    train(
        config(
            "diffir_s2gan_demo",
            root / "gan",
            *gan_args,
            "+callbacks.probe._target_=tests.integration.test_diffir_gan.Snapshots",
        )
    )
    return {
        "root": root,
        "vgg": vgg,
        "stage1": stage1,
        "stage2": stage2,
        "gan": root / "gan",
        "gan_args": gan_args,
        "snapshots": dict(Snapshots.taken),
    }


def test_gan_starts_from_the_stage2_ema_weights_and_trains_generator_and_discriminator(runs):
    snaps, s2 = runs["snapshots"], _load(runs["stage2"])["state_dict"]
    start, first = snaps["start"], snaps["first"]
    assert snaps["global_step_start"] == 0 and snaps["global_step_first"] == 1  # one counted step per iteration
    for key, value in start["net"].items():  # generator = the stage-2 EMA network
        torch.testing.assert_close(value, s2[f"ema_net.{key}"], rtol=0, atol=0, msg=key)
    for key, value in start["teacher"].items():
        torch.testing.assert_close(value, s2[f"teacher.{key}"], rtol=0, atol=0, msg=key)
    changed = [k for k in start["net"] if not torch.equal(start["net"][k], first["net"][k])]
    assert any(k.startswith("G.") for k in changed) and any(k.startswith("condition.") for k in changed)
    assert any(k.startswith("denoise.") for k in changed)
    assert any(
        not torch.equal(start["discriminator"][k], first["discriminator"][k])
        for k in start["discriminator"]
        if k.endswith("weight_orig")
    )
    assert all(torch.equal(start["teacher"][k], first["teacher"][k]) for k in start["teacher"])


def test_gan_checkpoint_holds_both_optimizers_the_discriminator_and_no_vgg(runs):
    ckpt = _load(runs["gan"] / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    adam_g, adam_d = (state["state"] for state in ckpt["optimizer_states"])
    assert {int(s["step"]) for s in adam_g.values()} == {4} and {int(s["step"]) for s in adam_d.values()} == {4}
    # both schedulers stepped once per iteration (scheduler_d follows model.scheduler): lr * 0.5 ** 4
    assert [sched["last_epoch"] for sched in ckpt["lr_schedulers"]] == [4, 4]
    lrs = [state["param_groups"][0]["lr"] for state in ckpt["optimizer_states"]]
    assert lrs == pytest.approx([2e-4 / 16, 1e-4 / 16])
    keys = ckpt["state_dict"]
    assert any(k.startswith("discriminator.conv1.weight_orig") for k in keys)
    assert any(k.startswith("ema_net.") for k in keys) and any(k.startswith("teacher.") for k in keys)
    assert not any("vgg" in k or "perceptual" in k for k in keys)
    assert ckpt["config"]["model"]["_target_"] == "diffir.stage2_gan.DiffIRStage2GANModule"
    logged = (runs["gan"]).rglob("metrics.csv")
    header = next(iter(logged)).read_text().splitlines()[0]
    for name in (
        "train/loss",
        "train/l_pix",
        "train/l_percep",
        "train/l_g_gan",
        "train/l_d_real",
        "train/l_d_fake",
        "train/out_d_real",
        "train/out_d_fake",
        "train/l_abs",
        "train/l_kd",
    ):
        assert name in header, name


def test_evaluate_gan_checkpoint_without_vgg(runs, tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no VGG anywhere: not needed
    out = tmp_path / "eval"
    ckpt = runs["gan"] / "checkpoints" / "last.ckpt"
    summary = evaluate.main([f"ckpt={ckpt}", f"out={out}", "progress=false", "perceptual=false"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_images"] == 5 and saved["nfe"] == 4
    for key in ("psnr", "ssim", "psnr_input"):
        assert np.isfinite(saved[key]) and saved[key] == pytest.approx(summary[key])


def test_gan_resume_is_exact(runs, tmp_path):
    """Resuming from the step-2 checkpoint (discriminator, both Adams, RNG) needs no stage-2 file."""
    from train import train

    step2 = next((runs["gan"] / "checkpoints").glob("best-step0000002*.ckpt"))
    out = tmp_path / "resumed"
    args = [a for a in runs["gan_args"] if not a.startswith("model.stage2_ckpt=")]
    train(config("diffir_s2gan_demo", out, *args, f"ckpt_path={step2}"))
    a = _load(runs["gan"] / "checkpoints" / "last.ckpt")
    b = _load(out / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_official_basicsr_stage2_file_needs_and_uses_stage1_ckpt(runs, tmp_path):
    """An official-style file ({'params', 'params_ema'}, no teacher): the teacher comes from model.stage1_ckpt."""
    from hydra.utils import instantiate

    s2 = _load(runs["stage2"])["state_dict"]
    ema = {k[len("ema_net.") :]: v for k, v in s2.items() if k.startswith("ema_net.")}
    raw = {k[len("net.") :]: v for k, v in s2.items() if k.startswith("net.")}
    # as the official save: one copy of the shared CPEN_S2 / denoiser (the diffusion.* aliases) is enough
    official = tmp_path / "net_g_latest.pth"
    torch.save(
        {"params": raw, "params_ema": {k: v for k, v in ema.items() if not k.startswith("diffusion.model.")}}, official
    )
    cfg = config(
        "diffir_s2gan_demo",
        tmp_path / "run",
        *GAN,
        f"model.stage2_ckpt={official}",
        f"model.perceptual.weights_path={runs['vgg']}",
    )
    module = instantiate(cfg.model)
    with pytest.raises(CheckpointError, match="model.stage1_ckpt="):
        module.load_initial_weights()  # what setup() calls when a fresh run starts
    module = instantiate(cfg.model, stage1_ckpt=str(runs["stage1"]))
    module.load_initial_weights(OmegaConf.to_container(cfg.data, resolve=True))
    for key, value in module.net.state_dict().items():
        torch.testing.assert_close(value, ema[key], rtol=0, atol=0, msg=key)
    s1 = _load(runs["stage1"])["state_dict"]
    for key, value in module.teacher.state_dict().items():
        torch.testing.assert_close(value, s1[f"ema_net.E.{key}"], rtol=0, atol=0, msg=key)
    assert all(torch.equal(a, b) for a, b in zip(module.ema_net.parameters(), module.net.parameters()))


def test_non_finite_loss_stops_before_any_step(runs, tmp_path):
    from core.training import NonFiniteLossError
    from train import train

    NaNAt2.module, NaNAt2.before = None, {}
    args = [*runs["gan_args"], "+callbacks.nan._target_=tests.integration.test_diffir_gan.NaNAt2"]
    with pytest.raises(NonFiniteLossError, match=r"generator loss became nan at step 1.*model\.optimizer\.lr"):
        train(config("diffir_s2gan_demo", tmp_path / "run", *args))
    after = NaNAt2.module.state_dict()  # (the discriminator's power-iteration vectors move in any forward)
    assert NaNAt2.before and all(
        torch.equal(after[k], v) for k, v in NaNAt2.before.items() if not k.endswith(("weight_u", "weight_v"))
    )
    assert NaNAt2.module.trainer.global_step == 1
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_stage1_checkpoint_as_stage2_ckpt_fails_clearly(runs, tmp_path):
    from train import train

    args = [*GAN, f"model.stage2_ckpt={runs['stage1']}", f"model.perceptual.weights_path={runs['vgg']}"]
    with pytest.raises(CheckpointError, match=r"model\.stage2_ckpt=.*stage-1 network.*experiment=diffir_s2_"):
        train(config("diffir_s2gan_demo", tmp_path / "a", *args))
    with pytest.raises(ConfigError, match=r"model\.net\.dim"):
        train(
            config(
                "diffir_s2gan_demo",
                tmp_path / "b",
                *args[:-2],
                f"model.stage2_ckpt={runs['stage2']}",
                f"model.perceptual.weights_path={runs['vgg']}",
                "model.net.dim=16",
            )
        )
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()


def test_missing_vgg_weights_stop_before_training_naming_the_file_and_the_setting(runs, tmp_path):
    from train import train

    missing = tmp_path / "vgg19-dcbb9e9d.pth"
    with pytest.raises(ConfigError) as err:
        train(
            config(
                "diffir_s2gan_demo",
                tmp_path / "run",
                *GAN,
                f"model.stage2_ckpt={runs['stage2']}",
                f"model.perceptual.weights_path={missing}",
            )
        )
    assert str(missing) in str(err.value) and "model.perceptual.weights_path=" in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
