"""Silence the lines a user cannot act on, each matched narrowly at its source (see README: Logging).

* Lightning's "💡 Tip: ... litlogger / litmodels" advertisements (rank_zero_info at every Trainer start);
* torch 2.14's FutureWarning about `isinstance(treespec, LeafSpec)`, raised inside Lightning 2.6's own
  `_pytree` helper (Lightning's code, not ours; it goes when Lightning updates);
* "Precision bf16-mixed is not supported by the model summary": the summary's size estimate assumes 32 bits
  under mixed precision, which is what mixed precision keeps the weights in anyway.
wandb's "The anonymous setting has no effect" is removed where it is caused (core.loggers.wandb_logger).
"""

from __future__ import annotations

import logging
import warnings


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_known_noise() -> None:
    """Install the filters (idempotent)."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Precision (bf16|16)-mixed is not supported by the model summary",
                            category=UserWarning)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())


def lightning_lines_once() -> None:
    """Under Hydra's job logging (train.py) the root logger prints every record with a timestamp and keeps it in
    the run's train.log; Lightning 2.6 also gives the `lightning` logger a console handler of its own and lets it
    propagate, so each of its lines would print twice. Keep the root's copy."""
    if not logging.getLogger().handlers:
        return  # no root handler (evaluate.py, restore.py): Lightning's own handler is the only one
    lightning = logging.getLogger("lightning")
    for handler in list(lightning.handlers):
        if type(handler) is logging.StreamHandler:
            lightning.removeHandler(handler)
