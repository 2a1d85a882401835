"""The monitor logic shared by EarlyStopping, ReduceLROnPlateau and ModelCheckpoint.

Keras 3 semantics, with this project's ``auto`` rule:

- ``mode`` is ``"min"``, ``"max"`` or ``"auto"``; any other value warns
  ``"<ClassName> mode '<mode>' is unknown, fallback to auto mode."`` and becomes ``"auto"``.
- ``"auto"`` is resolved in `on_train_begin` (not lazily at the first epoch end): a metric
  object of the trainer with that name that declares its direction (torchmetrics'
  ``higher_is_better``, or ``direction``/``_direction`` = ``"up"``/``"down"``/``"max"``/
  ``"min"``) decides; otherwise the name with one leading ``val_`` removed is matched: ``max``
  when it contains ``acc``, ``auc``, ``auroc``, ``precision``, ``recall``, ``f1``, ``fmeasure``,
  ``iou`` or ``dice`` (checked first), ``min`` when it contains ``loss``, ``error``, ``mae``,
  ``mse``, ``rmse``, ``crossentropy`` or ``perplexity``; any other name raises a
  ``ValueError``.
- ``min_delta`` is kept as ``abs(min_delta)`` and made negative once the mode is ``min``.
- An improvement is strict: ``value - min_delta < reference`` (min) or ``> reference`` (max),
  compared in float32 as Keras's backend ops do; a ``None`` reference is always beaten, and NaN
  never beats a number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.checks import did_you_mean, missing_monitor_hint, unknown_monitor

_MAX_NAMES = ("acc", "auc", "auroc", "precision", "recall", "f1", "fmeasure", "iou", "dice")
_MIN_NAMES = ("loss", "error", "mae", "mse", "rmse", "crossentropy", "perplexity")
_DIRECTIONS = {"up": "max", "max": "max", "down": "min", "min": "min"}


def monitored_value(
    logs: Mapping[str, Any] | None, monitor: str, message: str, warned: bool
) -> tuple[Any, bool]:
    """``(logs[monitor] or None, warned)``; warns ``message`` once when the key is missing,
    followed by the closest logged names ("Did you mean 'val_accuracy'?").

    ``message`` may use ``{monitor}`` and ``{available}`` (the logs' keys joined by ``,``).
    ``warned`` says whether this fit already warned; the new flag is returned.
    """
    logs = logs or {}
    value = logs.get(monitor)
    if value is None and not warned:
        available = ",".join(logs)
        text = message.format(monitor=monitor, available=available)
        hint = missing_monitor_hint(monitor, logs)
        if hint and not text.endswith("."):
            text += "."
        warnings.warn(text + hint, stacklevel=3)
        warned = True
    return value, warned


class MonitorCallback(Callback):
    """Base class of the callbacks that watch one logged quantity (not used directly).

    Subclasses call ``super().on_train_begin(logs)`` (which resolves `monitor_op`), read the
    value with `_get_monitor_value`, and compare with `_is_improvement`::

        class BestLoss(MonitorCallback):
            def __init__(self):
                super().__init__("loss", mode="min")

            def on_train_begin(self, logs=None):
                super().on_train_begin(logs)
                self.best = None

            def on_epoch_end(self, epoch, logs=None):
                value = self._get_monitor_value(logs)
                if value is not None and self._is_improvement(value, self.best):
                    self.best = value

    Attributes: ``monitor``, ``mode``, ``min_delta`` (signed after resolution), ``baseline``,
    ``monitor_op`` (``numpy.less``/``numpy.greater``; ``None`` until `on_train_begin`).
    """

    #: Warning when the monitored key is missing; ``{monitor}`` and ``{available}`` filled in.
    missing_message = (
        "The monitored metric `{monitor}` is not available. Available metrics are: {available}"
    )

    def __init__(
        self,
        monitor: str,
        mode: str = "auto",
        min_delta: float = 0.0,
        baseline: float | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(
                f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.",
                stacklevel=3,
            )
            mode = "auto"
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(min_delta)
        self.baseline = baseline
        self.monitor_op: Callable[[Any, Any], Any] | None = None
        self._warned_missing = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._warned_missing = False
        self._resolve_mode()

    def _resolve_mode(self) -> str:
        """Set `monitor_op` and the sign of `min_delta`; return ``"min"`` or ``"max"``."""
        mode = self.mode if self.mode != "auto" else self._infer_mode()
        self.monitor_op = np.less if mode == "min" else np.greater
        self.min_delta = -abs(self.min_delta) if mode == "min" else abs(self.min_delta)
        return mode

    def _infer_mode(self) -> str:
        name = self.monitor.removeprefix("val_")
        declared = self._declared_direction(name)
        if declared is not None:
            return declared
        lowered = name.lower()
        if any(part in lowered for part in _MAX_NAMES):
            return "max"
        if any(part in lowered for part in _MIN_NAMES):
            return "min"
        owner = type(self).__name__
        unknown, close = unknown_monitor(self.trainer, self.monitor)
        if close:  # a misspelling: its fix is the name, not a mode
            raise ValueError(
                f"{owner} callback received monitor={self.monitor}, which looks misspelled: "
                f"{unknown}{did_you_mean(close)} Pass the logged name (its mode is then "
                "known)."
            )
        if unknown:
            unknown = f" Note that {unknown} Unless a callback logs it, check the name."
        raise ValueError(
            f"{owner} callback received monitor={self.monitor}, but torchcallbacks "
            "cannot automatically determine whether that metric should be maximized or "
            "minimized. Pass `mode='max'` in order to monitor based on the highest metric "
            "value, or pass `mode='min'` in order to use the lowest value "
            f'(e.g. {owner}(monitor="{self.monitor}", mode="min")).{unknown}'
        )

    def _declared_direction(self, name: str) -> str | None:
        """The direction a metric object of the trainer logged as ``name`` declares, if any."""
        objective = getattr(self.trainer, "objective", None)
        for key, adapter in getattr(objective, "stateful", ()):
            metric = adapter.metric if key == name else adapter.members().get(name)
            if metric is None:  # (a MetricCollection's members are logged by their keys)
                continue
            higher = getattr(metric, "higher_is_better", None)
            if isinstance(higher, bool):
                return "max" if higher else "min"
            for attribute in ("direction", "_direction"):
                direction = _DIRECTIONS.get(str(getattr(metric, attribute, "")).lower())
                if direction is not None:
                    return direction
        return None

    def _is_improvement(self, value: Any, reference: Any) -> bool:
        """Whether ``value`` beats ``reference`` by more than ``min_delta`` (strictly)."""
        if reference is None:
            return True
        if self.monitor_op is None:
            self._resolve_mode()
        with np.errstate(over="ignore", invalid="ignore"):
            # Keras compares with backend ops, which cast Python floats to float32.
            candidate = np.float32(value - self.min_delta)
            return bool(self.monitor_op(candidate, np.float32(reference)))

    def _get_monitor_value(self, logs: Mapping[str, Any] | None) -> Any:
        """``logs[monitor]``, or ``None`` with a warning (once per fit) naming the keys."""
        value, self._warned_missing = monitored_value(
            logs, self.monitor, self.missing_message, self._warned_missing
        )
        return value
