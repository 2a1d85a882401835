"""`BackupAndRestore`: resume an interrupted `fit` exactly where its last backup was made."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.checkpoints import files as checkpoint_io
from torchcallbacks.checks import check_output_path
from torchcallbacks.distributed import checkpoint as distributed_checkpoint
from torchcallbacks.distributed import process_group as distributed


class BackupAndRestore(Callback):
    """Back up the whole training state, and resume from it when the script runs again.

    Example::

        import torch
        from torchcallbacks import BackupAndRestore, Trainer

        model = torch.nn.Linear(3, 1)
        trainer = Trainer(model, optimizer="sgd", loss="mse")
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        # Killed at epoch 7? Running the same line again continues from the last backup.
        trainer.fit(x, y, epochs=10, callbacks=[BackupAndRestore("backup")], verbose=0)

    The backup, ``backup_dir/latest.pt``, is a full checkpoint (`Trainer.checkpoint_state`):
    module, optimizer, AMP scaler, RNG states, the trainer's position and epoch
    accumulators, and the state of every callback, e.g. EarlyStopping's counter,
    ModelCheckpoint's best value and CSVLogger's file length. It is written atomically (a
    crash never leaves a broken file) and loaded safely (``torch.load(weights_only=True)``).
    On CPU a resumed run's weights, History and CSV file are bit-identical to an
    uninterrupted run's.

    - ``save_freq="epoch"``: back up after each epoch; a rerun continues with the next one.
    - ``save_freq=N``: back up every ``N`` training batches (counted across epochs); a
      rerun continues mid-epoch at the next batch, without reading the batches before it.
    - ``SIGTERM`` (a preempted job, ``kill``, a cluster's time limit) makes one last backup
      at the next batch boundary, then the signal takes its course (the previous handler,
      by default ending the process). A second ``SIGTERM`` acts at once. The handlers are
      installed during `fit` from the main thread and restored afterwards.
    - Ctrl-C (``SIGINT``) and ``SIGTERM`` print one line (rank 0) saying where the backup is,
      the epoch and batch it holds, and to run the script again; Ctrl-C still interrupts
      at once. A resumed `fit` prints ``Resuming from epoch E, batch B (backup ...)``
      before training.
    - After a finished `fit` the backup file is deleted and ``backup_dir`` removed if empty
      (``delete_checkpoint=False`` keeps the final state instead), so a later `fit` starts
      from epoch 0. An exception leaves the backup in place for the rerun, and so does a
      ``SIGTERM`` during the last epoch (the rerun then trains 0 epochs and finishes).

    Each backup is written in this callback's own ``on_epoch_end`` (or batch end), as Keras
    does, so a later callback that fails cannot prevent it. The callbacks listed after this
    one have not handled that epoch yet: the backup holds their state from before it, with
    the epoch's logs, and a rerun first finishes that epoch end for them (History gets the
    epoch, a CSVLogger its row, a ModelCheckpoint its file), so nothing is lost or written
    twice whichever write a crash interrupts. Callback states are matched to the rerun's
    callbacks by type, and by order among callbacks of one type; a saved state that matches
    no callback is named in a warning. Use a different folder from ModelCheckpoint's.

    ``backup_dir`` is checked at train begin: a folder that cannot be written raises an
    ``OSError`` naming it before any training. A damaged backup (an empty, truncated or
    foreign ``latest.pt``) raises a `CheckpointFileError` naming it: delete the file to
    start from scratch.

    Under torchrun every process takes part: the backup holds each process's RNG states
    and epoch accumulators (a restarted group continues exactly), a sharded (FSDP2) module
    is saved as a directory of shards, and ``backup_dir`` must be on a filesystem every
    process shares; processes that do not see the same backup all raise one error.

    Args:
        backup_dir: folder for the backup (created when needed).
        save_freq: ``"epoch"`` or a positive number of training batches.
        delete_checkpoint: delete the backup when `fit` finishes.
    """

    filename = "latest.pt"

    on_every_process = True  # under torchrun every rank needs it: it saves collectively

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
    ) -> None:
        super().__init__()
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if save_freq != "epoch" and (
            not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1
        ):
            raise ValueError(
                "Invalid value for argument `save_freq`. "
                f"Received: save_freq={save_freq}. "
                "Expected either 'epoch' or an integer value."
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self._terminating = False
        self._previous_handlers: dict[int, Any] = {}
        self._handler_installed = False
        # The position in the backup on disk: (0-based epoch, batches of it done), or None.
        self._backed_up: tuple[int, int] | None = None

    @property
    def backup_path(self) -> str:
        """``backup_dir/latest.pt``."""
        return os.path.join(self.backup_dir, self.filename)

    def implements_batch_hooks(self, mode: str) -> bool:
        # Batch hooks also let a SIGTERM be answered at the next batch boundary.
        return mode == "train" and (self.save_freq != "epoch" or self._handler_installed)

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # backups use the trainer's state, not the batch logs: no per-step sync

    # -- restore ---------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._terminating = False
        distributed.check_on_rank0(
            lambda: check_output_path(self.backup_dir, "BackupAndRestore", folder=True)
        )
        try:
            # Every rank checks that all see the same backup (a shared folder).
            state = distributed_checkpoint.load_backup(
                self.trainer, self.backup_path, self.backup_dir
            )
        except checkpoint_io.CheckpointFileError as error:
            raise checkpoint_io.CheckpointFileError(
                self.backup_path,
                f"cannot be resumed from: it {str(error).removeprefix(repr(error.path) + ' ')} "
                "Delete it to train from scratch",
            ) from error
        self._backed_up = None
        if state is not None:
            if not checkpoint_io.is_full_checkpoint(state):
                raise ValueError(
                    f"{self.backup_path} is not a BackupAndRestore backup (no full checkpoint "
                    "format marker); delete it or choose another backup_dir."
                )
            self.trainer.request_resume(
                {**state, "source": self.backup_path, "source_kind": "backup"}
            )
            position = state["training"]
            self._backed_up = (int(position["epoch"]), int(position["batch"]))
        self._install_handler()

    # -- back up ---------------------------------------------------------------------------
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        due = self.save_freq != "epoch" and self.trainer.global_train_batch % self.save_freq == 0
        if due or self._terminating_everywhere():
            self._backup(logs, (self.trainer.current_epoch, batch + 1))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch" or self._terminating_everywhere():
            self._backup(logs, (epoch + 1, 0))

    def on_train_end(self, logs: dict | None = None) -> None:
        # The backup is a collective under torchrun: every rank decides together.
        terminating = distributed.any_rank(self._terminating, self.trainer.device)
        self._terminating = terminating
        try:
            if self.delete_checkpoint and not terminating:
                self._delete_backup()
            else:  # after a SIGTERM, the rerun finds the finished state (and trains 0 epochs)
                self._save(logs, (self.trainer.current_epoch + 1, 0))
        finally:
            self._restore_handler()
        if terminating:
            self._tell("terminated (SIGTERM)")
            signal.raise_signal(signal.SIGTERM)

    def _backup(self, logs: Mapping[str, Any] | None, position: tuple[int, int]) -> None:
        self._save(logs, position, saved_by=self)
        if self._terminating:  # the last backup after a SIGTERM: now let the signal through
            self._restore_handler()
            self._tell("terminated (SIGTERM)")
            signal.raise_signal(signal.SIGTERM)

    def _save(
        self,
        logs: Mapping[str, Any] | None,
        position: tuple[int, int],
        saved_by: Callback | None = None,
    ) -> None:
        """Write the backup; ``position``: the epoch (0-based) and batch a rerun resumes at."""
        # Every rank: each sends its RNG and accumulators; sharded modules write shards.
        distributed_checkpoint.save_full(
            self.trainer, self.backup_path, logs=logs, saved_by=saved_by
        )
        self._backed_up = position

    def _delete_backup(self) -> None:
        if not self.trainer.is_main_process or not os.path.isdir(self.backup_dir):
            return
        distributed_checkpoint.remove(self.backup_path)
        for name in os.listdir(self.backup_dir):  # temp files of a killed write
            if name.startswith(f".{self.filename}.") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.backup_dir, name))
        with contextlib.suppress(OSError):  # kept when it holds other files
            os.rmdir(self.backup_dir)

    # -- SIGTERM and Ctrl-C ----------------------------------------------------------------
    def _install_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in (
            (signal.SIGTERM, self._on_sigterm),
            (signal.SIGINT, self._on_sigint),
        ):
            previous = signal.signal(signum, handler)
            if previous != handler:  # else still installed by a fit that raised
                self._previous_handlers[signum] = signal.SIG_DFL if previous is None else previous
        self._handler_installed = True

    def _restore_handler(self) -> None:
        if self._handler_installed:
            for signum, previous in self._previous_handlers.items():
                signal.signal(signum, previous)
            self._handler_installed = False
        self._terminating = False
        distributed.clear("terminating")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self._terminating or not self._fit_running(frame):
            # A second SIGTERM, or a fit that ended by an exception (so on_train_end never
            # restored the handler): pass the signal on as if this callback were not here.
            self._restore_handler()
            signal.raise_signal(signum)
            return
        self._terminating = True  # back up at the next batch boundary, then terminate
        distributed.request("terminating")  # under torchrun: at a boundary all ranks agree on

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C: say what the backup holds, then let the signal take its course (by default
        a KeyboardInterrupt at once: no backup is made in the middle of a batch)."""
        previous = self._previous_handlers.get(signum, signal.default_int_handler)
        if not self._fit_running(frame):  # a fit that raised left the handler: pass it on
            self._restore_handler()
        elif previous in (signal.default_int_handler, signal.SIG_DFL):  # it ends the fit
            self._tell("interrupted (Ctrl-C)")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            self._restore_handler()
            signal.raise_signal(signum)

    def _tell(self, event: str) -> None:
        """Print (rank 0) one line: the event, what the backup on disk holds, how to resume."""
        if not self.trainer.is_main_process:
            return
        if self._backed_up is None:
            line = (
                f"BackupAndRestore: {event} before the first backup: nothing was saved in "
                f"{self.backup_dir!r}, so running the script again starts from the beginning."
            )
        else:
            epoch, batch = self._backed_up
            line = (
                f"BackupAndRestore: {event}. The backup {self.backup_path!r} holds epoch "
                f"{epoch + 1}, batch {batch}: run the same script again to resume from there."
            )
        newline = "\n" if sys.stdout.isatty() else ""  # after a progress bar's open line
        print(newline + line, flush=True)

    def _terminating_everywhere(self) -> bool:
        """Whether to make the SIGTERM backup now. Under torchrun the backup is a collective,
        so every rank makes it at the same boundary: once the ranks have agreed that a
        SIGTERM reached one of them (each then terminates after the backup)."""
        if not distributed.is_active():
            return self._terminating
        if distributed.agreed("terminating"):
            self._terminating = True
            return True
        return False

    def _fit_running(self, frame: FrameType | None) -> bool:
        """Whether this thread is inside `Trainer.fit` of this callback's trainer."""
        from torchcallbacks.trainer import Trainer

        while frame is not None:
            if frame.f_code is Trainer.fit.__code__ and frame.f_locals.get("self") is self.trainer:
                return True
            frame = frame.f_back
        return False
