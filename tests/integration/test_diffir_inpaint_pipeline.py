"""DiffIR inpainting with the official (LaMa) recipe end to end on a tiny face folder: train.py stage 1 -> stage 2
-> evaluate.py, a random-weight ADE20k encoder file standing in for the perceptual weights; what each stage
trains, what the checkpoints hold, the missing-encoder message, and release weights through the new recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from PIL import Image  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from core.errors import ConfigError  # noqa: E402
from diffir.hrf_perceptual import ADE20K_URL, DilatedResNet50  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# 8 training faces in batches of 4: the step-2 checkpoint ends an epoch
TINY = [
    "model.net.dim=8", "model.net.num_blocks=[1,1,1,1]", "model.net.heads=[1,1,1,1]", "model.net.n_encoder_res=1",
    "model.discriminator.ndf=8", "model.hrf_perceptual.blocks=[1,1,1,1]", "model.hrf_perceptual.width=8",
    "model.val_panels=1", "data.image_size=32", "data.patch_size=32", "data.num_workers=0",
    "data.val_max_images=2", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.precision=32",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu", "logger=csv",
]


FOUR_STEPS = ["trainer.max_steps=4", "callbacks.checkpoint.save_top_k=-1"]


class Snapshots(L.Callback):
    """Generator / discriminator / teacher weights before training and after the first iteration."""

    taken: dict = {}

    @staticmethod
    def _take(module) -> dict:
        names = [n for n in ("net", "discriminator", "teacher") if hasattr(module, n)]
        return {n: {k: v.detach().clone() for k, v in getattr(module, n).state_dict().items()} for n in names}

    def on_train_start(self, trainer, pl_module) -> None:
        Snapshots.taken = {"start": self._take(pl_module)}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        Snapshots.taken.setdefault("first", self._take(pl_module))
        Snapshots.taken.setdefault("step_after_first", trainer.global_step)


def write_faces(root: Path) -> Path:
    """10 grey LFW faces (scikit-image, nothing downloaded) at 32x32 RGB: train/ 0-7, test/ 8-9."""
    faces = skimage.data.lfw_subset()[:10]
    for i, face in enumerate(faces):
        folder = root / ("train" if i < 8 else "test")
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.asarray(Image.fromarray((face * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC))
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / f"{i}.png")
    return root


def config(experiment: str, out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *TINY, f"paths.output_dir={out_dir}",
                                           *overrides])


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from train import train

    root = tmp_path_factory.mktemp("diffir_inpaint")
    torch.manual_seed(0)
    encoder = root / "encoder_epoch_20.pth"
    torch.save(DilatedResNet50((1, 1, 1, 1), width=8).state_dict(), encoder)
    common = [f"data.root={write_faces(root / 'faces')}", f"model.hrf_perceptual.weights_path={encoder}",
              "+callbacks.probe._target_=tests.integration.test_diffir_inpaint_pipeline.Snapshots"]
    # stage 1 runs 4 iterations (checkpoints at 2 and 4) so that its resume can be checked
    train(config("diffir_s1_celebahq_inpaint", root / "s1", *common, *FOUR_STEPS))
    s1_snaps = dict(Snapshots.taken)
    stage1 = root / "s1" / "checkpoints" / "last.ckpt"
    train(config("diffir_s2_celebahq_inpaint", root / "s2", *common, f"model.stage1_ckpt={stage1}"))
    return {"root": root, "common": common, "stage1": stage1, "s1_snaps": s1_snaps, "s2_snaps": dict(Snapshots.taken),
            "stage2": root / "s2" / "checkpoints" / "last.ckpt"}


def _changed(before: dict, after: dict, prefix: str = "") -> list[str]:
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def _logged(run: Path) -> str:
    return next(run.rglob("metrics.csv")).read_text().splitlines()[0]


def _first_step_losses(run: Path) -> dict[str, float]:
    import csv

    with next(run.rglob("metrics.csv")).open() as f:
        row = next(r for r in csv.DictReader(f) if r.get("train/loss"))
    return {k[len("train/"):]: float(v) for k, v in row.items() if k.startswith("train/") and v}


@pytest.mark.parametrize(("stage", "terms"), [("s1", ("l_pix", "l_adv", "l_fm", "l_hrf")),
                                              ("s2", ("l_pix", "l_adv", "l_fm", "l_hrf", "l_abs"))])
def test_generator_loss_is_the_sum_of_the_official_terms(runs, stage, terms):
    logged = _first_step_losses(runs["root"] / stage)
    assert logged["loss"] == pytest.approx(sum(logged[t] for t in terms), rel=1e-5)  # the KL term is only logged
    assert all(logged[t] > 0 for t in terms)
    assert ("l_kd" in logged) == (stage == "s2")


def test_stage1_trains_generator_and_discriminator_one_step_per_iteration(runs):
    snaps = runs["s1_snaps"]
    assert snaps["step_after_first"] == 1
    start, first = snaps["start"], snaps["first"]
    assert _changed(start["net"], first["net"], "G.") and _changed(start["net"], first["net"], "E.")
    assert _changed(start["discriminator"], first["discriminator"], "model0.")
    ckpt = _load(runs["stage1"])
    assert ckpt["global_step"] == 4
    assert {int(s["step"]) for opt in ckpt["optimizer_states"] for s in opt["state"].values()} == {4}
    prefixes = {k.split(".")[0] for k in ckpt["state_dict"]}
    assert prefixes == {"net", "discriminator"}  # no EMA (official), no perceptual encoder
    header = _logged(runs["root"] / "s1")
    for name in ("l_pix", "l_adv", "l_fm", "l_hrf", "l_d", "l_d_real", "l_d_fake", "r1", "out_d_real"):
        assert f"train/{name}" in header, name


def test_stage2_starts_from_stage1_keeps_the_teacher_frozen_and_adds_the_ipr_loss(runs):
    s1 = _load(runs["stage1"])["state_dict"]
    start, first = runs["s2_snaps"]["start"], runs["s2_snaps"]["first"]
    for key, value in start["net"].items():
        if key.startswith("G."):
            torch.testing.assert_close(value, s1[f"net.{key}"], rtol=0, atol=0, msg=key)
    for key, value in first["teacher"].items():
        torch.testing.assert_close(value, s1[f"net.E.{key}"], rtol=0, atol=0, msg=key)
    # joint from the first step: DIRformer, CPEN_S2 and the denoiser all move
    for prefix in ("G.", "condition.", "denoise."):
        assert _changed(start["net"], first["net"], prefix), prefix
    ckpt = _load(runs["stage2"])
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"net", "teacher", "discriminator"}
    assert ckpt["config"]["model"]["_target_"] == "diffir.inpaint.DiffIRInpaintS2Module"
    header = _logged(runs["root"] / "s2")
    assert "train/l_abs" in header and "train/l_kd" in header and "train/l_hrf" in header


def test_stage1_resume_is_exact(runs, tmp_path):
    """From the step-2 checkpoint (generator, discriminator, both Adams, RNG) to step 4: the same weights."""
    from train import train

    step2 = next((runs["root"] / "s1" / "checkpoints").glob("best-step0000002*.ckpt"))
    args = [a for a in runs["common"] if "probe" not in a]
    train(config("diffir_s1_celebahq_inpaint", tmp_path / "resumed", *args, *FOUR_STEPS, f"ckpt_path={step2}"))
    a, b = _load(runs["stage1"]), _load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_evaluate_stage2_without_the_encoder_file(runs, tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    out = tmp_path / "eval"
    summary = evaluate.main([f"ckpt={runs['stage2']}", f"out={out}", "progress=false", "perceptual=false"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_images"] == 2 and saved["nfe"] == 4
    assert np.isfinite(saved["psnr"]) and saved["psnr"] == pytest.approx(summary["psnr"])


def test_missing_encoder_stops_before_training_naming_the_file(runs, tmp_path):
    from train import train

    missing = tmp_path / "weights" / "encoder_epoch_20.pth"
    args = [a for a in runs["common"] if "weights_path" not in a and "probe" not in a]
    with pytest.raises(ConfigError) as err:
        train(config("diffir_s1_celebahq_inpaint", tmp_path / "run", *args,
                     f"model.hrf_perceptual.weights_path={missing}"))
    assert str(missing) in str(err.value) and ADE20K_URL in str(err.value)
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_lama_release_checkpoint_loads_through_the_new_recipe(tmp_path):
    """An official inpainting checkpoint (LaMa Lightning, generator.* / discriminator.*) with experiment= of the
    new recipe restores exactly as diffir.load_network reads it."""
    import diffir
    from core.loading import build_module, compose_experiment
    from diffir.networks import DiffIRS2

    torch.manual_seed(3)
    net = DiffIRS2(inp_channels=4, dim=8, num_blocks=(1, 1, 1, 1), heads=(1, 1, 1, 1), num_refinement_blocks=0,
                   n_encoder_res=1, ffn_expansion_factor=1.8)
    path = tmp_path / "celeba-S2.ckpt"
    torch.save({"state_dict": {**{f"generator.{k}": v for k, v in net.state_dict().items()},
                               "discriminator.model0.0.weight": torch.zeros(8, 3, 4, 4)}}, path)
    module = build_module(compose_experiment("diffir_s2_celebahq_inpaint"))
    module.load_release_weights(path)
    gen = torch.Generator().manual_seed(0)
    gt, known = torch.rand(1, 3, 24, 20, generator=gen), (torch.rand(1, 1, 24, 20, generator=gen) > 0.3).float()
    lq = gt * known + (1 - known)
    out = module.eval().restore(lq, mask=known, generator=torch.Generator().manual_seed(1))
    reference = diffir.load_network(path)
    torch.testing.assert_close(module.net.state_dict(), reference.state_dict(), rtol=0, atol=0)
    noise = torch.randn((1, 256), generator=torch.Generator().manual_seed(1))  # the restorer's IPR_T draw
    with torch.no_grad():
        raw = reference(torch.cat([gt * known, 1 - known], dim=1), noise=noise).clamp(0, 1)
    torch.testing.assert_close(out, known * lq + (1 - known) * raw)  # known pixels kept, holes from the network
