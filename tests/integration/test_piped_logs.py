"""A run whose output goes to a file or a pipe (demo.sh > log, CI, SLURM) prints lines a user can read: no
carriage-return redraws, none of the known warnings a user cannot act on (core.quiet)."""

from __future__ import annotations

from tests.integration.conftest import TINY, run_cli

NOISE = ("\r", "litlogger", "litmodels", "LeafSpec", "anonymous setting", "not supported by the model summary")


def _clean(text: str) -> None:
    for noise in NOISE:
        assert noise not in text, f"{noise!r} in the log:\n{text[-3000:]}"


def test_piped_evaluate_prints_lines_without_noise(tmp_path):
    proc = run_cli("evaluate.py", "ckpt=assets/irsde_demo_denoise.ckpt", "max_images=2", "sampler=mr_ode", "steps=2",
                   f"out={tmp_path}", "perceptual=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _clean(proc.stdout + proc.stderr)
    assert "evaluating: 100%" in proc.stderr  # the bar's last line


def test_piped_bf16_training_with_wandb_prints_lines_without_noise(tmp_path):
    args = [a for a in TINY if not a.startswith(("trainer.enable_progress_bar", "trainer.enable_model_summary",
                                                  "logger=", "trainer.precision"))]
    proc = run_cli("train.py", *args, "trainer.precision=bf16-mixed", "logger=wandb", f"paths.log_dir={tmp_path}",
                   "trainer.enable_model_summary=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _clean(proc.stdout + proc.stderr)
    assert "Epoch 0: 100%" in proc.stdout  # Lightning's bar, as lines (core.callbacks.LineProgressBar)
    assert (proc.stdout + proc.stderr).count("Seed set to 42") == 1  # Lightning's lines once (core.quiet)
