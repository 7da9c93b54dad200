"""A misspelt trainer.* key is one line naming the closest Trainer arguments, before any work starts."""

from __future__ import annotations

import pytest

from core.cli import trainer_arguments
from core.errors import ConfigError


def test_valid_keys_pass_through_and_a_misspelt_one_names_the_closest():
    assert trainer_arguments({"max_steps": 3, "devices": 2}) == {"max_steps": 3, "devices": 2}
    with pytest.raises(ConfigError, match=r"unknown option trainer\.max_stepz: did you mean trainer\.max_steps"):
        trainer_arguments({"max_steps": 3, "max_stepz": 1})
    with pytest.raises(ConfigError) as err:
        trainer_arguments({"xyzzy": 1})
    assert "did you mean" not in str(err.value) and "max_steps" in str(err.value)  # the valid ones listed
    assert "\n" not in str(err.value)


def test_every_documented_trainer_key_is_accepted():
    from omegaconf import OmegaConf

    from core.cli import CONFIG_DIR

    for name in ("default", "cpu", "ddp"):
        section = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "trainer" / f"{name}.yaml"), resolve=False)
        section.pop("defaults", None)
        assert trainer_arguments(section) == section, name


def test_train_py_stops_on_a_misspelt_trainer_key_before_training(tmp_path):
    import train

    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        train.main(["experiment=irsde_demo", "trainer.max_stepz=1", f"hydra.run.dir={tmp_path}", "logger=none"])


def test_evaluate_and_restore_stop_on_a_misspelt_trainer_key(tmp_path):
    import evaluate
    import restore

    with pytest.raises(ConfigError, match=r"trainer\.devicez: did you mean trainer\.devices"):
        evaluate.main(["ckpt=assets/irsde_demo_denoise.ckpt", "trainer.devicez=2", f"out={tmp_path}"])
    with pytest.raises(ConfigError, match=r"trainer\.devicez: did you mean trainer\.devices"):
        restore.main(["ckpt=assets/irsde_demo_denoise.ckpt", "trainer.devicez=2", f"input={tmp_path}",
                      f"output={tmp_path}"])
