"""The page's one API endpoint, /restore, for gradio_client (and the page's "Use via API" panel):

    from gradio_client import Client, handle_file
    files, numbers = Client("http://127.0.0.1:7860/").predict(handle_file("noisy.png"), api_name="/restore")

The image(s) are the only required input; every option is optional and named, and left out means what the page
chooses by default (the model listed first, the fast sampler of README "Which sampler when", the page's seed).
It answers the restored PNG(s) (restore.py's pixels) and the numbers the page shows. Its inputs and outputs are
components that are never shown: Gradio builds an endpoint's signature from components, and they also check that
an uploaded path is one the client uploaded.
"""

from __future__ import annotations

import logging

import gradio as gr
from gradio.data_classes import FileData, GradioRootModel, ListFiles

from core.errors import UserError
from webui.catalogue import MR_ORDERS, sampler_names
from webui.run import GENERATED_MASKS, MaskChoice, numbers
from webui.worker import OWN, Worker

log = logging.getLogger(__name__)

IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]


class _OneOrMore(GradioRootModel):
    root: list[FileData] | FileData


class _One(GradioRootModel):  # FileData itself would print its whole docstring into the API page
    root: FileData


def files(several: bool = True, **kwargs) -> gr.File:
    """gr.File for the API: several files that may also be given as one, so predict(handle_file("x.png")) works
    as predict([handle_file("x.png"), ...]) does; or (several=False) one file. Patched on the instance: Gradio
    writes a .pyi stub beside the source of every Component subclass."""
    component = gr.File(file_count="multiple" if several else "single", **kwargs)
    component.data_model = _OneOrMore if several else _One
    plain = component.preprocess

    def preprocess(payload):
        if isinstance(payload, _OneOrMore):
            payload = ListFiles(root=payload.root if isinstance(payload.root, list) else [payload.root])
        elif isinstance(payload, _One):
            payload = payload.root
        return plain(payload)

    component.preprocess = preprocess
    return component


def add_api(worker: Worker) -> None:
    """The /restore endpoint, inside the page's Blocks."""
    from diffpir.tasks import TASK_NAMES
    from irsde.samplers import SAMPLERS

    with gr.Group(visible=False):
        images = files(label="images", file_types=IMAGE_TYPES)
        inputs = [images,
                  gr.Dropdown(list(worker.models), value=None, label="model"),
                  gr.Dropdown([OWN, *sampler_names(SAMPLERS), *MR_ORDERS], value=None, label="sampler"),
                  gr.Number(None, precision=0, label="steps"),
                  gr.Number(None, label="sigma"),
                  gr.Number(None, precision=0, label="tile"),
                  gr.Number(None, precision=0, label="overlap"),
                  gr.Number(None, precision=0, label="seed"),
                  gr.Dropdown(list(TASK_NAMES), value=None, label="task"),
                  files(False, label="mask", file_types=IMAGE_TYPES),
                  gr.Dropdown(list(GENERATED_MASKS), value=None, label="mask_kind"),
                  files(False, label="kernel", file_types=[".npy", *IMAGE_TYPES]),
                  files(label="ground_truth", file_types=IMAGE_TYPES)]
        outputs = [gr.File(file_count="multiple", label="restored"), gr.JSON(label="numbers")]
        trigger = gr.Button(visible=False)

    def restore(images: list[str], model: str | None = None, sampler: str | None = None, steps: int | None = None,
                sigma: float | None = None, tile: int | None = None, overlap: int | None = None,
                seed: int | None = None, task: str | None = None, mask: str | None = None,
                mask_kind: str | None = None, kernel: str | None = None, ground_truth: list[str] | None = None):
        """Restore image(s). Left out: model = the page's first model; sampler = its fast sampler (README "Which
        sampler when"; "default" = the model's own) with its step count; steps, sigma, tile, overlap = the
        sampler's or model's own; seed = the page's. DiffPIR: task (inpainting, sr_x2, sr_x4, deblur_gaussian,
        deblur_motion; default its configured one), mask (a file, white = known pixel) or mask_kind (box |
        strokes | pixels, default box), kernel (a .npy summing to 1, or an image). ground_truth: images of the
        same file names, for PSNR/SSIM. Returns the restored PNGs and the numbers shown on the page."""
        try:
            m = worker.model(model)
            if sampler in (None, "") and m.fast:  # the page's default: the fast sampler at its step count
                sampler, steps = m.fast[0], m.fast[1] if steps is None else steps
            options = worker.options(m, sampler, steps, sigma, tile, overlap, seed, task)
            warnings: list[str] = []
            choice = MaskChoice("file", file=mask) if mask else MaskChoice(mask_kind or "box")
            outputs = worker.restore(m, list(images or []), options, warn=warnings.append, gt_files=ground_truth,
                                     mask=choice, kernel_file=kernel)
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # a bug: the message to the caller, the traceback in the server's log
            log.exception("API restoration failed")
            raise gr.Error(f"restoration failed ({type(err).__name__}: {err}); the server log has the details",
                           print_exception=False) from err
        return [str(o.after) for o in outputs], {"model": m.label, **numbers(outputs), "warnings": warnings}

    trigger.click(restore, inputs, outputs, api_name="restore", concurrency_limit=1, concurrency_id="restore",
                  show_progress="hidden")
