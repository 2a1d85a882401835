"""`OptunaPruning`: report a monitored value to an Optuna trial and stop the fit when the
study's pruner says so."""

from __future__ import annotations

import warnings
from typing import Any

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.checks import missing_monitor_hint
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.utils import require


class OptunaPruning(Callback):
    """Report ``monitor`` to an Optuna trial after each epoch, and raise
    ``optuna.TrialPruned`` when the trial should be pruned (extra ``torchcallbacks[optuna]``).

    Example::

        import optuna
        import torch
        from torchcallbacks import Trainer
        from torchcallbacks.integrations import OptunaPruning

        x, y = torch.randn(64, 3), torch.randn(64, 1)

        def objective(trial):
            lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
            model = torch.nn.Linear(3, 1)
            trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), loss="mse")
            history = trainer.fit(x, y, epochs=5, validation_split=0.25, verbose=0,
                                  callbacks=[OptunaPruning(trial, monitor="val_loss")])
            return min(history.history["val_loss"])

        study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner())
        study.optimize(objective, n_trials=5)

    As Optuna's Keras and Lightning integrations do: at each epoch end the value is reported
    with ``trial.report(value, step=epoch)`` (0-based), then ``trial.should_prune()`` is asked,
    and ``optuna.TrialPruned`` is raised from that epoch end, ending `fit` (``study.optimize``
    records the trial as pruned). The callbacks listed after this one do not see that epoch
    end: list loggers (MLflowLogger, CSVLogger) before it to keep the last epoch. An epoch
    whose logs lack ``monitor`` (``validation_freq`` > 1, or a misspelt name) reports
    nothing; the first one warns, naming the logged keys.

    Under torchrun give it to every process: rank 0 reports to its trial and decides, every
    process learns the decision at the epoch end and raises ``TrialPruned`` together. The
    other ranks may pass ``trial=None`` (the study usually lives on rank 0 only); Optuna's
    ``TorchDistributedTrial`` is refused, since it runs collectives of its own.

    Args:
        trial: the ``optuna.Trial`` of the objective (None on ranks other than 0).
        monitor: the logged value to report (``"val_loss"``, ``"val_accuracy"``, ...); the
            study's ``direction`` says whether lower or higher is better.
    """

    on_every_process = True  # it stops training: every rank must take the same decision

    def __init__(self, trial: Any, monitor: str = "val_loss") -> None:
        super().__init__()
        self._optuna = require("optuna", "optuna", "OptunaPruning")
        if type(trial).__name__ == "TorchDistributedTrial":
            raise ValueError(
                "OptunaPruning takes the study's own trial on rank 0 (None on the other ranks) "
                "and shares its decision itself; TorchDistributedTrial runs collectives of its "
                "own that the other ranks would not join. Pass the trial it wraps instead."
            )
        self.trial = trial
        self.monitor = monitor
        self._warned_missing = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._warned_missing = False
        distributed.check_on_rank0(self._check_trial)  # on every rank: the same error

    def _check_trial(self) -> None:
        if self.trial is None:
            raise ValueError(
                "OptunaPruning(trial=None): the process of rank 0 needs the Optuna trial to "
                "report to (the objective's `trial` argument)."
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        prune = False
        if distributed.rank() == 0:
            value = (logs or {}).get(self.monitor)
            if value is None and not self._warned_missing:
                self._warned_missing = True
                warnings.warn(
                    f"OptunaPruning: the metric `{self.monitor}` to report to the trial is not "
                    "in the epoch logs, so this epoch reports nothing and cannot prune the "
                    f"trial. Available metrics are: {', '.join(logs or {})}."
                    f"{missing_monitor_hint(self.monitor, logs or {})}",
                    stacklevel=2,
                )
            if value is not None:
                self.trial.report(float(value), step=epoch)
                prune = self.trial.should_prune()
        if distributed.from_rank0(prune):  # every rank: they raise together
            raise self._optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")
