"""The user's ``lightning.pytorch.callbacks.Callback`` subclasses, and Lightning's built-in
callbacks, which are refused with the name of this library's equivalent.

A user's Lightning callback in ``callbacks=[...]`` gets its hooks with ``(trainer,
pl_module, ...)`` as Lightning passes them (``trainer`` is the module's ``self.trainer``),
before the module's own hook (`torchcallbacks.models.lightning.calls.HookCalls`), and its
``state_dict`` is saved in full checkpoints under its ``state_key``. Lightning's own
callbacks work through lightning.Trainer's internals (its loggers, checkpoint connector,
loops), which this Trainer does not have.
"""

from __future__ import annotations

from typing import Any

_INSTEAD = {
    "EarlyStopping": "torchcallbacks.EarlyStopping",
    "ModelCheckpoint": "torchcallbacks.ModelCheckpoint (and BackupAndRestore to resume)",
    "Checkpoint": "torchcallbacks.ModelCheckpoint",
    "OnExceptionCheckpoint": "torchcallbacks.BackupAndRestore",
    "LearningRateMonitor": "nothing: 'lr' is in the epoch logs when configure_optimizers "
    "returns a scheduler (LearningRateScheduler and ReduceLROnPlateau log it too)",
    "ProgressBar": "fit(verbose=1) (torchcallbacks.ProgbarLogger)",
    "TQDMProgressBar": "fit(verbose=1) (torchcallbacks.ProgbarLogger)",
    "RichProgressBar": "fit(verbose=1) (torchcallbacks.ProgbarLogger)",
    "ModelSummary": "trainer.summary()",
    "RichModelSummary": "trainer.summary()",
    "LambdaCallback": "torchcallbacks.LambdaCallback",
    "StochasticWeightAveraging": "Trainer(ema_momentum=...) with torchcallbacks.SwapEMAWeights",
    "WeightAveraging": "Trainer(ema_momentum=...) with torchcallbacks.SwapEMAWeights",
    "EMAWeightAveraging": "Trainer(ema_momentum=...) with torchcallbacks.SwapEMAWeights",
    "GradientAccumulationScheduler": "Trainer(accumulate_grad_batches=k)",
    "BasePredictionWriter": "trainer.predict(...) returns the outputs; write them yourself",
}
_NONE = "a torchcallbacks.Callback of your own (or a lightning Callback subclass of your own)"


def check_lightning_callback(callback: Any) -> None:
    """Raise for a callback built on one of Lightning's own callbacks (its EarlyStopping,
    ModelCheckpoint, ...), naming what to use instead."""
    for cls in type(callback).__mro__:
        package = cls.__module__.split(".")[0]
        if package not in ("lightning", "pytorch_lightning") or cls.__name__ == "Callback":
            continue
        instead = _INSTEAD.get(cls.__name__, _NONE)
        raise ValueError(
            f"{type(callback).__name__} is built on Lightning's {cls.__name__} callback, which "
            "works through lightning.Trainer's internals: torchcallbacks' Trainer cannot run "
            f"it. Use {instead} instead."
        )
