"""`ModelCheckpoint`: save the model (or a full checkpoint) during training."""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from torchcallbacks.callbacks._monitor import MonitorCallback
from torchcallbacks.checkpoints import files as checkpoint_io
from torchcallbacks.checks import check_output_template, check_path_template
from torchcallbacks.distributed import checkpoint as distributed_checkpoint
from torchcallbacks.distributed import process_group as distributed


class ModelCheckpoint(MonitorCallback):
    """Save the module's weights or a full checkpoint at some frequency (Keras 3 semantics).

    Example::

        import torch
        from torchcallbacks import ModelCheckpoint, Trainer

        model = torch.nn.Linear(3, 1)
        trainer = Trainer(model, optimizer="sgd", loss="mse")
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        checkpoint = ModelCheckpoint("ckpt/{epoch:02d}-{val_loss:.2f}.pt",
                                     save_best_only=True, verbose=1)
        trainer.fit(x, y, epochs=3, validation_split=0.25, callbacks=[checkpoint], verbose=0)
        print(checkpoint.best_model_path, checkpoint.best_score)

    ``filepath`` is formatted with ``epoch`` (1-based), the logs of the epoch (or batch) and,
    for batch saves, ``batch`` (1-based); a placeholder missing from them raises a
    ``KeyError`` naming it and the available keys. Parent folders are made as needed. The
    format follows the extension: ``.h5``/``.hdf5`` is HDF5 (``torchcallbacks[h5]``),
    anything else ``torch.save`` (see ``docs/checkpoint_format.md``). Files are written
    atomically, and only by the main process.

    Args:
        filepath: path template, e.g. ``"ckpt/{epoch:02d}-{val_loss:.2f}.pt"``.
        monitor: the logged quantity compared by ``save_best_only`` and ``save_top_k``.
        verbose: 1 prints Keras's messages when saving (or not saving).
        save_best_only: save only when ``monitor`` improves on the best value so far. A
            monitor missing from the logs warns and does not save.
        save_weights_only: write only ``model.state_dict()``; otherwise a full checkpoint
            (module, optimizer, epoch, callback states, RNG; see `Trainer.checkpoint_state`)
            from which ``fit(resume_from=path)`` continues exactly: the callbacks listed
            after this one finish that epoch (or batch) end when it resumes.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the monitor's name; a name whose
            direction is unknown raises a ``ValueError`` at train begin asking for
            ``mode="min"`` or ``"max"``, as Keras 3 does).
        save_freq: ``"epoch"``, or an int: save every that many training batches, counted
            across epochs (the monitored value then comes from the batch logs).
        initial_value_threshold: the initial ``best``: nothing is saved until ``monitor``
            beats it.
        period: deprecated (``DeprecationWarning``): with ``save_freq="epoch"``, save every
            ``period`` epochs.
        save_top_k: beyond Keras: keep only the ``save_top_k`` best files by ``monitor``
            (each new file that ranks among them is written, the one that drops out is
            deleted). ``None`` keeps every file.

    The template is checked when the callback is made (placeholders must be names with a
    format that suits their value: ``{epoch:02d}``, ``{val_loss:.2f}``), and its folder at
    train begin: a folder that cannot be written raises an ``OSError`` naming it before
    any training. Every file is written in this callback's own hook; if a file recorded as
    ``best_model_path`` or kept by ``save_top_k`` is missing when a run resumes, a warning
    names it and the state forgets it, so the next improvement writes a new best file.

    Attributes: ``best`` (Keras's name; reset in `on_train_begin` to
    ``initial_value_threshold`` and kept in `state_dict`), ``best_score`` (same value),
    ``best_model_path`` (the file holding the best value; the last file written when not
    monitoring), ``kept`` (``[score, path]`` of the files kept by ``save_top_k``, best first).
    """

    missing_message = "Can save best model only with {monitor} available, skipping."

    on_every_process = True  # under torchrun every rank needs it: it saves collectively

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
        period: int | None = None,
        save_top_k: int | None = None,
    ) -> None:
        super().__init__(monitor, mode=mode)
        if save_freq != "epoch" and not _is_positive_int(save_freq):
            raise ValueError(
                f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or "
                "integer values (a positive number of training batches)"
            )
        if period is not None:
            warnings.warn(
                "`period` argument is deprecated. Please use `save_freq` to specify the "
                "frequency in number of batches seen.",
                DeprecationWarning,
                stacklevel=2,
            )
            if not _is_positive_int(period):
                raise ValueError(f"period must be a positive integer (epochs); got {period!r}")
        if save_top_k is not None and not _is_positive_int(save_top_k):
            raise ValueError(
                "save_top_k must be a positive integer (how many of the best files to keep) "
                f"or None to keep every file; got {save_top_k!r}"
            )
        self.filepath = os.fspath(filepath)
        check_path_template(self.filepath)
        if checkpoint_io.is_hdf5_path(self.filepath):
            checkpoint_io.require_h5py()
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        self.period = period
        self.save_top_k = save_top_k
        self._reset()

    def _reset(self) -> None:
        self.best: Any = self.initial_value_threshold
        self.best_model_path: str | None = None
        self.kept: list[list[Any]] = []
        self.epochs_since_last_save = 0

    @property
    def best_score(self) -> Any:
        """The best monitored value so far (``best``); ``None`` before the first save."""
        return self.best

    @property
    def _monitoring(self) -> bool:
        return self.save_best_only or self.save_top_k is not None

    def implements_batch_hooks(self, mode: str) -> bool:
        return mode == "train" and self.save_freq != "epoch"

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Resolve `auto` now, as Keras 3 does at the first save (raising for an unknown name).
        super().on_train_begin(logs)
        self._reset()
        distributed.check_on_rank0(self._check_writable)

    def _check_writable(self) -> None:
        if "{" not in self.filepath:
            _check_not_directory(self.filepath)
        if not distributed_checkpoint.is_sharded_checkpoint(self.filepath):
            check_output_template(self.filepath, "ModelCheckpoint")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.save_freq != "epoch" and self.trainer.global_train_batch % self.save_freq == 0:
            # Batch logs are each process's own running means: rank 0's decide on every rank
            # whether and where to save (a collective under FSDP).
            logs = distributed.from_rank0(dict(logs or {}))
            self._save_model(self.trainer.current_epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq != "epoch":
            return
        if self.period is not None:
            self.epochs_since_last_save += 1
            if self.epochs_since_last_save < self.period:
                return
            self.epochs_since_last_save = 0
        self._save_model(epoch, None, logs or {})

    # -- saving ----------------------------------------------------------------------------
    def _save_model(self, epoch: int, batch: int | None, logs: Mapping[str, Any]) -> None:
        path = self._get_file_path(epoch, batch, logs)
        _check_not_directory(path)
        prefix = f"\nEpoch {epoch + 1}: "
        dropped: list[str] = []
        if not self._monitoring:
            self._print(f"{prefix}saving model to {path}")
        else:
            current = self._get_monitor_value(logs)
            if current is None:
                return
            if isinstance(current, numbers.Real):
                decision = self._rank(current, path, prefix)
                if decision is None:
                    return
                dropped = decision
            else:
                warnings.warn(
                    "Can save best model only when `monitor` is a scalar value. Received: "
                    f"{current}. Falling back to `save_best_only=False`.",
                    stacklevel=2,
                )
                self._print(f"{prefix}saving model to {path}")
        if not self._monitoring:
            self.best_model_path = path

        self._write(path, epoch, logs)
        for old in dropped:  # only once the new file is there
            if self._is_main_process and os.path.exists(old):
                os.remove(old)
        self._print(f"{prefix}finished saving model to {path}")

    def _rank(self, current: float, path: str, prefix: str) -> list[str] | None:
        """Update ``best``/``kept`` for a monitored save; the files to delete, or None when
        this value does not earn a file."""
        best_text = "None" if self.best is None else f"{self.best:.5f}"
        improved = self._is_improvement(current, self.best)
        others = [entry for entry in self.kept if entry[1] != path]
        if self.save_best_only or self.save_top_k is None:
            earns_file = improved
        else:
            threshold = self.initial_value_threshold
            ranks = len(others) < self.save_top_k or self._is_improvement(current, others[-1][0])
            earns_file = ranks and (threshold is None or self._is_improvement(current, threshold))
        if not earns_file:
            self._print(f"{prefix}{self.monitor} did not improve from {best_text}")
            return None
        if improved:
            self._print(
                f"{prefix}{self.monitor} improved from {best_text} to {current:.5f}, "
                f"saving model to {path}"
            )
            self.best = current
            self.best_model_path = path
        else:
            self._print(
                f"{prefix}{self.monitor} did not improve from {best_text} but is among the "
                f"{self.save_top_k} best ({current:.5f}), saving model to {path}"
            )
        if self.save_top_k is None:
            return []
        descending = self.monitor_op is np.greater
        ranked = sorted(
            [*others, [current, path]],
            key=lambda entry: (entry[0] != entry[0], -entry[0] if descending else entry[0]),
        )
        self.kept = ranked[: self.save_top_k]
        return [old for _, old in ranked[self.save_top_k :]]

    def _get_file_path(self, epoch: int, batch: int | None, logs: Mapping[str, Any]) -> str:
        values = dict(logs)
        values["epoch"] = epoch + 1
        if batch is not None and "batch" not in logs:
            values["batch"] = batch + 1
        try:
            return self.filepath.format(**values)
        except KeyError as error:
            missing = error.args[0]
            hint = ""
            if batch is not None and str(missing).startswith("val_"):
                hint = (
                    " Saves every `save_freq` batches see the training batch logs only; "
                    "validation results exist at epoch ends (save_freq='epoch')."
                )
            raise KeyError(
                f'Failed to format this callback filepath: "{self.filepath}". Reason: the key '
                f"`{missing}` is not in the logs. Available keys: {', '.join(sorted(values))}."
                f"{hint}"
            ) from None

    def _write(self, path: str, epoch: int, logs: Mapping[str, Any]) -> None:
        """Weights, or a full checkpoint whose callbacks listed after this one finish this
        epoch (or batch) end when ``fit(resume_from=path)`` resumes from it."""
        # On every rank (rank 0 writes; sharded modules gather or write their shards).
        if self.save_weights_only:
            distributed_checkpoint.save_weights(self.trainer, path)
        else:
            distributed_checkpoint.save_full(
                self.trainer, path, epoch=epoch, logs=logs, saved_by=self
            )

    @property
    def _is_main_process(self) -> bool:
        return getattr(self.trainer, "is_main_process", True)

    def _print(self, message: str) -> None:
        if self.verbose > 0 and self._is_main_process:
            print(message)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_model_path": self.best_model_path,
            "kept": [list(entry) for entry in self.kept],
            "epochs_since_last_save": self.epochs_since_last_save,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state["best"]
        self.best_model_path = state["best_model_path"]
        self.kept = [list(entry) for entry in state["kept"]]
        self.epochs_since_last_save = int(state["epochs_since_last_save"])
        # Rank 0 looks at the files (it writes them) and every rank forgets alike: the next
        # save decision must be the same on every rank.
        missing = distributed.from_rank0(self._missing_files() if self._is_main_process else [])
        if missing:
            self._forget(missing)

    def _missing_files(self) -> list[str]:
        """The recorded files (kept, and the best) that no longer exist."""
        recorded = {entry[1] for entry in self.kept}
        if self._monitoring and self.best_model_path is not None:
            recorded.add(self.best_model_path)
        return sorted(path for path in recorded if not os.path.exists(path))

    def _forget(self, names: list[str]) -> None:
        """Drop recorded files that no longer exist, so that the next improvement writes a
        new best file instead of pointing at one that is gone."""
        self.kept = [entry for entry in self.kept if entry[1] not in names]
        if self.best_model_path in names:
            if self.kept:
                self.best, self.best_model_path = self.kept[0]
            else:
                self.best, self.best_model_path = self.initial_value_threshold, None
        if self._is_main_process:
            warnings.warn(
                f"ModelCheckpoint: the saved state names {', '.join(map(repr, names))}, which "
                f"no longer exist; they are forgotten (best is now {self.best!r}), so the next "
                "improvement is saved again.",
                stacklevel=3,
            )


def _check_not_directory(path: str) -> None:
    # A sharded (FSDP2) full checkpoint is a directory this callback wrote before.
    if os.path.isdir(path) and not distributed_checkpoint.is_sharded_checkpoint(path):
        raise OSError(
            "Please specify a non-directory filepath for ModelCheckpoint. "
            f"Filepath used is an existing directory: {path}"
        )


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
