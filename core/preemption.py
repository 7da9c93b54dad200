"""The end of a job announced by a signal: notice it, stop at a batch boundary, requeue under SLURM.

What Lightning 2.6 does by itself (lightning/pytorch/trainer/connectors/signal_connector.py):
* SIGTERM: `_sigterm_notifier_fn` only sets `trainer.received_sigterm`; the loops then raise `SIGTERMException`, a
  `SystemExit` without a code, at the next batch boundary: the process ends with status 0 and writes no checkpoint.
* Under srun (`SLURMEnvironment(auto_requeue=True)`, the default there), the requeue signal (SIGUSR1) runs
  `_slurm_sigusr_handler_fn` inside the signal handler, i.e. wherever the step happens to be: it writes
  `hpc_ckpt_<n>.ckpt` into `trainer.default_root_dir`, calls `scontrol requeue` and lets training go on until
  SLURM's SIGTERM. It installs that handler only when SIGUSR1 has none yet, and the requeued job resumes `hpc_ckpt_*`
  only from the same `default_root_dir`, while Hydra gives every run a fresh one.

`core.callbacks.Preemption` therefore installs its own handlers before Lightning registers its own (on_fit_start):
they only record the signal. At the next batch end the callback sets Lightning's SIGTERM flag (`stop_at_batch_end`),
so Lightning's loop raises its `SIGTERMException` where it checks for SIGTERM (after the batch is complete); the
callback's `on_exception` then writes `checkpoints/last.ckpt`, requeues with the helpers below when the signal was
SLURM's requeue signal, and sets the exit status.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)


def stop_at_batch_end(trainer) -> None:
    """Stop the fit where Lightning stops on SIGTERM: what its notifier (`_SignalConnector._sigterm_notifier_fn`)
    sets, without its launcher kill and broadcast (every rank sets it here at the same batch). The training loop
    then raises `SIGTERMException` (a `SystemExit`) at the end of the batch in progress, after the module's
    on_train_batch_end and the step's logging (training_epoch_loop.on_advance_end), or at the end of the validation
    batch in progress. Stopping earlier, in a callback's on_train_batch_end, would checkpoint a step whose EMA update
    and logged loss are missing."""
    trainer._signal_connector.received_sigterm = True


def as_next_epoch_start(trainer) -> None:
    """Before a checkpoint written after the last batch of an epoch (the fit loop's SIGTERM check comes after it
    counts the epoch complete): reset the training epoch loop's per-epoch counters as the next epoch's start would
    (TrainingEpochLoop.reset when not restarting). Lightning 2.6 otherwise resumes such a checkpoint as the middle of
    the next epoch with the finished epoch's batch count, and ends that epoch after its first batch. Inside an epoch
    it does nothing. The process ends after this checkpoint, so changing the live loop costs nothing."""
    epochs = trainer.fit_loop.epoch_progress.total
    if epochs.ready == 0 or epochs.completed != epochs.ready:
        return
    loop = trainer.fit_loop.epoch_loop
    loop.batch_progress.reset_on_run()
    loop.scheduler_progress.reset_on_run()
    loop.automatic_optimization.optim_progress.reset_on_run()
    loop.val_loop.batch_progress.total.reset()


def signal_from_name(sig: str | int | signal.Signals) -> signal.Signals:
    """`signal.Signals` from "SIGTERM", "USR1", 15 or a Signals member; a ConfigError naming the setting otherwise."""
    from core.errors import ConfigError

    try:
        if isinstance(sig, str):
            name = sig.upper() if sig.upper().startswith("SIG") else f"SIG{sig.upper()}"
            return signal.Signals[name]
        return signal.Signals(sig)
    except (KeyError, ValueError):
        raise ConfigError(f"callbacks.preemption.signals: unknown signal {sig!r} (e.g. SIGTERM, SIGUSR1)") from None


def exit_code_for(signum: int, exit_code: int | None = None) -> int:
    """The status a preempted run exits with: `exit_code` when set, else 128 + the signal number (the status a
    shell reports for a process ended by that signal: 143 for SIGTERM, 138 for SIGUSR1 on Linux)."""
    return int(exit_code) if exit_code is not None else 128 + int(signum)


class SignalFlag:
    """Handlers that only record which signal came first. While not `active` (before `install`, after
    `restore`, or when Lightning's teardown puts this handler back), a signal goes to the handler that was there
    before, so a restored default still ends the process."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.active = False
        self._previous: dict[signal.Signals, object] = {}

    def install(self, signals: Iterable[signal.Signals]) -> None:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return  # Python allows signal handlers only in the main thread
        for sig in signals:
            current = signal.getsignal(sig)
            if current != self._handle:  # else: put back by Lightning's teardown; keep what was there before us
                self._previous[sig] = current
            signal.signal(sig, self._handle)
        self.active = True

    def restore(self) -> None:
        """Give the handlers back where ours is still installed (the previous ones stay known for forwarding)."""
        self.active = False
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle and handler is not None:
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.active:
            if self.received is None:
                self.received = signal.Signals(signum)
            return
        previous = self._previous.get(signal.Signals(signum), signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # what the process would have done without us: usually end
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for an array task, else SLURM_JOB_ID."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> bool:
    """`scontrol requeue <job>`, as Lightning's SLURM handler does; one log line either way. True on success."""
    job_id = slurm_job_id()
    if not job_id or not re.fullmatch(r"[0-9_]+", job_id):
        log.warning("not requeued: no SLURM job id in the environment (SLURM_JOB_ID)")
        return False
    try:
        result = subprocess.call(["scontrol", "requeue", job_id])
    except OSError as err:
        log.warning("requeueing SLURM job %s failed: %s", job_id, err)
        return False
    if result != 0:
        log.warning("requeueing SLURM job %s failed: scontrol exited with %s (was the job submitted with "
                    "--requeue, or does the cluster allow requeueing?)", job_id, result)
        return False
    log.info("requeued SLURM job %s: it restarts with the same command line", job_id)
    return True
