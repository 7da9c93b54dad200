"""The page's bundled demo inputs: held-out scikit-image photographs degraded as the demo models were trained
(data/demo.py), and held-out LFW faces for the DiffPIR demo prior. Nothing is downloaded.

They are written as PNG files (input and ground truth under the same name), so a demo image is restored exactly
like an upload of that file, and `restore.py input=<that file>` gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Demo:
    kind: str              # what a model lists under `demos:` in configs/app.yaml to be picked with it
    label: str
    lq: Path               # the input file
    gt: Path               # its ground truth
    task: str | None = None  # the DiffPIR task the input is a measurement for


# (kind, data/demo.py task, photos, label): the photo degradations of the demo models
PHOTO_DEMOS = (("noise", "noise", 3, "noisy (σ 25)"), ("rain", "rain", 2, "rainy"), ("blur", "blur", 2, "blurred"))
FACE_SIZE, FACES = 32, 2  # the DiffPIR demo prior's faces: 32x32, two held-out ones


def write_demo_images(root: str | Path) -> list[Demo]:
    """Write the demo inputs under root/<kind>/{lq,gt}/<name>.png and return them (in page order)."""
    from core.io import write_image
    from data.demo import SCALE, build_demo_split
    from data.resize import imresize

    root = Path(root)
    demos = []

    def add(kind: str, label: str, name: str, lq, gt, task: str | None = None) -> None:
        files = root / kind / "lq" / f"{name}.png", root / kind / "gt" / f"{name}.png"
        write_image(files[0], lq)
        write_image(files[1], gt)
        demos.append(Demo(kind, label, *files, task))

    for kind, task, count, what in PHOTO_DEMOS:
        split = build_demo_split(task, "test", max_images=count)
        for i in range(len(split)):
            item = split[i]
            add(kind, f"{item['name']} — {what}", item["name"], item["lq"], item["gt"])
    faces = build_demo_split("inpaint", "test", patch_size=FACE_SIZE, image_size=FACE_SIZE, source="faces",
                             max_images=FACES)
    for i in range(len(faces)):
        add("face", f"{faces[i]['name']} — 32x32 face (inpaint a region)", faces[i]["name"], faces[i]["gt"],
            faces[i]["gt"], "inpainting")
    for i in range(len(faces)):
        low = imresize(faces[i]["gt"], scale=1 / SCALE).clamp(0, 1)  # MATLAB bicubic, as the demo's SR data
        add("face_x4", f"{faces[i]['name']} — 8x8 face (super-resolve x{SCALE})", faces[i]["name"], low,
            faces[i]["gt"], f"sr_x{SCALE}")
    import io

    import numpy as np
    from PIL import Image

    from data.demo import real_world_photo

    gt, jpeg = real_world_photo("chelsea", size=128)  # a real JPEG encoder's output, not the training simulation
    add("real_x4", f"chelsea — 32x32 phone-like JPEG (real-world x{SCALE})", "chelsea",
        np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), gt)
    return demos
