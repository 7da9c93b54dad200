"""DiffIR-RealSR network parity on random weights: the official DiffIR-RealSR ``DiffIRS1`` / ``DiffIRS2`` (x4, x2,
x1 as in DiffIR-RealSR/options/*.yml) against the suite's networks loaded from a BasicSR ``params_ema`` file through
``diffir.official.load_network`` (the ``weights=`` route of evaluate.py / restore.py).

    python scripts/check_diffir_realsr_parity.py --official-repo /path/to/DiffIR

Reuses scripts/check_diffir_parity.py (its official-import stubs and comparisons); the test-time padding multiple is
each scale's official ``window_size`` (8, 16, 32).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's root, when run as a script

from scripts import check_diffir_parity as parity  # noqa: E402

NET = dict(n_encoder_res=9, inp_channels=3, out_channels=3, dim=64, num_blocks=[13, 1, 1, 1],
           num_refinement_blocks=13, heads=[1, 2, 4, 8], ffn_expansion_factor=2.2, bias=False,
           LayerNorm_type="BiasFree")
# name, LR sizes (aligned to the window, and one that needs padding), window_size of the official test options
CASES = (
    ("RealSR x4", 4, ((32, 32), (27, 21)), 8),
    ("RealSR x2", 2, ((32, 32), (27, 21)), 16),
    ("RealSR x1", 1, ((64, 64), (50, 38)), 32),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-repo", type=Path, required=True, help="checkout of Zj-BinXia/DiffIR")
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    repo, worst = args.official_repo.resolve(), 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, scale, sizes, window in CASES:
            parity.WINDOW = window  # the official pads to the window before the network sees the image
            case = (name, "DiffIR-RealSR", {**NET, "scale": scale}, 3, scale, sizes)
            for label, value in parity.check_case(repo, Path(tmp), case, args.seed).items():
                print(f"{name:>10} | {label:<28} max |official - ours| = {value:.3e}")
                worst = max(worst, value)
    ok = worst <= args.tol
    print(f"worst difference {worst:.3e}: {'OK' if ok else 'FAIL'} (tolerance {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
