"""The epoch accumulator of what a LightningModule logs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from torchcallbacks.callbacks.base import to_float
from torchcallbacks.distributed import process_group as distributed


class LoggedTracker:
    """Epoch accumulators of what a module logs: the Lightning-style `MetricTracker`.

    ``logs()`` (batch hooks) gives running means, with values logged ``on_step`` at this
    step's value; ``logs(reduce)`` (epoch end) gives epoch means for values logged
    ``on_epoch`` and the last value for the others. Metric objects give ``compute()`` and
    are reset with the tracker. Keys keep the order in which they were first logged.
    """

    def __init__(
        self, device: torch.device, epoch_end: Callable[[Callable[[], dict]], list] | None = None
    ) -> None:
        self.device = device
        self.series: dict[str, _Series] = {}
        # Called when the epoch's logs are read (``logs(reduce)``), with a function that gives
        # the epoch's values so far: what the module logs in its epoch-end hook joins them
        # before they are reduced.
        self.epoch_end = epoch_end

    def reset(self) -> None:
        for series in self.series.values():
            if series.metric is not None:
                series.metric.reset()
        self.series = {}

    def metric_objects(self) -> list[str]:
        """The names of the metric objects logged (their state is their own, not saved)."""
        return [name for name, series in self.series.items() if series.metric is not None]

    def update(self, values: list[tuple[str, Any, bool, bool, int | None]], size: int) -> None:
        for name, value, on_step, on_epoch, batch_size in values:
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = _Series()
            if not isinstance(value, torch.Tensor | float):  # a metric object
                series.metric = value
                continue
            series.step = value if on_step else None
            if on_epoch:
                weight = size if batch_size is None else batch_size
                series.total = series.total + value * weight
                series.weight += weight
                series.epoch_mean = True
            elif not series.epoch_mean:
                series.total, series.weight = value, 1.0

    def logs(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        if reduce is not None and self.epoch_end is not None:
            self.update(self.epoch_end(lambda: self._logs(reduce)), 1)
        return self._logs(reduce)

    def _logs(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> dict:
        names, totals, weights = [], [], []
        for name, series in self.series.items():
            if series.metric is not None:
                continue
            names.append(name)
            if reduce is None and series.step is not None:
                totals.append(series.step)
                weights.append(1.0)
            else:
                totals.append(series.total)
                weights.append(series.weight)
        logs: dict[str, Any] = {}
        if names:
            sums = torch.stack(
                [torch.as_tensor(v, device=self.device).float() for v in [*totals, *weights]]
            )
            if reduce is not None:
                sums = reduce(sums)
            flat = sums.tolist()
            count = len(names)
            logs = {name: flat[i] / flat[count + i] for i, name in enumerate(names)}
        # torchmetrics objects synchronise the processes in compute(): under torchrun they
        # are read only at the end of an epoch, where every rank reads them together.
        if reduce is None and distributed.is_active():
            return logs
        for name, series in self.series.items():
            if series.metric is not None:
                logs[name] = to_float(series.metric.compute())
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            name: {
                "total": s.total.cpu() if isinstance(s.total, torch.Tensor) else s.total,
                "weight": s.weight,
                "epoch_mean": s.epoch_mean,
            }
            for name, s in self.series.items()
            if s.metric is None
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.series = {}
        for name, saved in state.items():
            series = self.series[name] = _Series()
            total = saved["total"]
            series.total = total.to(device) if isinstance(total, torch.Tensor) else total
            series.weight = float(saved["weight"])
            series.epoch_mean = bool(saved["epoch_mean"])


class _Series:
    __slots__ = ("total", "weight", "epoch_mean", "step", "metric")

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.weight = 0.0
        self.epoch_mean = False
        self.step: torch.Tensor | float | None = None
        self.metric: Any = None
