"""The models the page offers: the list in configs/app.yaml (`models:`, one line each) and the user's own model
from the command line (ckpt=, weights= + experiment=, model=diffpir prior_ckpt=).

Listed models load when first used (chosen on the page or named in an API call), so the page answers within
seconds of start; a listed file that is not a restoration model is then reported with one line naming it. The
user's own model loads at start, so a wrong ckpt= stops the app at once. A listed file that does not exist is
skipped with a log line (the shipped demo models arrive one by one). DiffPIR priors are the one kind whose task is
chosen on the page: their module is rebuilt per task with the same `diffpir_model` call restore.py makes.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import CheckpointError, ConfigError, UserError

log = logging.getLogger(__name__)

#: the restorer options the page can show (core.restorer.OPTION_KEYS without the MR solvers' grid; their order
#: is part of the sampler choice, "mr_ode:1")
PAGE_OPTIONS = ("sampler", "steps", "sigma", "tile", "overlap")
#: configs/model/diffpir.yaml keys that are not sampler settings (the page sets task, mask and kernel itself)
PRIOR_NON_SETTINGS = ("_target_", "prior_ckpt", "task", "mask", "kernel")
#: configs/app.yaml `models:` entry keys that describe the entry rather than configure DiffPIR
ENTRY_KEYS = ("label", "ckpt", "weights", "experiment", "prior_ckpt", "task", "tasks", "demos")
#: the orders of the MR solvers (irsde/mr_sampler.py): each is its own choice on the page
MR_ORDERS = {"mr_ode": (1, 2, 3), "mr_sde": (1, 2)}
#: the page's default sampler and steps of IR-SDE models, README "Which sampler when": on a denoising model
#: mr_ode order 1 at 2 steps, on a plain one mr_sde order 2 at 5 steps: the official samplers' PSNR (or better)
#: at 1/10 to 1/20 of their network evaluations
FAST = {"denoising": ("mr_ode:1", 2), "plain": ("mr_sde:2", 5)}


@dataclass
class Model:
    """A model on the page: what it is called, which options apply, and its module (per task for DiffPIR),
    loaded on first use."""

    label: str
    source: str                        # the file, named in messages
    build: Callable[[str | None], Any]  # task (None unless `tasks`) -> module on the device, unchecked
    tasks: tuple[str, ...] = ()        # DiffPIR: the tasks offered; () = the model's task is fixed
    default_task: str | None = None
    demos: tuple[str, ...] = ()        # demo image kinds (webui.demo_images) that suit this model
    keep: int = 1                      # modules kept (DiffPIR: the last two tasks')
    _modules: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def module(self, task: str | None = None):
        """The module (of `task` for DiffPIR), loaded now if it is not yet; a bad file is a CheckpointError."""
        if self.tasks and task not in self.tasks:
            raise ConfigError(f"{self.label} offers the tasks {', '.join(self.tasks)}, not {task}")
        key = task if self.tasks else None
        with self._lock:  # two page events asking at once load it once
            if key not in self._modules:
                log.info("loading %s%s", self.label, f" ({key})" if key else "")
                self._modules[key] = _checked(self.source, lambda: self.build(key))
                while len(self._modules) > self.keep:
                    self._modules.popitem(last=False)
            self._modules.move_to_end(key)
            return self._modules[key]

    @cached_property
    def _description(self) -> tuple:
        return _describe(self.module(self.default_task), prior=bool(self.tasks))

    @property
    def options(self) -> tuple[str, ...]:
        """The PAGE_OPTIONS its restorer takes."""
        return self._description[0]

    @property
    def samplers(self) -> tuple[str, ...]:
        """The choosable samplers when "sampler" is an option ("mr_ode:1": mr_ode of order 1)."""
        return self._description[1]

    @property
    def own(self) -> dict:
        """The model's own sampler settings (Restorer.settings(), and sigma where it has one)."""
        return self._description[2]

    def own_for(self, task: str | None) -> dict:
        """The own settings of `task`'s module (DiffPIR's differ per task: SR runs more steps)."""
        if not self.tasks or task in (None, self.default_task):
            return self.own
        from core.restorer import build_restorer

        return build_restorer(self.module(task), {}).settings()

    @property
    def convention(self) -> dict:
        """PSNR/SSIM y_channel / crop_border of the model's data."""
        return self._description[3]

    @property
    def fast(self) -> tuple[str, int] | None:
        """(sampler choice, steps) that the page picks by default, or None: the model's own."""
        return self._description[4]


def load_catalogue(cfg: DictConfig, device, precision: str = "32") -> dict[str, Model]:
    """label -> Model: the user's model first (chosen when the page opens; loaded now), then the listed ones that
    exist (loaded when first used). Every module is prepared for inference on `device` (a torch.device or a
    device= value such as auto) as restore.py prepares it (precision=bf16: channels_last)."""

    def place(module):
        from core.loading import pick_device
        from core.restorer import prepare_for_inference

        return prepare_for_inference(module, pick_device(str(device)), precision)

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
    if models:
        models[0].module(models[0].default_task)  # the user's own file: a wrong one stops the app now
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
        if not entry.get("experiment"):
            raise ConfigError(f"models: {label} has weights= but no experiment= (the model the weights fit)")

        def release():
            from core.loading import compose_experiment, restorer_source

            run_cfg = compose_experiment(entry["experiment"])
            run_cfg.weights = entry["weights"]
            return restorer_source(run_cfg)[0]

        return _fixed(label, entry["weights"], release, place, demos)

    def checkpoint():
        from core.loading import module_from_checkpoint

        return module_from_checkpoint(entry["ckpt"])[0]

    return _fixed(label, entry["ckpt"], checkpoint, place, demos)


def _fixed(label: str, path: str, build: Callable[[], Any], place: Callable, demos: tuple[str, ...] = ()) -> Model:
    """A model whose task is fixed by its weights (IR-SDE, DiffIR, ...)."""
    return Model(label, path, lambda _task: place(build()), demos=demos)


def _prior(label: str, path: str, settings: dict, place: Callable, task: str | None = None,
           tasks: list[str] | None = None, demos: tuple[str, ...] = ()) -> Model:
    """A DiffPIR prior: the task is chosen on the page; the last two tasks' modules are kept."""
    from diffpir.tasks import TASK_NAMES

    tasks = tuple(tasks or TASK_NAMES)

    def build(chosen: str):
        from diffpir.restorer import diffpir_model

        return place(diffpir_model(prior_ckpt=path, task=chosen, **settings))

    return Model(label, path, build, tasks=tasks, default_task=task or tasks[-1], demos=demos, keep=2)


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


def _describe(module, prior: bool = False) -> tuple:
    """(page options, samplers, own settings, metric convention, fast default) of a module, read off its
    `restorer` signature and settings."""
    from core.restorer import build_restorer

    accepted = inspect.signature(module.restorer).parameters
    options = tuple(k for k in PAGE_OPTIONS if k in accepted)
    if prior:  # DiffPIR's data step acts on the whole image, so its restorer refuses tile= (and overlap= with it)
        options = tuple(o for o in options if o not in ("tile", "overlap"))
    own = build_restorer(module, {}).settings()
    sigma = (getattr(module, "sampler_options", None) or {}).get("sigma")
    own = {**own, **({"sigma": sigma} if sigma is not None else {})}
    samplers: tuple[str, ...] = ()
    fast = None
    if "sampler" in options:  # only IR-SDE's restorers take sampler=; its registry lists the names
        from irsde.samplers import SAMPLERS
        from irsde.sde import DenoisingIRSDE

        samplers = sampler_names(SAMPLERS)
        fast = FAST["denoising" if isinstance(getattr(module, "sde", None), DenoisingIRSDE) else "plain"]
        fast = fast if fast[0] in samplers else None
    return options, samplers, own, _convention(module), fast


def sampler_names(registry) -> tuple[str, ...]:
    """The registry's names with one choice per MR solver order ("mr_ode:1", "mr_ode:2", ...)."""
    return tuple(name for s in registry for name in
                 ([f"{s}:{o}" for o in MR_ORDERS[s]] if s in MR_ORDERS else [s]))


def split_sampler(choice: str | None) -> tuple[str | None, int | None]:
    """A sampler choice as (sampler, order): "mr_ode:1" -> ("mr_ode", 1), "posterior" -> ("posterior", None)."""
    if not choice:
        return None, None
    name, _, order = str(choice).partition(":")
    if order and not order.isdigit():
        raise ConfigError(f"sampler={choice}: write an MR solver's order as a number, e.g. mr_ode:1")
    return name, int(order) if order else None


def _convention(module) -> dict:
    """The metric convention the model's data config sets (metric_y_channel / metric_crop_border), if any."""
    run_config = getattr(module, "run_config", None) or {}  # release-weights modules carry none
    data = run_config.get("data") or {}
    return {**({"y_channel": bool(data["metric_y_channel"])} if data.get("metric_y_channel") is not None else {}),
            **({"crop_border": int(data["metric_crop_border"])} if data.get("metric_crop_border") is not None
               else {})}
