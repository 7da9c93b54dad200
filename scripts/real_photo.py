"""A "real" low-quality photo for the real-world demo: a held-out demo photograph downscaled, with sensor-like noise
(signal-dependent shot noise + read noise), then saved by a real JPEG encoder (PIL's libjpeg), not by the
Real-ESRGAN simulation the model trained on. Writes <out>/lq/<name>.jpg (restore.py's input), <out>/gt/<name>.png
(the clean photo, `scale` times larger) and <out>/bicubic/<name>.png (the JPEG upsampled by MATLAB bicubic: the
baseline to beat).

    python scripts/real_photo.py --out runs/demo/realsr/real [--photo chelsea] [--size 256] [--scale 4] [--quality 60]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's root, when run as a script

from core.io import to_tensor, write_image  # noqa: E402
from data.demo import TEST_PHOTOS, real_world_photo  # noqa: E402
from data.resize import imresize  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--photo", default="chelsea", choices=TEST_PHOTOS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--quality", type=int, default=60)
    args = parser.parse_args(argv)
    out = Path(args.out)
    gt, jpeg = real_world_photo(args.photo, args.size, args.scale, args.quality)
    (out / "lq").mkdir(parents=True, exist_ok=True)
    (out / "lq" / f"{args.photo}.jpg").write_bytes(jpeg)
    write_image(out / "gt" / f"{args.photo}.png", gt)
    lq = to_tensor(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
    write_image(out / "bicubic" / f"{args.photo}.png", imresize(lq, scale=args.scale).clamp(0, 1))
    print(f"wrote {out / 'lq' / args.photo}.jpg (JPEG q{args.quality}, {args.size // args.scale} px) and its "
          f"ground truth {out / 'gt' / args.photo}.png ({args.size} px)")
    return out


if __name__ == "__main__":
    main()
