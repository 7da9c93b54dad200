"""The Gradio page: layout and event handlers only. Page values become webui.worker calls and its results become
page values; the page's one API endpoint, /restore, is webui.api.

One worker restores (the queue runs one job at a time, others wait their turn); Stop cancels the job on the
page and sets an event that the restoration checks before every network evaluation, so the worker is free at
once. Every problem reaches the page as a message that stays beside the result until the next run (Gradio's
pop-ups close after seconds, and its warnings from non-queued events never arrive), never as a traceback.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import gradio as gr  # webui/__init__.py, run before this module, has turned Gradio's analytics off

from core.errors import UserError
from webui.api import IMAGE_TYPES, add_api
from webui.catalogue import Model
from webui.run import MASK_SOURCES, MaskChoice, Output, Settings, mask_preview, table
from webui.session import Stopped
from webui.uploads import InputError, read_upload
from webui.worker import OWN, Worker

log = logging.getLogger(__name__)

TASKS = [("inpainting", "inpainting"), ("super-resolution", "sr"), ("deblurring (Gaussian)", "deblur_gaussian"),
         ("deblurring (motion)", "deblur_motion")]
DEFAULT = OWN  # the sampler and overlap choice meaning "the model's own"
# labels wrap instead of being cut off; messages stand out beside the result
CSS = """#info table { font-size: 0.9em; } #info td, #info th { word-break: keep-all; overflow-wrap: normal; }
label span, .block-info { white-space: normal !important; overflow: visible !important; }
#messages:not(:empty) { border-left: 4px solid var(--error-border-color, #ef4444); padding-left: 8px;
  color: var(--error-text-color, #b91c1c); }"""
TRACK_STEPS = gr.Progress(track_tqdm=True)  # follows the samplers' tqdm bars (restorers built with progress=True)
PRIVATE = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}  # helpers: off the API page


def theme() -> gr.themes.Base:
    """The default look with system fonts: the stock theme asks Google Fonts, which an offline machine lacks."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build_page(models: dict[str, Model], settings: Settings, demos: list, seed: int = 0) -> gr.Blocks:
    worker = Worker(models, settings, seed)
    stops: dict[str, threading.Event] = {}
    first = next(iter(models.values()))
    demo_by_label = {d.label: d for d in demos}

    with gr.Blocks(title="Image restoration", analytics_enabled=False, fill_width=True) as page:
        gr.Markdown("## Diffusion image restoration\nUpload images (or pick a demo image), choose a model, press "
                    "**Restore**. A ground-truth image (same file name) adds PSNR/SSIM. Everything runs on this "
                    "machine; scripts can call it too (*Use via API* below).")
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="Images to restore", file_count="multiple", file_types=IMAGE_TYPES,
                                elem_id="images")
                demo = gr.Dropdown([d.label for d in demos], value=None, label="…or a bundled demo image",
                                   elem_id="demo", visible=bool(demos))
                truth = gr.File(label="Ground truth (optional)",
                                file_count="multiple", file_types=IMAGE_TYPES, elem_id="gt")
            with gr.Column(scale=2):
                model = gr.Dropdown(list(models), value=first.label, label="Model", elem_id="model")
                # custom values pass Gradio's check, which races a model change (the worker checks them)
                sampler = gr.Dropdown([("the model's own", DEFAULT)], value=DEFAULT, label="Sampler",
                                      elem_id="sampler", allow_custom_value=True)
                own = gr.Markdown(elem_id="own")
                with gr.Row():
                    steps = gr.Number(0, label="Steps (0: the model's own)", precision=0, minimum=0,
                                      elem_id="steps")
                    seed_box = gr.Number(seed, label="Seed", precision=0, elem_id="seed")
                sigma = gr.Number(0, label="Noise level σ of the input, 0-255 (0: the model's own)", minimum=0,
                                  elem_id="sigma")
                tile = gr.Number(0, label="Tile size (0: whole image)", precision=0, minimum=0, elem_id="tile")
                overlap = gr.Dropdown([("the model's own", DEFAULT), "0", "16", "32", "64"], value=DEFAULT,
                                      allow_custom_value=True, label="Tile overlap (px)", elem_id="overlap")
                task_now = _radio(first.default_task)
                with gr.Group(visible=bool(first.tasks)) as prior_box:
                    task = gr.Radio(TASKS, value=task_now, label="DiffPIR task", elem_id="task")
                    scale = gr.Radio([2, 4], value=_scale(first.default_task), label="Super-resolution scale",
                                     elem_id="scale", visible=task_now == "sr")
                    with gr.Group(visible=task_now == "inpainting") as mask_box:
                        mask_source = gr.Radio(list(MASK_SOURCES), value="box", elem_id="mask_source",
                                               label="Inpainting mask: generated (box, strokes, pixels), drawn "
                                                     "below, or a file (white = known pixel)")
                        drawing = gr.ImageEditor(label="Paint the region to fill", type="numpy",
                                                 image_mode="RGBA", sources=[], transforms=[], layers=False,
                                                 brush=_brush("auto"), elem_id="drawing", visible=False)
                        mask_file = gr.File(label="Mask file", file_types=IMAGE_TYPES, elem_id="mask_file",
                                            visible=False)
                        preview = gr.Image(label="The mask a run will use (magenta: pixels to fill)",
                                           type="numpy", interactive=False, buttons=[], elem_id="mask_preview")
                        mask_note = gr.Markdown(elem_id="mask_note")
                    kernel_file = gr.File(label="Blur kernel (.npy summing to 1, or an image; blank: the task's "
                                                "default)", file_types=[".npy", *IMAGE_TYPES], elem_id="kernel",
                                          visible=str(task_now).startswith("deblur"))
                with gr.Row():
                    # off until the first model has loaded and its fast sampler is chosen (a click before that
                    # would run the model's own, slower sampler)
                    restore = gr.Button("Restore", variant="primary", elem_id="restore", interactive=False)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                estimate = gr.Markdown(elem_id="estimate")
            with gr.Column(scale=3):
                messages = gr.Markdown(elem_id="messages")
                # its own download would give the enlarged view of small images: the PNGs are offered below
                slider = gr.ImageSlider(label="Input (left) | restored (right): drag the handle to compare",
                                        type="filepath", format="png", buttons=["fullscreen"], elem_id="result")
                info = gr.Markdown(elem_id="info")
                downloads = gr.File(label="Restored PNGs", file_count="multiple", interactive=False,
                                    elem_id="downloads")
                gallery = gr.Gallery(label="All results (select one to compare)", format="png", visible=False,
                                     elem_id="gallery")
        pairs = gr.State([])

        def show_options(label: str, task_family: str | None, sr_scale: int | None):
            """The options the chosen model takes, its fast sampler chosen; its default task unless the chosen
            one (a demo's) is its. A model that fails to load says so beside the result."""
            m = models[label]
            keep = bool(m.tasks) and task_family is not None and _task(task_family, sr_scale) in m.tasks
            try:  # the first use of a model loads it
                fast, chosen_steps = m.fast or (DEFAULT, 0)
                own_settings = m.own_for(_task(task_family, sr_scale) if keep else m.default_task)
            except UserError as err:
                return *(gr.skip(),) * 9, _say([str(err)])
            own_sigma = m.own.get("sigma")
            return (gr.update(choices=_sampler_choices(m), value=fast, visible="sampler" in m.options),
                    gr.update(value=chosen_steps, visible="steps" in m.options, label=_steps_label(own_settings)),
                    gr.update(visible="sigma" in m.options,
                              label=f"Noise level σ of the input, 0-255 (0: the model's own"
                                    f"{f', {own_sigma:g}' if own_sigma else ''})"),
                    gr.update(visible="tile" in m.options), gr.update(visible="overlap" in m.options),
                    gr.update(visible=bool(m.tasks)), gr.skip() if keep else gr.update(value=_radio(m.default_task)),
                    _own_line(m, own_settings), "", gr.skip())

        option_boxes = [sampler, steps, sigma, tile, overlap, prior_box, task, own, estimate, messages]
        estimate_inputs = [files, model, sampler, steps, sigma, tile, overlap, task, scale]

        def expected(paths, label, sampler_name, n_steps, sigma_value, tile_size, overlap_px, task_family,
                     sr_scale):
            """The expected time of a run with these values (the model is loaded and timed on first use)."""
            try:
                m = models[label]
                # values the model does not take are a previous model's, about to be replaced: not an error here
                sampler_name = sampler_name if sampler_name in m.samplers else DEFAULT
                n_steps, sigma_value, tile_size = (v if k in m.options else None for k, v in
                                                   (("steps", n_steps), ("sigma", sigma_value), ("tile", tile_size)))
                options = worker.options(m, sampler_name, n_steps, sigma_value, tile_size, overlap_px,
                                         task=_task(task_family, sr_scale) if m.tasks else None)
                return worker.estimate(m, options, _sizes(paths))
            except UserError as err:
                return f"⚠ {_escape(str(err))}"

        model.change(show_options, [model, task, scale], option_boxes, **PRIVATE) \
            .then(expected, estimate_inputs, estimate, **PRIVATE)
        page.load(show_options, [model, task, scale], option_boxes, **PRIVATE) \
            .then(expected, estimate_inputs, estimate, **PRIVATE) \
            .then(lambda: gr.update(interactive=True), None, restore, **PRIVATE)
        gr.on([files.change, sampler.input, steps.change, sigma.change, tile.change, overlap.change, task.change,
               scale.change], expected, estimate_inputs, estimate, trigger_mode="always_last", **PRIVATE)

        def fast_steps(label: str, choice: str):
            """A sampler picked on the page: the README's step count for the fast one, the model's own for own."""
            m = models[label]
            return 0 if choice == DEFAULT else m.fast[1] if m.fast and choice == m.fast[0] else gr.skip()

        sampler.input(fast_steps, [model, sampler], steps, **PRIVATE)

        def task_controls(label: str, task_family: str | None, sr_scale: int | None, source: str):
            """Only the chosen task's controls (the SR scale, the inpainting mask, the deblurring kernel) and what
            "the model's own" means for that task."""
            shown = (gr.update(visible=task_family == "sr"), gr.update(visible=task_family == "inpainting"),
                     gr.update(visible=source == "drawn"), gr.update(visible=source == "file"),
                     gr.update(visible=str(task_family).startswith("deblur")))
            m = models[label]
            if not m.tasks or task_family is None:
                return *shown, gr.skip(), gr.skip()
            try:
                own_settings = m.own_for(_task(task_family, sr_scale))
            except UserError as err:
                return *shown, gr.skip(), f"⚠ {_escape(str(err))}"
            return *shown, gr.update(label=_steps_label(own_settings)), _own_line(m, own_settings)

        gr.on([task.change, scale.change, mask_source.change], task_controls, [model, task, scale, mask_source],
              [scale, mask_box, drawing, mask_file, kernel_file, steps, own], **PRIVATE)

        def show_mask(paths, label: str, task_family: str | None, source: str, drawn, mask_path):
            if not models[label].tasks or task_family != "inpainting":
                return gr.skip(), gr.skip()
            if not paths:
                return None, "Upload an image to see the mask a run will use on it."
            try:
                return mask_preview(paths[0], MaskChoice(source, drawn, mask_path), settings.max_pixels_tiled), ""
            except InputError as err:
                return None, f"⚠ {_escape(str(err))}"

        gr.on([files.change, model.change, task.change, mask_source.change, drawing.change, mask_file.change],
              show_mask,
              [files, model, task, mask_source, drawing, mask_file], [preview, mask_note], trigger_mode="always_last",
              **PRIVATE)

        def pick_demo(label: str | None, current: str):
            if not label:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            d = demo_by_label[label]
            suited = next((m.label for m in models.values() if d.kind in m.demos), current)
            task_value = _radio(d.task) if d.task else gr.skip()
            return [str(d.lq)], [str(d.gt)], suited, task_value, _scale(d.task) if d.task else gr.skip()

        demo.change(pick_demo, [demo, model], [files, truth, model, task, scale], **PRIVATE)

        def check_uploads(paths: list[str] | None, tile_size):
            """Each upload read at once: a bad one is said beside the result (and kept off the mask editor, whose
            own reading would fail with Gradio's message instead of ours); the first is the mask's backdrop."""
            if not paths:
                return None, gr.skip()
            problems, backdrop = [], None
            tiled = bool(tile_size)
            for path in paths:
                try:
                    image = read_upload(path, max_pixels=settings.max_pixels_tiled if tiled else settings.max_pixels,
                                        tiled=tiled)
                except InputError as err:
                    problems.append(str(err))
                    continue
                if backdrop is None:  # a brush about 1/16 of the image, so a 32x32 face is not painted over at once
                    backdrop = gr.ImageEditor(value={"background": path, "layers": [], "composite": path},
                                              brush=_brush(max(1, round(max(image.shape[:2]) / 16))))
            return backdrop, _say(problems) if problems else gr.skip()

        files.change(check_uploads, [files, tile], [drawing, messages], **PRIVATE)

        def start():
            return gr.update(interactive=False), "", "Restoring…"

        def run(paths, gt_paths, label, sampler_name, n_steps, sigma_value, tile_size, overlap_px, seed_value,
                task_family, sr_scale, source, drawn, mask_path, kernel_path, request: gr.Request,
                progress=TRACK_STEPS):
            stop_event = stops[request.session_hash] = threading.Event()
            log.info("restoring %d image(s) with %s", len(paths or []), label)
            warnings: list[str] = []
            try:
                m = worker.model(label)
                options = worker.options(m, sampler_name, n_steps, sigma_value, tile_size, overlap_px, seed_value,
                                         _task(task_family, sr_scale) if m.tasks else None)
                outputs = worker.restore(m, list(paths or []), options, stop=stop_event, warn=warnings.append,
                                         gt_files=gt_paths, mask=MaskChoice(source, drawn, mask_path),
                                         kernel_file=kernel_path,
                                         on_image=lambda i, n, name: progress((i, n), desc=f"restoring {name}"))
            except Stopped:
                log.info("stopped by the user")
                return _failed(warnings, "Stopped.")
            except UserError as err:
                return _failed(warnings, f"Error: {err}")
            except Exception as err:  # a bug: the message on the page, the traceback in the server's log
                log.exception("restoration failed")
                return _failed(warnings, f"Error: restoration failed ({type(err).__name__}: {err}); the server "
                                         "log has the details")
            finally:
                if stops.get(request.session_hash) is stop_event:
                    del stops[request.session_hash]
            return (*_show(outputs), _say(warnings))

        inputs = [files, truth, model, sampler, steps, sigma, tile, overlap, seed_box, task, scale, mask_source,
                  drawing, mask_file, kernel_file]
        # the button is off while a run waits or goes (Stop turns it back on); one progress bar, on the result
        job = restore.click(start, None, [restore, messages, info], **PRIVATE) \
            .then(run, inputs, [slider, info, downloads, gallery, pairs, messages], concurrency_limit=1,
                  concurrency_id="restore", show_progress_on=[slider], api_visibility="private")
        job.then(lambda: gr.update(interactive=True), None, restore, **PRIVATE)

        def halt(request: gr.Request):
            event = stops.get(request.session_hash)
            log.info("stop pressed (%s)", "a run is going" if event is not None else "nothing to stop")
            if event is not None:
                event.set()
            return gr.update(interactive=True), "Stopped." if event is not None else gr.skip(), ""

        stop.click(halt, None, [restore, messages, info], cancels=[job], **PRIVATE)

        def compare(chosen: list, evt: gr.SelectData):
            return tuple(chosen[evt.index]) if chosen else None

        gallery.select(compare, pairs, slider, **PRIVATE)
        add_api(worker)
    return page


def _brush(size: int | str) -> gr.Brush:
    return gr.Brush(default_size=size, colors=["#ff00ff"], color_mode="fixed")


def _show(outputs: list[Output]):
    pairs = [(str(o.view[0]), str(o.view[1])) for o in outputs]
    return (pairs[0], table(outputs), [str(o.after) for o in outputs],
            gr.update(value=[str(o.after) for o in outputs], visible=len(outputs) > 1), pairs)


def _failed(warnings: list[str], message: str):
    """The outputs of a run that gave nothing: the message (and earlier warnings) where the result would be."""
    return None, "", None, gr.update(value=None, visible=False), [], _say([*warnings, message])


def _say(lines: list[str]) -> str:
    return "\n\n".join(_escape(line) for line in lines)


def _escape(text: str) -> str:
    """Plain text for a Markdown box: file names with _ or * shown as they are."""
    return "".join("\\" + c if c in "\\`*_[]<>#|" else c for c in text)


def _steps_label(own: dict) -> str:
    steps = own.get("steps")
    return f"Steps (0: the model's own{f', {steps}' if steps else ''})"


def _own_line(m: Model, own: dict | None = None) -> str:
    """What "the model's own" means for this model (task): its sampler and steps."""
    o = own or m.own
    parts = [str(o["name"])] if o.get("name") and "sampler" in m.options else []
    parts += [f"{o['steps']} steps"] if o.get("steps") else []
    parts += [f"σ {o['sigma']:g}"] if o.get("sigma") else []
    return f"The model's own: {_escape(', '.join(parts))}." if parts else ""


def _sampler_choices(model: Model) -> list[tuple[str, str]]:
    own = model.own.get("name")
    fast = model.fast[0] if model.fast else None
    def name(s: str) -> str:  # "mr_ode:1" -> "mr_ode, order 1"
        return s.replace(":", ", order ")

    label = {s: f"{name(s)} (fast: {model.fast[1]} steps)" if s == fast else name(s) for s in model.samplers}
    return [(f"the model's own ({own})" if own else "the model's own", DEFAULT),
            *((label[s], s) for s in model.samplers)]


def _sizes(paths: list[str] | None) -> list[tuple[int, int]]:
    """(height, width) of each readable upload, from its header."""
    from core.io import image_size

    sizes = []
    for path in paths or []:
        try:
            sizes.append(image_size(path))
        except Exception:  # a bad upload is reported by check_uploads; the estimate leaves it out
            continue
    return sizes


def _radio(task: str | None) -> str | None:
    """The task radio's value of a task name (the SR tasks share one, with the scale beside it)."""
    return None if task is None else "sr" if task.startswith("sr_x") else task


def _scale(task: str | None) -> int:
    return int(task[4:]) if task and task.startswith("sr_x") else 4


def _task(family: str | None, scale: int | None) -> str:
    return f"sr_x{int(scale or 4)}" if family == "sr" else str(family or "inpainting")


def work_dir(path: str | None) -> Path:
    """Where uploads' results go: the configured folder, or a fresh one under the system's temp folder (Gradio
    serves files from there without further permission)."""
    return Path(path) if path else Path(tempfile.mkdtemp(prefix="restore-app-"))

