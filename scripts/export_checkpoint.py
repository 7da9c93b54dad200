"""Slim a training checkpoint for inference: keep the run config and the EMA weights, drop optimizer state.

    python scripts/export_checkpoint.py runs/.../checkpoints/best-....ckpt assets/model.ckpt

The result loads everywhere a checkpoint does (evaluate.py, restore.py, load_network); it cannot resume training.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.checkpoint import atomic_torch_save, config_from_checkpoint, load_checkpoint  # noqa: E402


def export(src: str, dst: str) -> Path:
    ckpt = load_checkpoint(src)
    config = config_from_checkpoint(ckpt, src)
    state = ckpt["state_dict"]
    # the EMA weights, and a latent model's frozen autoencoder, which its restorer needs
    keep = {k: v for k, v in state.items() if k.startswith(("ema_net.", "autoencoder"))} or state
    slim = {"state_dict": keep, "config": config, "global_step": ckpt.get("global_step"),
            "exported_from": str(src)}
    atomic_torch_save(slim, dst)
    return Path(dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/export_checkpoint.py SRC.ckpt DST.ckpt")
    out = export(sys.argv[1], sys.argv[2])
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
