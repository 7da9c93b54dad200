"""The config tree: every Trainer argument is overridable, and every experiment composes and instantiates."""

import inspect

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core.cli import CONFIG_DIR

BUILT_BY_TRAIN_PY = {"logger", "callbacks", "plugins"}


def test_trainer_config_lists_every_trainer_argument():
    args = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"} - BUILT_BY_TRAIN_PY
    listed = set(OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml"))
    assert args - listed == set(), "add these Trainer arguments to configs/trainer/default.yaml"
    assert listed - args == set(), "these keys are not Trainer arguments"


EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "trainer.max_steps=3"])
    assert cfg.trainer.max_steps == 3
    assert cfg.model._target_ and cfg.data._target_
