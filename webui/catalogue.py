"""The models the page offers: the list in configs/app.yaml (`models:`, one line each) and the user's own model
from the command line (ckpt=, weights= + experiment=, model=diffpir prior_ckpt=).

Every model is loaded once at start, so a file that is not a restoration model stops the app with one line
naming it, instead of failing later on the page. A listed file that does not exist is skipped with a log line
(the shipped demo models arrive one by one). DiffPIR priors are the one kind whose task is chosen on the page:
their module is rebuilt per task with the same `diffpir_model` call restore.py makes (model=diffpir ... task=).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import CheckpointError, ConfigError, UserError

log = logging.getLogger(__name__)

#: the restorer options the page can show (core.restorer.OPTION_KEYS without the MR solvers' order / grid)
PAGE_OPTIONS = ("sampler", "steps", "sigma", "tile", "overlap")
#: configs/model/diffpir.yaml keys that are not sampler settings (the page sets task, mask and kernel itself)
PRIOR_NON_SETTINGS = ("_target_", "prior_ckpt", "task", "mask", "kernel")
#: configs/app.yaml `models:` entry keys that describe the entry rather than configure DiffPIR
ENTRY_KEYS = ("label", "ckpt", "weights", "experiment", "prior_ckpt", "task", "tasks", "demos")


@dataclass
class Model:
    """A model on the page: what it is called, which options apply, and its module (per task for DiffPIR)."""

    label: str
    source: str                        # the file, named in messages
    load: Callable[[str | None], Any]  # task (None unless `tasks`) -> module in eval mode on the device
    options: tuple[str, ...]           # of PAGE_OPTIONS
    samplers: tuple[str, ...] = ()     # the choosable samplers when "sampler" is an option
    own: dict = field(default_factory=dict)  # the model's own sampler settings (Restorer.settings())
    tasks: tuple[str, ...] = ()        # DiffPIR: the tasks offered; () = the model's task is fixed
    default_task: str | None = None
    demos: tuple[str, ...] = ()        # demo image kinds (webui.demo_images) that suit this model
    convention: dict = field(default_factory=dict)  # PSNR/SSIM y_channel / crop_border of the model's data

    def module(self, task: str | None = None):
        if self.tasks and task not in self.tasks:
            raise ConfigError(f"{self.label} offers the tasks {', '.join(self.tasks)}, not {task}")
        return self.load(task if self.tasks else None)


def load_catalogue(cfg: DictConfig, device, precision: str = "32") -> dict[str, Model]:
    """label -> Model: the user's model first (chosen when the page opens), then the listed ones that exist. Every
    module is prepared for inference on `device` as restore.py prepares it (precision=bf16: channels_last)."""
    from core.restorer import prepare_for_inference

    def place(module):
        return prepare_for_inference(module, device, precision)

    models: list[Model] = []
    if cfg.get("ckpt") or cfg.get("weights"):
        from core.loading import restorer_source

        path = str(cfg.ckpt or cfg.weights)
        models.append(_fixed(f"{Path(path).name} (yours)", path, lambda: restorer_source(cfg)[0], place))
    elif cfg.get("prior_ckpt"):
        settings = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
                    if k not in PRIOR_NON_SETTINGS and v is not None}
        models.append(_prior(f"{Path(cfg.prior_ckpt).name} (yours)", str(cfg.prior_ckpt), settings, place,
                             task=cfg.get("task")))
    for entry in cfg.get("models") or []:
        entry = OmegaConf.to_container(entry, resolve=True) if isinstance(entry, DictConfig) else dict(entry)
        for key in ("ckpt", "weights", "prior_ckpt"):
            if entry.get(key):
                entry[key] = _resolve(entry[key])
        path = entry.get("ckpt") or entry.get("weights") or entry.get("prior_ckpt")
        label = str(entry.get("label") or Path(str(path)).stem)
        if not path or not Path(path).is_file():
            log.info("model list: skipping %s, %s does not exist", label, path)
            continue
        models.append(_listed(label, entry, place))
    if not models:
        raise ConfigError("no model to offer: pass ckpt=PATH, weights=PATH experiment=NAME or model=diffpir "
                          "prior_ckpt=PATH, or list existing files under models: in configs/app.yaml")
    return {m.label: m for m in models}


def _resolve(path: str) -> str:
    """A listed file relative to the working folder, else to the repository (app.py started from elsewhere)."""
    if Path(path).is_absolute() or Path(path).exists():
        return str(path)
    from core.cli import CONFIG_DIR

    inside = CONFIG_DIR.parent / path
    return str(inside) if inside.exists() else str(path)


def _listed(label: str, entry: dict, place: Callable) -> Model:
    demos = tuple(entry.get("demos") or ())
    if entry.get("prior_ckpt"):
        settings = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        return _prior(label, entry["prior_ckpt"], settings, place, entry.get("task"), entry.get("tasks"), demos)
    if entry.get("weights"):
        from core.loading import compose_experiment, restorer_source

        if not entry.get("experiment"):
            raise ConfigError(f"models: {label} has weights= but no experiment= (the model the weights fit)")
        run_cfg = compose_experiment(entry["experiment"])
        run_cfg.weights = entry["weights"]
        return _fixed(label, entry["weights"], lambda: restorer_source(run_cfg)[0], place, demos)
    from core.loading import module_from_checkpoint

    return _fixed(label, entry["ckpt"], lambda: module_from_checkpoint(entry["ckpt"])[0], place, demos)


def _fixed(label: str, path: str, build: Callable[[], Any], place: Callable, demos: tuple[str, ...] = ()) -> Model:
    """A model whose task is fixed by its weights (IR-SDE, DiffIR, ...): loaded once, now."""
    module = _checked(path, lambda: place(build()))
    options, samplers, own = _describe(module)
    return Model(label, path, lambda _task: module, options, samplers, own, demos=demos,
                 convention=_convention(module))


def _prior(label: str, path: str, settings: dict, place: Callable, task: str | None = None,
           tasks: list[str] | None = None, demos: tuple[str, ...] = ()) -> Model:
    """A DiffPIR prior: the task is chosen on the page. The module of the default task is loaded now (a bad file
    fails at start); the last two tasks' modules are kept."""
    from diffpir.tasks import TASK_NAMES

    tasks = tuple(tasks or TASK_NAMES)
    task = task or tasks[-1]

    @lru_cache(maxsize=2)
    def load(chosen: str):
        from diffpir.restorer import diffpir_model

        return place(diffpir_model(prior_ckpt=path, task=chosen, **settings))

    module = _checked(path, lambda: load(task))
    options, _, own = _describe(module)
    # DiffPIR's data step acts on the whole image, so its restorer refuses tile= (and overlap= with it)
    options = tuple(o for o in options if o not in ("tile", "overlap"))
    return Model(label, path, load, options, own=own, tasks=tasks, default_task=task, demos=demos,
                 convention=_convention(module))


def _checked(path: str, build: Callable[[], Any]):
    """build() with any failure turned into one CheckpointError line naming the file."""
    try:
        module = build()
        from core.restorer import build_restorer

        build_restorer(module, {})  # a module without a restorer is no restoration model
        return module
    except UserError as err:  # one line that names the file
        lines = str(err).strip().splitlines() or [type(err).__name__]
        if path in lines[0] and len(lines) == 1:
            raise
        raise CheckpointError(lines[0] if path in lines[0] else f"{path}: {lines[0]}") from err
    except Exception as err:  # a foreign pickle, a config naming a class that is gone, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a restoration model this suite can load "
                              f"({type(err).__name__}: {first})") from err


def _describe(module) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    """(page options, samplers, own settings) of a module, read off its `restorer` signature."""
    from core.restorer import build_restorer

    accepted = inspect.signature(module.restorer).parameters
    options = tuple(k for k in PAGE_OPTIONS if k in accepted)
    samplers: tuple[str, ...] = ()
    if "sampler" in options:  # only IR-SDE's restorers take sampler=; its registry lists the names
        from irsde.samplers import SAMPLERS

        samplers = tuple(SAMPLERS)
    return options, samplers, build_restorer(module, {}).settings()


def _convention(module) -> dict:
    """The metric convention the model's data config sets (metric_y_channel / metric_crop_border), if any."""
    run_config = getattr(module, "run_config", None) or {}  # release-weights modules carry none
    data = run_config.get("data") or {}
    return {**({"y_channel": bool(data["metric_y_channel"])} if data.get("metric_y_channel") is not None else {}),
            **({"crop_border": int(data["metric_crop_border"])} if data.get("metric_crop_border") is not None
               else {})}
