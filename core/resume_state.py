"""The loop state a checkpoint records when `trainer.max_steps` ends a run inside an epoch, or after an epoch's
last batch.

Lightning 2.6 ends such a run as if the epoch were over: the fit loop runs the epoch-end hooks and counts the epoch
processed and completed, and the last.ckpt written then (ModelCheckpoint at the epoch end or at the end of
training) makes a resumed run start the next epoch. "Train longer" (`ckpt_path=<that run> trainer.max_steps=<more>`)
then skips the rest of the epoch's batches and sees another data order than the uninterrupted run.

A SIGTERM stop after the same batch records the epoch as started but not processed, and resumes exactly (the
training loader's position is the same in both). `as_mid_epoch_stop` rewrites the epoch counters of a checkpoint
written after a max_steps stop inside an epoch to that state; nothing else differs between the two (compared key by
key, tests/integration/test_extend_run.py). An epoch that really ended (its last batch, or limit_train_batches)
is the other case: a checkpoint written after the epoch's last batch (ModelCheckpoint at the epoch end,
FinalCheckpoint) keeps the finished epoch's batch counters, and Lightning 2.6 resumes it as the middle of the
next epoch that ends after its first batch (the bug core.preemption.as_next_epoch_start works around for a
signal); `as_next_epoch_start_state` writes the counters the next epoch's start would have.
`resumable_loop_state` applies whichever fits.
"""

from __future__ import annotations

import copy
from typing import Any


def stopped_inside_epoch_by_max_steps(trainer) -> bool:
    """True after the fit loop left an epoch because max_steps was reached before the epoch's last batch."""
    fit = trainer.fit_loop
    epoch_loop = fit.epoch_loop
    epochs = fit.epoch_progress.total
    past_epoch_loop = epochs.started > 0 and epochs.processed == epochs.started  # in or after the epoch-end hooks
    return (past_epoch_loop and fit.max_steps not in (None, -1) and trainer.global_step >= fit.max_steps
            and not epoch_loop._num_ready_batches_reached())


def as_mid_epoch_stop(trainer, checkpoint: dict[str, Any]) -> None:
    """In a checkpoint being written (LightningModule.on_save_checkpoint): the epoch counters of a stop after the
    last batch that ran, when max_steps ended the run inside an epoch; otherwise leave it as it is."""
    if not stopped_inside_epoch_by_max_steps(trainer):
        return
    progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    for counters in (progress["total"], progress["current"]):
        counters["processed"] = counters["completed"] = counters["started"] - 1
    checkpoint["epoch"] = progress["current"]["started"] - 1  # trainer.current_epoch of the unfinished epoch


def stopped_after_epoch_end(trainer) -> bool:
    """True in or after the epoch-end hooks of an epoch whose batches all ran."""
    fit = trainer.fit_loop
    epochs = fit.epoch_progress.total
    return epochs.started > 0 and epochs.processed == epochs.started and fit.epoch_loop._num_ready_batches_reached()


def as_next_epoch_start_state(trainer, checkpoint: dict[str, Any]) -> None:
    """The checkpoint's loop counters as at the start of the next epoch (what TrainingEpochLoop.reset does when
    not restarting), computed on copies: the live loop is still inside the epoch-end hooks."""
    loop = trainer.fit_loop.epoch_loop
    state = checkpoint["loops"]["fit_loop"]
    for key, progress in (("epoch_loop.batch_progress", loop.batch_progress),
                          ("epoch_loop.scheduler_progress", loop.scheduler_progress),
                          ("epoch_loop.automatic_optimization.optim_progress",
                           loop.automatic_optimization.optim_progress)):
        fresh = copy.deepcopy(progress)
        fresh.reset_on_run()
        state[key] = fresh.state_dict()
    val = copy.deepcopy(loop.val_loop.batch_progress)
    val.total.reset()
    state["epoch_loop.val_loop.batch_progress"] = val.state_dict()
    progress = state["epoch_progress"]
    for counters in (progress["total"], progress["current"]):
        counters["processed"] = counters["completed"] = counters["started"]
    checkpoint["epoch"] = progress["current"]["started"]


def resumable_loop_state(trainer, checkpoint: dict[str, Any]) -> None:
    """In LightningModule.on_save_checkpoint: make the loop state of a checkpoint written at the end of a fit
    or an epoch resume exactly (see the module docstring)."""
    if stopped_inside_epoch_by_max_steps(trainer):
        as_mid_epoch_stop(trainer, checkpoint)
    elif stopped_after_epoch_end(trainer):
        as_next_epoch_start_state(trainer, checkpoint)
