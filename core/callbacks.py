"""Small Lightning callbacks of the suite."""

from __future__ import annotations

import logging
import shlex
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

log = logging.getLogger(__name__)


class LossTrend(L.Callback):
    """At the end of training, say how the training loss moved (mean of the first vs the last `window` steps)."""

    def __init__(self, key: str = "train/loss", window: int = 50) -> None:
        self.key, self.window = key, window
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.values.append(float(loss.detach()))

    def on_train_end(self, trainer, pl_module) -> None:
        if len(self.values) < 2:
            return
        n = max(1, min(self.window, len(self.values) // 2))
        first = sum(self.values[:n]) / n
        last = sum(self.values[-n:]) / n
        change = 100.0 * (last - first) / first if first else float("nan")
        rank_zero_info(f"{self.key}: mean of the first {n} steps {first:.5f} -> last {n} steps {last:.5f} "
                       f"({change:+.1f}%) over {len(self.values)} steps")


class Preemption(L.Callback):
    """Survive the end of a cluster job: on one of `signals` (SIGTERM; SIGUSR1, which `#SBATCH --signal=USR1@90`
    sends 90 s before the time limit) write `<run>/checkpoints/last.ckpt` at the next batch boundary, log how to
    resume, requeue the job when the signal is SLURM's requeue signal (Lightning's SLURMEnvironment, auto_requeue)
    and end the process with `exit_code` (default 128 + the signal number: 143 for SIGTERM, 138 for SIGUSR1), so a
    scheduler sees a run that was stopped, not one that finished. See core.preemption for what Lightning does alone.

    The decision is reduced over the DDP ranks at every training (and in-fit validation) batch end, so every rank
    stops at the same batch; `trainer.save_checkpoint` writes on rank 0 only. The checkpoint resumes exactly
    (weights, EMA, logged losses and, through data.samplers.ResumableLoader, the data position) because it is written
    where Lightning's own restart logic expects one (see core.preemption):
    * after a complete training batch: the stop is Lightning's own SIGTERM stop (`stop_at_batch_end`), raised
      after the module's on_train_batch_end (the EMA update, which runs after this callback's hook) and the step's
      logging; `on_exception` writes the checkpoint;
    * inside a validation: Lightning raises at the end of the validation batch in progress;
    * after a complete validation: `on_validation_end` writes it, where ModelCheckpoint does (Lightning's restart
      then skips that validation and counts the logger step itself);
    * at the end of an epoch: as at the start of the next one (`as_next_epoch_start`).
    """

    def __init__(self, signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGUSR1"), exit_code: int | None = None,
                 requeue: bool = True) -> None:
        from core.preemption import SignalFlag, signal_from_name

        self.signals = [signal_from_name(s) for s in signals]
        self.exit_code = exit_code
        self.requeue = requeue
        self.flag = SignalFlag()
        self.stopping: signal.Signals | None = None  # the signal every rank agreed to stop on
        self._saved_at: int | None = None  # the step whose checkpoint on_validation_end wrote

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        # Before Lightning's own handlers (registered right after this hook): Lightning then leaves SIGUSR1 to us
        # (no mid-step hpc_ckpt) and calls our SIGTERM handler after its own notifier.
        self.stopping, self._saved_at = None, None
        self.flag.install({*self.signals, *self._slurm_requeue_signal(trainer)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # a long validation must not miss the warning
            self._check(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check(trainer)
            if self.stopping is not None:
                self._save(trainer, self.stopping)
                self._saved_at = trainer.global_step

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from core.preemption import as_next_epoch_start, requeue_slurm_job

        if isinstance(exception, SIGTERMException):
            # Lightning's loop stopped at the end of a batch, a validation batch or an epoch (after our _check, or
            # on its own when SIGTERM landed after our check of that batch): the state is whole.
            signum = self.stopping or self._received(trainer) or signal.SIGTERM
            if not trainer.sanity_checking:
                if self._saved_at != trainer.global_step:
                    as_next_epoch_start(trainer)
                    self._save(trainer, signum)
                if trainer.is_global_zero and self.requeue and signum in self._slurm_requeue_signal(trainer):
                    requeue_slurm_job()
            exception.code = self._code(signum)
        # Lightning's teardown, which comes after this hook, may put our handler back (it was there when Lightning
        # registered its own); inactive, it forwards every signal to the handler that was there before.
        self.flag.restore()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.flag.restore()

    # -- the stop ---------------------------------------------------------------------------------------------
    def _received(self, trainer) -> signal.Signals | None:
        if self.flag.received is not None:
            return self.flag.received
        return signal.SIGTERM if trainer.received_sigterm else None

    def _check(self, trainer) -> None:
        from core.preemption import stop_at_batch_end

        if self.stopping is not None:
            return
        local = self._received(trainer)
        if not trainer.strategy.reduce_boolean_decision(local is not None, all=False):
            return
        self.stopping = signal.Signals(trainer.strategy.broadcast(int(local or signal.SIGTERM), src=0))
        stop_at_batch_end(trainer)

    def _code(self, signum: int) -> int:
        from core.preemption import exit_code_for

        return exit_code_for(signum, self.exit_code)

    def _save(self, trainer, signum: signal.Signals) -> None:
        from core.errors import CheckpointError

        path = self._checkpoint_path(trainer)
        try:
            trainer.save_checkpoint(path)
            written = not getattr(trainer.strategy.checkpoint_io, "last_write_failed", False)
        except CheckpointError:  # on_write_error=stop (rank 0 only): the run stops here anyway
            trainer.strategy.barrier("Trainer.save_checkpoint")  # the other ranks wait there
            written = False
        if not trainer.is_global_zero:
            return
        run_dir = Path(path).parent.parent
        step = trainer.global_step
        if written:
            log.info("%s at step %d: wrote %s. Resume with: %s", signum.name, step, path, resume_command(run_dir))
        else:
            log.warning("%s at step %d: could not write %s (see above); it keeps the last state written before. "
                        "Resume with: %s", signum.name, step, path, resume_command(run_dir))

    @staticmethod
    def _checkpoint_path(trainer) -> Path:
        """The ModelCheckpoint's last.ckpt (the file ckpt_path=last finds), else <run>/checkpoints/last.ckpt."""
        callbacks = sorted(trainer.checkpoint_callbacks, key=lambda cb: not getattr(cb, "save_last", False))
        for cb in callbacks:
            if getattr(cb, "dirpath", None):
                return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    @staticmethod
    def _slurm_requeue_signal(trainer) -> set[signal.Signals]:
        """{SIGUSR1} (or the configured requeue signal) when Lightning runs under SLURM with auto_requeue."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = trainer._accelerator_connector.cluster_environment  # what Lightning's _SignalConnector reads too
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None:
            return {signal.Signals(env.requeue_signal)}
        return set()


def resume_command(run_dir: Path) -> str:
    """`python train.py <this run's overrides> ckpt_path=<run_dir>` (the overrides from Hydra when it runs)."""
    args: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            args = [a for a in HydraConfig.get().overrides.task if not a.lstrip("+~").startswith("ckpt_path=")]
    except Exception:  # only a hint: never fail a preempted run over it
        args = []
    return shlex.join(["python", "train.py", *args, f"ckpt_path={run_dir}"]) + "  (or ckpt_path=last)"


class CheckpointWrites(L.Callback):
    """What a failed checkpoint write (disk full, quota) does to the run, set on the trainer's
    core.checkpoint.AtomicCheckpointIO: "continue" logs one line, keeps the previous files and trains on (the next
    save tries again); "stop" ends the run with the error (train.py: one line, exit status 2)."""

    def __init__(self, on_error: str = "continue") -> None:
        from core.checkpoint import check_write_error_action

        self.on_error = check_write_error_action(on_error)

    def setup(self, trainer, pl_module, stage: str) -> None:
        from core.checkpoint import AtomicCheckpointIO

        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.on_write_error = self.on_error
        elif stage == "fit":
            log.warning("callbacks.checkpoint_writes: the trainer's checkpoint plugin is %s, not "
                        "core.checkpoint.AtomicCheckpointIO; on_error=%s has no effect", type(io).__name__,
                        self.on_error)


class FinalCheckpoint(L.Callback):
    """last.ckpt holds the step training ended at. Lightning's ModelCheckpoint(save_last=True) rewrites last.ckpt
    only with a top-k save (here: at every validation) and at the end of training only when it never saved, so
    a run whose max_steps falls between two validations would end with a last.ckpt some steps behind its final
    weights, and "train longer" would redo those steps. At the end of fit this writes it through the
    ModelCheckpoint that keeps last.ckpt (its bookkeeping and file name), unless that step is already saved.
    When max_steps ended the run inside an epoch, the checkpoint records a stop after the final batch
    (core.resume_state), so extending the run is exact."""

    def on_train_end(self, trainer, pl_module) -> None:
        for cb in trainer.checkpoint_callbacks:
            # ModelCheckpoint's own test: not under fast_dev_run or sanity checking, and this step not yet saved
            if getattr(cb, "save_last", False) and not cb._should_skip_saving_checkpoint(trainer):
                cb._save_last_checkpoint(trainer, cb._monitor_candidates(trainer))


def _line_bar_class():
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    from core.progress import LineTqdm

    class LineLightningTqdm(LineTqdm, Tqdm):  # Lightning's number formatting, LineTqdm's drawing
        pass

    return LineLightningTqdm


class LineProgressBar(L.pytorch.callbacks.TQDMProgressBar):
    """Lightning's progress bars as log lines (core.progress.LineTqdm): train.py uses it when the output is a
    file or a pipe, so a log holds a line every 30 s or 10 % (step, loss, rate, time left), not redraws."""

    def _bar(self, desc: str, leave: bool, position: int = 0):
        import sys

        return _line_bar_class()(desc=desc, position=2 * self.process_position + position, disable=self.is_disabled,
                                 leave=leave, dynamic_ncols=True, file=sys.stdout, smoothing=0,
                                 bar_format=self.BAR_FORMAT)

    def init_sanity_tqdm(self):
        return self._bar(self.sanity_check_description, leave=False)

    def init_train_tqdm(self):
        return self._bar(self.train_description, leave=True)

    def init_validation_tqdm(self):
        has_main_bar = self.trainer.state.fn != "validate"
        return self._bar(self.validation_description, leave=not has_main_bar, position=int(has_main_bar))

    def init_test_tqdm(self):
        return self._bar("Testing", leave=True)

    def init_predict_tqdm(self):
        return self._bar(self.predict_description, leave=True)
