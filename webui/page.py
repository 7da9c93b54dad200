"""The Gradio page: layout and event handlers only. Reading uploads, restoring and writing results happen in
webui.run / webui.session; here page values become their arguments and their results become page values.

One worker restores (the queue runs one job at a time, others wait their turn); Stop cancels the job on the
page and sets an event that the restoration checks before every network evaluation, so the worker is free at
once. Every problem reaches the page as a message (gr.Error / gr.Warning), never as a traceback.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import gradio as gr  # webui/__init__.py, run before this module, has turned Gradio's analytics off

from core.errors import UserError
from webui.catalogue import Model
from webui.run import MASK_SOURCES, MaskChoice, Output, Settings, run_job, table
from webui.session import Options, Stopped
from webui.uploads import InputError, read_upload

log = logging.getLogger(__name__)

IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
TASKS = [("inpainting", "inpainting"), ("super-resolution", "sr"), ("deblurring (Gaussian)", "deblur_gaussian"),
         ("deblurring (motion)", "deblur_motion")]
DEFAULT = "default"  # the sampler choice meaning "the model's own"
CSS = "#info table { font-size: 0.9em; } #info td, #info th { word-break: keep-all; overflow-wrap: normal; }"
TRACK_STEPS = gr.Progress(track_tqdm=True)  # follows the samplers' tqdm bars (restorers built with progress=True)


def theme() -> gr.themes.Base:
    """The default look with system fonts: the stock theme asks Google Fonts, which an offline machine lacks."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build_page(models: dict[str, Model], settings: Settings, demos: list, seed: int = 0) -> gr.Blocks:
    stops: dict[str, threading.Event] = {}
    # Stop frees the queue at once, but the stopped run's thread lasts until its next network call: the next run
    # waits for it here, so two restorations never share the device
    worker = threading.Lock()
    first = next(iter(models.values()))
    demo_by_label = {d.label: d for d in demos}

    with gr.Blocks(title="Image restoration", analytics_enabled=False, fill_width=True) as page:
        gr.Markdown("## Diffusion image restoration\nUpload images (or pick a demo image), choose a model, press "
                    "**Restore**. A ground-truth image (same file name) adds PSNR/SSIM. Everything runs on this "
                    "machine.")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images to restore", file_count="multiple", file_types=IMAGE_TYPES,
                                elem_id="images")
                demo = gr.Dropdown([d.label for d in demos], value=None, label="…or a bundled demo image",
                                   elem_id="demo", visible=bool(demos))
                truth = gr.File(label="Ground truth (optional)",
                                file_count="multiple", file_types=IMAGE_TYPES, elem_id="gt")
            with gr.Column(scale=1):
                model = gr.Dropdown(list(models), value=first.label, label="Model", elem_id="model")
                sampler = gr.Dropdown(_sampler_choices(first), value=DEFAULT, label="Sampler", elem_id="sampler")
                with gr.Row():
                    steps = gr.Number(0, label="Steps (0: the model's own)", precision=0, minimum=0,
                                      elem_id="steps")
                    seed_box = gr.Number(seed, label="Seed", precision=0, elem_id="seed")
                sigma = gr.Number(0, label="Noise level σ of the input, 0-255 (0: the model's own)", minimum=0,
                                  elem_id="sigma")
                with gr.Row():
                    tile = gr.Number(0, label="Tile size (0: whole image)", precision=0, minimum=0, elem_id="tile")
                    overlap = gr.Dropdown([("model's own", DEFAULT), "0", "16", "32", "64"], value=DEFAULT,
                                          allow_custom_value=True, label="Tile overlap (px)", elem_id="overlap")
                with gr.Group(visible=bool(first.tasks)) as prior_box:
                    task = gr.Radio(TASKS, value=_radio(first.default_task), label="DiffPIR task", elem_id="task")
                    scale = gr.Radio([2, 4], value=_scale(first.default_task), label="Super-resolution scale",
                                     elem_id="scale")
                    mask_source = gr.Radio(list(MASK_SOURCES), value="box", elem_id="mask_source",
                                           label="Inpainting mask: generated (box, strokes, pixels), drawn below, "
                                                 "or a file (white = known pixel)")
                    drawing = gr.ImageEditor(label="Paint the region to fill (choose 'drawn')", type="numpy",
                                             image_mode="RGBA", sources=[], transforms=[], layers=False,
                                             brush=_brush("auto"),
                                             elem_id="drawing")
                    mask_file = gr.File(label="Mask file", file_types=IMAGE_TYPES, elem_id="mask_file")
                    kernel_file = gr.File(label="Blur kernel (.npy summing to 1, or an image; blank: the task's "
                                                "default)", file_types=[".npy", *IMAGE_TYPES], elem_id="kernel")
                with gr.Row():
                    restore = gr.Button("Restore", variant="primary", elem_id="restore")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column(scale=2):
                # its own download would give the enlarged view of small images: the PNGs are offered below
                slider = gr.ImageSlider(label="Before / after", type="filepath", format="png", buttons=["fullscreen"],
                                        elem_id="result")
                info = gr.Markdown(elem_id="info")
                downloads = gr.File(label="Restored PNGs", file_count="multiple", interactive=False,
                                    elem_id="downloads")
                gallery = gr.Gallery(label="All results (select one to compare)", format="png", visible=False,
                                     elem_id="gallery")
        pairs = gr.State([])

        def show_options(label: str, task_family: str | None, sr_scale: int | None):
            """The options the chosen model takes; its default task unless the chosen one (a demo's) is its."""
            m = models[label]
            keep = bool(m.tasks) and _task(task_family, sr_scale) in m.tasks
            return (gr.update(choices=_sampler_choices(m), value=DEFAULT, visible="sampler" in m.options),
                    gr.update(visible="steps" in m.options), gr.update(visible="sigma" in m.options),
                    gr.update(visible="tile" in m.options), gr.update(visible="overlap" in m.options),
                    gr.update(visible=bool(m.tasks)), gr.skip() if keep else gr.update(value=_radio(m.default_task)))

        option_boxes = [sampler, steps, sigma, tile, overlap, prior_box, task]
        model.change(show_options, [model, task, scale], option_boxes, queue=False)
        page.load(show_options, [model, task, scale], option_boxes, queue=False)

        def pick_demo(label: str | None, current: str):
            if not label:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            d = demo_by_label[label]
            suited = next((m.label for m in models.values() if d.kind in m.demos), current)
            task_value = _radio(d.task) if d.task else gr.skip()
            return [str(d.lq)], [str(d.gt)], suited, task_value, _scale(d.task) if d.task else gr.skip()

        demo.change(pick_demo, [demo, model], [files, truth, model, task, scale], queue=False)

        def backdrop(paths: list[str] | None):
            """The first input under the mask brush; a bad file is reported at once (and kept off the editor,
            whose own reading would fail with Gradio's message instead of ours)."""
            if not paths:
                return None
            try:
                height, width = read_upload(paths[0], max_pixels=settings.max_pixels_tiled).shape[:2]
            except InputError as err:
                gr.Warning(str(err))
                return None
            # a brush about 1/16 of the image, so a 32x32 face is not painted over in one stroke
            return gr.ImageEditor(value={"background": paths[0], "layers": [], "composite": paths[0]},
                                  brush=_brush(max(1, round(max(height, width) / 16))))

        files.change(backdrop, files, drawing, queue=False)

        def run(paths, gt_paths, label, sampler_name, n_steps, sigma_value, tile_size, overlap_px, seed_value,
                task_family, sr_scale, source, drawn, mask_path, kernel_path, request: gr.Request,
                progress=TRACK_STEPS):
            stop_event = stops[request.session_hash] = threading.Event()
            log.info("restoring %d image(s) with %s", len(paths or []), label)
            try:
                m = models[label]
                chosen = _task(task_family, sr_scale) if m.tasks else None
                options = Options(sampler=None if sampler_name in (None, DEFAULT) else sampler_name,
                                  steps=_int(n_steps), sigma=sigma_value or None, tile=_int(tile_size),
                                  overlap=_int(overlap_px), seed=int(seed_value or 0), task=chosen)
                with worker:
                    outputs = run_job(m.module(chosen), list(paths or []), options, settings, gt_files=gt_paths,
                                      mask=MaskChoice(source, drawn, mask_path), kernel_file=kernel_path,
                                      stop=stop_event, convention=m.convention, warn=gr.Warning,
                                      on_image=lambda i, n, name: progress((i, n), desc=f"restoring {name}"))
            except Stopped as err:
                log.info("stopped by the user")
                raise gr.Error("Stopped.", print_exception=False) from err
            except UserError as err:
                raise gr.Error(str(err), print_exception=False) from err
            except Exception as err:  # a bug: the message on the page, the traceback in the server's log
                log.exception("restoration failed")
                raise gr.Error(f"restoration failed ({type(err).__name__}: {err}); the server log has the "
                               "details", print_exception=False) from err
            finally:
                if stops.get(request.session_hash) is stop_event:
                    del stops[request.session_hash]
            return _show(outputs)

        inputs = [files, truth, model, sampler, steps, sigma, tile, overlap, seed_box, task, scale, mask_source,
                  drawing, mask_file, kernel_file]
        job = restore.click(run, inputs, [slider, info, downloads, gallery, pairs],
                            concurrency_limit=1, concurrency_id="restore")

        def halt(request: gr.Request):
            event = stops.get(request.session_hash)
            log.info("stop pressed (%s)", "a run is going" if event is not None else "nothing to stop")
            if event is not None:
                event.set()

        stop.click(halt, None, None, cancels=[job], queue=False)

        def compare(chosen: list, evt: gr.SelectData):
            return tuple(chosen[evt.index]) if chosen else None

        gallery.select(compare, pairs, slider, queue=False)
    return page


def _brush(size: int | str) -> gr.Brush:
    return gr.Brush(default_size=size, colors=["#ff00ff"], color_mode="fixed")


def _show(outputs: list[Output]):
    pairs = [(str(o.view[0]), str(o.view[1])) for o in outputs]
    return (pairs[0], table(outputs), [str(o.after) for o in outputs],
            gr.update(value=[str(o.after) for o in outputs], visible=len(outputs) > 1), pairs)


def _sampler_choices(model: Model) -> list[tuple[str, str]]:
    own = model.own.get("name")
    return [(f"the model's own ({own})" if own else "the model's own", DEFAULT), *((s, s) for s in model.samplers)]


def _radio(task: str | None) -> str | None:
    """The task radio's value of a task name (the SR tasks share one, with the scale beside it)."""
    return None if task is None else "sr" if task.startswith("sr_x") else task


def _scale(task: str | None) -> int:
    return int(task[4:]) if task and task.startswith("sr_x") else 4


def _task(family: str | None, scale: int | None) -> str:
    return f"sr_x{int(scale or 4)}" if family == "sr" else str(family or "inpainting")


def _int(value) -> int | None:
    """A page number or choice as an option: blank, 0 (steps, tile) and "default" mean the model's own."""
    if value in (None, "", DEFAULT) or (value == 0 and not isinstance(value, str)):
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{value!r} is not a whole number") from None


def work_dir(path: str | None) -> Path:
    """Where uploads' results go: the configured folder, or a fresh one under the system's temp folder (Gradio
    serves files from there without further permission)."""
    return Path(path) if path else Path(tempfile.mkdtemp(prefix="restore-app-"))
