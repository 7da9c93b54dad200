"""Small helpers shared by the entry points: user errors without tracebacks, key=value overrides."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at every import otherwise


@contextlib.contextmanager
def user_errors():
    """Print a UserError as one clear line and exit 2; other exceptions keep their traceback (they are bugs)."""
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def parse_overrides(argv: list[str]) -> DictConfig:
    """key=value arguments (dotted keys, YAML values) as a config; anything else is a clear error."""
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    if bad:
        raise ConfigError(f"arguments must be key=value (got {bad[0]!r}); e.g. ckpt=runs/x/checkpoints/last.ckpt")
    args = [a.lstrip("+") for a in argv]
    cfg = OmegaConf.from_dotlist(args)
    # "data=celebahq data.root=/x": the dotted key would silently replace the group choice; keep both
    for group in GROUPS:
        choice = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0] == group]
        if choice and isinstance(cfg.get(group), DictConfig):
            cfg[group]["_group_"] = choice[-1]
    return cfg


GROUPS = ("data", "model")


def group_choice(overrides, group: str) -> str | None:
    """The config-group option chosen on the command line (data=celebahq), with or without dotted keys."""
    value = overrides.get(group)
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, DictConfig)):
        return value.get("_group_")
    return None


def run_config_sections() -> set[str]:
    """Top-level keys of a run config: configs/train.yaml's own keys and its config groups."""
    cfg = OmegaConf.load(CONFIG_DIR / "train.yaml")
    groups = {str(next(iter(e))) if isinstance(e, (dict, DictConfig)) else str(e) for e in cfg.get("defaults", [])}
    return (set(cfg) | groups) - {"defaults", "_self_"}


def check_override_keys(overrides, own_keys) -> None:
    """Every key=value that is not an entry point's own option must address a section of the run config, so a
    typo (stpes=10) is an error instead of a silently ignored setting."""
    sections = run_config_sections()
    unknown = [str(k) for k in overrides if str(k) not in sections]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]}=...: the options are {', '.join(own_keys)}; other keys "
                          f"override the run config ({', '.join(sorted(sections))}), e.g. data.root=DIR")


def load_group(group: str, option: str) -> DictConfig:
    """configs/<group>/<option>.yaml, with its own defaults list resolved (one level, same group)."""
    path = CONFIG_DIR / group / f"{option}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        raise ConfigError(f"{group}={option}: no such config; choose one of {choices}")
    cfg = OmegaConf.load(path)
    defaults = cfg.pop("defaults", None) if isinstance(cfg, DictConfig) else None
    if defaults:
        base = OmegaConf.create()
        for entry in defaults:
            if isinstance(entry, str) and entry != "_self_":
                base = OmegaConf.merge(base, load_group(group, entry))
        cfg = OmegaConf.merge(base, cfg)
    return cfg


def apply_overrides(cfg: DictConfig, overrides: DictConfig, groups: tuple[str, ...] = ("data", "model")) -> DictConfig:
    """Merge key=value overrides into a stored run config; `data=rain100h` swaps in that config group."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(cfg, False)
    overrides = OmegaConf.create(OmegaConf.to_container(overrides, resolve=False))
    for group in groups:
        choice = group_choice(overrides, group)
        if choice is not None:
            cfg[group] = load_group(group, choice)
            if isinstance(overrides[group], str):
                overrides.pop(group)
            else:
                overrides[group].pop("_group_")
    return OmegaConf.merge(cfg, overrides)
