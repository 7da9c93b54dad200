"""Experiment loggers (configs/logger/, built by `_target_`): wandb by default, never blocking; image panels.

wandb 0.31 without an API key either raises at once (no terminal) or waits forever at its login prompt (in a
terminal), and with a key but no network it hangs for minutes. So the mode is decided *before* wandb starts:
online only when a key is configured, offline otherwise (runs sync later with `wandb sync`), and a user's own
`WANDB_MODE` always wins.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.path.expanduser("~/.netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return auth.authenticators(host) is not None


def choose_wandb_mode() -> str:
    """'online', 'offline' or 'disabled': the user's WANDB_MODE, else online iff an API key is configured."""
    user_mode = os.environ.get("WANDB_MODE")
    if user_mode:
        return user_mode
    if wandb_key_configured():
        return "online"
    log.warning("wandb: no API key configured, logging offline (sync later with `wandb sync <run dir>/wandb`)")
    return "offline"


def wandb_logger(save_dir: str | Path, name: str, project: str = "diffusion-restoration",
                 tags: list[str] | None = None):
    """Lightning's WandbLogger with the mode chosen before wandb starts; the run is named <name>/<date_time>."""
    from lightning.pytorch.loggers import WandbLogger

    mode = choose_wandb_mode()
    os.environ["WANDB_MODE"] = mode  # so every rank and wandb's own service agree
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(save_dir), name=f"{name}/{Path(save_dir).name}", project=project,
                         offline=mode == "offline", tags=list(tags or []), mode=mode)
    # Lightning passes anonymous=None, which wandb 0.31 answers with "The anonymous setting has no effect" on
    # every run; left out, wandb's own default applies (the setting is deprecated and does nothing)
    logger._wandb_init.pop("anonymous", None)
    return logger


def log_panels(logger, panels: list[np.ndarray], captions: list[str], step: int, save_dir: str | Path) -> None:
    """Send image panels to the logger (wandb/tensorboard) and always keep PNG copies under save_dir/panels."""
    if not panels:
        return
    from core.io import write_image

    panel_dir = Path(save_dir) / "panels"
    for panel, caption in zip(panels, captions):
        write_image(panel_dir / f"step{step:07d}_{caption}.png", panel)
    if logger is None or logger is False:
        return
    name = type(logger).__name__
    if name == "WandbLogger":
        logger.log_image(key="val/panels", images=list(panels), caption=list(captions), step=step)
    elif name == "TensorBoardLogger":
        for panel, caption in zip(panels, captions):
            logger.experiment.add_image(f"val/{caption}", panel, step, dataformats="HWC")
