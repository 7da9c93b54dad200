"""Where a restorer comes from: a suite checkpoint (its stored config + the user's overrides), release weights
loaded into an experiment's model, or a model config that builds its own source (model=diffpir prior_ckpt=...).
Every case gives a module with `restorer(**options)` and the run config whose `data` says what to evaluate on."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from core.checkpoint import config_from_checkpoint, load_checkpoint
from core.cli import CONFIG_DIR, merge_user_sections
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
    """The train-time config of `experiment=<name>` (benchmarks and tests outside a Hydra run)."""
    cfg = compose_config([f"experiment={experiment}", *(overrides or [])], f"experiment={experiment}")
    cfg.name = experiment
    return cfg


def instantiate(cfg, **kwargs):
    """hydra.utils.instantiate, with a UserError raised inside the target (a bad setting, a missing file)
    surfacing as itself instead of wrapped in Hydra's InstantiationException."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from core.errors import UserError

    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def build_module(cfg: DictConfig):
    return instantiate(OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True)))


def module_from_checkpoint(path: str | Path, cfg: DictConfig | None = None):
    """(module in eval mode with the checkpoint's weights, its run config with the user's sections of the
    entry point's config `cfg` merged in)."""
    ckpt = load_checkpoint(path)
    stored = config_from_checkpoint(ckpt, path)
    run_cfg = merge_user_sections(stored, cfg) if cfg is not None else OmegaConf.create(stored)
    module = build_module(run_cfg)
    state = dict(ckpt["state_dict"])
    if not any(k.startswith("net.") for k in state):  # an exported inference checkpoint keeps only the EMA
        state.update({"net." + k[len("ema_net."):]: v for k, v in state.items() if k.startswith("ema_net.")})
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.split(".")[0] not in module.training_only]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the stored config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    module.run_config = OmegaConf.to_container(run_cfg, resolve=False)
    return module.eval(), run_cfg


def restorer_source(cfg: DictConfig) -> tuple[object, DictConfig, str]:
    """(module, run config, what it is) for evaluate.py / restore.py: ckpt=, weights= + experiment=, or a model
    config that builds its own source (model=diffpir)."""
    if cfg.get("ckpt"):
        module, run_cfg = module_from_checkpoint(cfg.ckpt, cfg)
        return module, run_cfg, f"checkpoint {cfg.ckpt}"
    model = cfg.get("model")
    if cfg.get("weights"):
        if model is None:
            raise ConfigError("weights=PATH needs experiment=NAME to know the task and data (e.g. irsde_rain100h)")
        module = build_module(cfg)
        module.load_release_weights(cfg.weights)
        run_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        return module.eval(), run_cfg, f"release weights {cfg.weights}"
    if isinstance(model, DictConfig) and "_target_" in model:
        from hydra.utils import get_object

        if isinstance(get_object(model._target_), type):  # a training recipe: its network would be untrained
            raise ConfigError(f"model={model._target_} is a training recipe with untrained weights: evaluate a "
                              "checkpoint (ckpt=PATH) or release weights (weights=PATH experiment=NAME)")
        module = instantiate(model)
        run_cfg = merge_user_sections(module.run_config or {}, cfg)
        return module, run_cfg, f"{cfg.get('prior_ckpt') or model._target_}"
    raise ConfigError("nothing to run: pass ckpt=PATH (a suite checkpoint), weights=PATH experiment=NAME (release "
                      "weights), model=diffpir prior_ckpt=PATH task=NAME, or, for evaluate.py, restored=DIR gt=DIR")


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
