"""The one worker behind the page and its API: page or API values -> Options, a restoration, an expected time.

Restorations and timings take turns on the device (one lock), so two never share it and a timing is not slowed
by a restoration. No Gradio here: the page (webui.page) and the API (webui.api) turn its results into theirs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from core.errors import UserError
from webui.catalogue import Model, split_sampler
from webui.estimate import Timing, expected_seconds, measure, say
from webui.run import MaskChoice, Output, Settings, run_job
from webui.session import Options
from webui.uploads import InputError

log = logging.getLogger(__name__)

OWN = "default"  # the sampler choice meaning "the model's own"


class Worker:
    def __init__(self, models: dict[str, Model], settings: Settings, seed: int = 0):
        self.models, self.settings, self.seed = models, settings, seed
        self.lock = threading.Lock()
        self._timings: dict[tuple[str, str | None], Timing | None] = {}

    def model(self, label: str | None) -> Model:
        """The model called `label` (None: the first, the page's default)."""
        if label in (None, ""):
            return next(iter(self.models.values()))
        if label not in self.models:
            raise InputError(f"no model {label!r} here: choose one of {', '.join(map(repr, self.models))}")
        return self.models[label]

    def options(self, m: Model, sampler: str | None = None, steps=None, sigma=None, tile=None, overlap=None,
                seed=None, task: str | None = None) -> Options:
        """Options from page or API values: blank or 0 (steps, σ, tile) and OWN mean the model's own setting."""
        if task and not m.tasks:
            raise InputError(f"{m.label} restores one fixed task; task= applies to DiffPIR priors")
        name, order = split_sampler(None if sampler in (None, "", OWN, "own") else sampler)
        if name and "sampler" not in m.options:
            raise InputError(f"{m.label} has no sampler choice (sampler={sampler})")
        valid = m.samplers + tuple(s.partition(":")[0] for s in m.samplers)  # mr_ode alone: its default order
        if name and (f"{name}:{order}" if order else name) not in valid:
            raise InputError(f"sampler={sampler}: {m.label} offers {', '.join(m.samplers)} (or {OWN})")
        for key, value in (("steps", steps), ("sigma", sigma), ("tile", tile)):
            if value and key not in m.options:
                raise InputError(f"{m.label} has no {key} option")
        return Options(sampler=name, order=order, steps=whole(steps), sigma=float(sigma) if sigma else None,
                       tile=whole(tile), overlap=whole(overlap, zero_is_own=False),
                       seed=self.seed if seed in (None, "") else int(seed),
                       task=(task or m.default_task) if m.tasks else None)

    def restore(self, m: Model, files: list[str], options: Options, *, stop: threading.Event | None = None,
                warn: Callable[[str], None] = print, on_image=None, gt_files: list[str] | None = None,
                mask: MaskChoice | None = None, kernel_file: str | None = None) -> list[Output]:
        module = m.module(options.task)
        with self.lock:
            outputs = run_job(module, files, options, self.settings, gt_files=gt_files, mask=mask,
                              kernel_file=kernel_file, stop=stop, convention=m.convention, warn=warn,
                              on_image=on_image)
        self._learn(m, options, outputs)
        return outputs

    def _learn(self, m: Model, options: Options, outputs: list[Output]) -> None:
        """A run's own seconds per NFE replace the timing's cost per pixel: the next estimate follows what this
        machine gives now (other work on it can change that several-fold)."""
        key = (m.label, options.task if m.tasks else None)
        timing = self._timings.get(key)
        if timing is None or options.tile or not outputs:
            return
        last = outputs[-1].result
        pixels = last.image.shape[0] * last.image.shape[1]
        per_pixel = (last.seconds / max(last.nfe, 1) - timing.fixed) / pixels
        if per_pixel > 0:
            self._timings[key] = replace(timing, per_pixel=per_pixel)

    def timing(self, m: Model, task: str | None) -> Timing | None:
        """The model's (task's) seconds per NFE, measured the first time they are asked for; None if the timing
        run fails (the estimate is left out, the failure logged)."""
        key = (m.label, task if m.tasks else None)
        if key not in self._timings:
            module = m.module(key[1])
            with self.lock:
                if key not in self._timings:
                    try:
                        self._timings[key] = measure(module, self.settings.device, self.settings.precision, key[1])
                        log.info("timed %s: %s", m.label, self._timings[key])
                    except Exception:  # an estimate is a convenience: a failure must not block the page
                        log.exception("timing %s failed: no expected time for it", m.label)
                        self._timings[key] = None
        return self._timings[key]

    def estimate(self, m: Model, options: Options, sizes: list[tuple[int, int]]) -> str:
        """One line: the NFEs and the expected time of restoring images of `sizes` with `options`."""
        from core.restorer import build_restorer

        try:
            nfe = build_restorer(m.module(options.task), options.restorer_options()).nfe()
        except UserError as err:  # e.g. too many steps: said before the run rather than at its start
            return f"⚠ {err}"
        if not sizes:
            return f"{nfe} NFEs per image; upload an image for its expected time."
        timing = self.timing(m, options.task)
        if timing is None:
            return f"{nfe} NFEs per image."
        seconds = expected_seconds(timing, nfe, sizes, options.tile, options.overlap)
        images = f"{len(sizes)} images" if len(sizes) > 1 else f"{sizes[0][1]}x{sizes[0][0]}"
        return (f"Expected time: about {say(seconds)} ({images}, {nfe} NFEs each; seconds per NFE timed on this "
                "machine when the model was first used, then by each run).")


def whole(value, zero_is_own: bool = True) -> int | None:
    """A page number or choice as an option: blank, OWN and (for steps and tile) 0 mean the model's own."""
    if value in (None, "", OWN) or (zero_is_own and value == 0 and not isinstance(value, str)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a whole number") from None
    if number != int(number) or number < 0:
        raise InputError(f"{value!r} is not a whole number")
    return int(number)
