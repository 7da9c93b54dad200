"""Rebuild a ready-to-run method module from a suite checkpoint (its stored config) or from release weights."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from core.checkpoint import config_from_checkpoint, load_checkpoint
from core.cli import CONFIG_DIR, apply_overrides
from core.errors import CheckpointError, ConfigError


def compose_config(overrides: list[str] | None = None, what: str = "configuration") -> DictConfig:
    """The train-time config composed from configs/train.yaml with Hydra overrides, outside a Hydra run."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose("train", overrides=list(overrides or []))
        except Exception as err:
            raise ConfigError(f"{what}: {err}") from err
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = "runs/eval"
    return cfg


def compose_experiment(experiment: str, overrides: list[str] | None = None) -> DictConfig:
    """The train-time config of `experiment=<name>` (for release weights, which carry no config)."""
    cfg = compose_config([f"experiment={experiment}", *(overrides or [])], f"experiment={experiment}")
    cfg.name = experiment
    return cfg


def build_module(cfg: DictConfig):
    from hydra.utils import instantiate

    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    return instantiate(model_cfg)


def module_from_checkpoint(path: str | Path, overrides: DictConfig | None = None):
    """(module in eval mode with the checkpoint's weights, the run config with overrides applied)."""
    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(config_from_checkpoint(ckpt, path))
    if overrides is not None:
        cfg = apply_overrides(cfg, overrides)
    module = build_module(cfg)
    state = dict(ckpt["state_dict"])
    if not any(k.startswith("net.") for k in state):  # an exported inference checkpoint keeps only the EMA
        state.update({"net." + k[len("ema_net."):]: v for k, v in state.items() if k.startswith("ema_net.")})
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the stored config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    module.run_config = OmegaConf.to_container(cfg, resolve=False)
    return module.eval(), cfg


def module_from_weights(path: str | Path, experiment: str, overrides: list[str] | None = None):
    """A method module built from an experiment config, with official/plain release weights loaded into it."""
    cfg = compose_experiment(experiment, overrides)
    module = build_module(cfg)
    if not hasattr(module, "load_release_weights"):
        raise ConfigError(f"experiment={experiment}: this method cannot load release weights")
    module.load_release_weights(path)
    return module.eval(), cfg


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
