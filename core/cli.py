"""What the Hydra entry points share: user errors as one line, a misspelt key named before Hydra runs, and the
user's overrides merged into the config a checkpoint stores.

evaluate.py and restore.py take the run config's sections as plain overrides (`data.root=DIR`, `model.sde.T=50`)
although their own configs do not declare them: `hydra_argv` lets Hydra add them (`++`), and `merge_user_sections`
applies them to a checkpoint's stored run config (a group choice such as `data=rain100h` replaces the section).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, UserError
from core.quiet import quiet_known_noise

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at every import otherwise
quiet_known_noise()  # every entry point imports this module first (DDP children too): the known noise never prints


@contextlib.contextmanager
def user_errors():
    """Print a UserError (or a Lightning setting it rejects) as one clear line and exit 2; other exceptions keep
    their traceback (they are bugs)."""
    try:
        yield
    except UserError as err:
        _exit_with(err)
    except Exception as err:
        # Lightning only when something else failed: importing it costs seconds that app.py's start would wait for
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        if not isinstance(err, MisconfigurationException):
            raise
        _exit_with(err)


def _exit_with(err: Exception) -> None:
    message = str(err)
    if "\nOriginal Traceback" in message:  # raised in a DataLoader worker: torch prepends its traceback
        message = message.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _top_keys(config_name: str) -> tuple[set[str], set[str]]:
    """(plain keys, config groups of the defaults list) of configs/<config_name>.yaml."""
    cfg = OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml")
    groups = {str(next(iter(e))) if isinstance(e, (dict, DictConfig)) else str(e) for e in cfg.get("defaults", [])}
    return set(cfg) - {"defaults"}, groups - {"_self_"}


def run_sections() -> set[str]:
    """Top-level keys of a run config (configs/train.yaml's keys and groups)."""
    keys, groups = _top_keys("train")
    return keys | groups


def hydra_argv(config_name: str, argv: list[str]) -> list[str]:
    """The command line for Hydra: an unknown key is a ConfigError naming the valid ones; a run-config key the
    entry point's config does not declare gets Hydra's `++` (add or override)."""
    own, groups = _top_keys(config_name)
    valid = own | groups | {"hydra"}
    for arg in argv:  # a chosen option of a group packaged _global_ (model=diffpir) brings its own keys
        key, _, value = arg.lstrip("+~").partition("=")
        path = CONFIG_DIR / key / f"{value}.yaml"
        if key in groups and path.is_file() and "@package _global_" in path.read_text().split("\n", 1)[0]:
            valid |= set(OmegaConf.load(path)) - {"defaults"}
    sections = run_sections()
    out = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)  # Hydra's own flags (--help, --cfg job ...)
            continue
        key = arg.lstrip("+~").split("=", 1)[0]
        top = key.split(".")[0].split("[")[0]
        if top in groups and key != top:  # data.root=DIR: the group may be unset here (a checkpoint's data)
            out.append("++" + arg.lstrip("+"))
        elif top in own and key != top and top != "hydra":
            # a key inside an own section (evaluate.yaml's trainer:): added if new, so the entry point's check
            # (trainer_arguments) names a misspelt one instead of Hydra's "not in struct"
            out.append("++" + arg.lstrip("+"))
        elif top in valid:
            out.append(arg)
        elif top in sections:
            out.append("++" + arg.lstrip("+"))
        else:
            found = sorted({f"{p.parent.name}.{top}" for p in CONFIG_DIR.glob("*/*.yaml")
                            if p.parent.name != "experiment" and top in (OmegaConf.load(p) or {})})
            hint = f" (did you mean {' or '.join(found)}?)" if found else ""
            raise ConfigError(f"unknown option {top}=...{hint}: the options are {', '.join(sorted(own))}; other "
                              f"keys override the run config ({', '.join(sorted(sections))}), e.g. data.root=DIR")
    return out


def trainer_arguments(section: DictConfig | dict | None) -> dict[str, Any]:
    """The `trainer.*` section as keyword arguments of lightning.pytorch.Trainer; a key the installed Trainer does
    not take is a ConfigError naming the closest valid ones (trainer.max_stepz -> trainer.max_steps), instead of
    Trainer's TypeError and traceback. logger, callbacks and plugins are built by the entry points."""
    import difflib
    import inspect

    from lightning.pytorch import Trainer

    values = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section or {})
    valid = sorted(set(inspect.signature(Trainer.__init__).parameters) - {"self", "logger", "callbacks", "plugins"})
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(f'trainer.{c}' for c in close)}? " if close else ""
            raise ConfigError(f"unknown option trainer.{key}: {hint}(lightning's Trainer takes "
                              f"{', '.join(valid)})")
    return values


def caught(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Inside a @hydra.main function: the task's result, or the UserError it raised (re-raised by run_hydra
    outside Hydra, so the user sees one line, not Hydra's report around it)."""
    try:
        return task(cfg)
    except UserError as err:
        return err


def run_hydra(entry: Callable[[], None], config_name: str, argv: list[str] | None, results: list) -> Any:
    """Call a @hydra.main function with `argv` as its command line (keys checked by `hydra_argv`) and return what
    it appended to `results`; a bug keeps its traceback instead of Hydra's summary and exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = [saved[0] if saved else config_name, *hydra_argv(config_name, argv)]
    results.clear()
    try:
        entry()
    finally:
        sys.argv = saved
    if isinstance(results[-1], UserError):
        raise results[-1]
    return results[-1]


def merge_user_sections(stored: dict | DictConfig, cfg: DictConfig) -> DictConfig:
    """`stored` (a checkpoint's run config) with the run-config sections the user set on the command line:
    a group choice (data=rain100h) replaces the section, dotted keys (data.root=DIR) are merged into it."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    touched = {o.lstrip("+~").split("=", 1)[0].split(".")[0] for o in hydra.overrides.task}
    out = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(stored), resolve=False))
    OmegaConf.set_struct(out, False)
    for section in sorted(touched & run_sections()):
        if section not in cfg or cfg[section] is None:
            continue
        value = OmegaConf.to_container(cfg[section], resolve=True) if isinstance(cfg[section], DictConfig) \
            else cfg[section]
        if hydra.runtime.choices.get(section) is not None or not isinstance(out.get(section), DictConfig):
            out[section] = value
        else:
            out[section] = OmegaConf.merge(out[section], value)
    return out
