"""Metrics and the objective: loss + metrics per batch, accumulated on the device.

Sum-based values (the loss, metric names, callables) are added into one device tensor per
batch, with no host synchronisation; `MetricTracker.logs` turns them into floats with a
single transfer. Stateful metric objects (Keras-style ``update_state/result/reset_state``
or torchmetrics-style ``update/compute/reset``) keep their own state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from torchcallbacks.data.batches import PAD_VALUE
from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.losses import (
    class_column,
    class_labels_fix,
    label_out_of_range,
    loss_name,
    output_check,
    resolve_loss,
    same_rank_target,
)
from torchcallbacks.weighting import WeightedMetrics, loss_weights_for, ratios, weighted_loss

MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accuracy_values(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Per-sample hits of Keras's accuracy: threshold 0.5 for one column, argmax for several.
    Classes are on the last dimension, as in Keras, unless the class indices fit only torch's
    layout, classes on dimension 1 (``(N, C, H, W)`` scores for ``(N, H, W)`` labels, as
    ``cross_entropy`` takes them: a segmentation model's)."""
    if class_column(y_pred, y_true):  # (N, 1) labels, as Keras squeezes them: never broadcast
        y_true = y_true.squeeze(-1)
    if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
        predicted = (y_pred.reshape(y_true.shape) > 0.5).to(y_true.dtype)
        return predicted == y_true
    if y_true.shape == y_pred.shape:  # one-hot or probability targets
        y_true = y_true.argmax(dim=-1)
    elif y_true.shape != y_pred.shape[:-1] and y_true.shape == y_pred.shape[:1] + y_pred.shape[2:]:
        return y_pred.argmax(dim=1) == y_true
    return y_pred.argmax(dim=-1) == y_true


def absolute_errors(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return (y_pred - y_true.reshape(y_pred.shape)).abs().float()


def squared_errors(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return (y_pred - y_true.reshape(y_pred.shape)).float().square()


def accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Keras's accuracy: threshold 0.5 for one column, argmax for several. Class indices of
    -100 (padding, special tokens: HuggingFace's labels) are left out, as cross-entropy
    leaves them out."""
    hits = accuracy_values(y_pred, y_true)
    # one label per hit (labels as a column (N, 1) too); one-hot targets have more
    if y_true.is_floating_point() or y_true.numel() != hits.numel():
        return hits.mean(dtype=torch.float32)
    # A -100 never equals a predicted class, so its position is already a miss: only the
    # count of kept labels changes.
    kept = (y_true != PAD_VALUE).sum()  # cross-entropy's ignore_index
    return hits.sum(dtype=torch.float32) / kept.clamp(min=1)


def mae(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return absolute_errors(y_pred, y_true).mean()


def mse(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return squared_errors(y_pred, y_true).mean()


def binary_accuracy_values(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Keras's binary_accuracy per sample: each value above 0.5 against its 0/1 target,
    averaged over the last dimension (multi-label outputs)."""
    hits = ((y_pred > 0.5).to(y_true.dtype) == y_true.reshape(y_pred.shape)).float()
    return hits.mean(dim=-1) if hits.ndim > 1 else hits


def categorical_accuracy_values(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Keras's categorical_accuracy per sample: the argmax of one-hot targets."""
    return y_pred.argmax(dim=-1) == y_true.argmax(dim=-1)


def sparse_categorical_accuracy_values(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Keras's sparse_categorical_accuracy per sample: class indices, also as a column."""
    if class_column(y_pred, y_true):
        y_true = y_true.squeeze(-1)
    return y_pred.argmax(dim=-1) == y_true


def _mean_of(values: MetricFn) -> MetricFn:
    def metric(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return values(y_pred, y_true).mean(dtype=torch.float32)

    metric.__name__ = values.__name__.removesuffix("_values")
    return metric


# Keras's names of the same metrics, logged under the name given, as Keras logs them
binary_accuracy = _mean_of(binary_accuracy_values)
categorical_accuracy = _mean_of(categorical_accuracy_values)
sparse_categorical_accuracy = _mean_of(sparse_categorical_accuracy_values)

METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "acc": accuracy,
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "mae": mae,
    "mean_absolute_error": mae,
    "mse": mse,
    "mean_squared_error": mse,
}
# The per-sample values of the built-in metrics, which weighted_metrics weight.
SAMPLEWISE: dict[MetricFn, MetricFn] = {
    accuracy: accuracy_values,
    binary_accuracy: binary_accuracy_values,
    categorical_accuracy: categorical_accuracy_values,
    sparse_categorical_accuracy: sparse_categorical_accuracy_values,
    mae: absolute_errors,
    mse: squared_errors,
}


def _snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: ``MulticlassAUROC`` -> ``multiclass_auroc``,
    ``F1Score`` -> ``f1_score``, ``MeanSquaredError`` -> ``mean_squared_error``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def metric_name(metric: Any) -> str:
    """The logs key: the name given, the object's ``name``, the callable's ``__name__``."""
    if isinstance(metric, str):
        return metric
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name:
        return name
    if hasattr(metric, "__name__"):
        return metric.__name__
    return _snake_case(type(metric).__name__)


class StatefulMetric:
    """Adapter over Keras-style and torchmetrics-style metric objects.

    A result that is a dict (a torchmetrics ``MetricCollection``, a metric with several
    values) is logged one key per entry, as Keras logs a dict result. A collection is
    updated as a whole, once per batch, so that its compute groups share one update.
    """

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.keras_style = hasattr(metric, "update_state")
        self.prefix = ""  # the output's, for a dict result's keys
        self.names: list[str] = []  # the log keys of its result
        # Whether `names` are its log keys for sure: a collection's, or a computed result's
        # (until then, a dict result's keys may replace the metric's own name).
        self.names_known = False

    def name_as(self, prefix: str, name: str) -> list[str]:
        """The log keys of its result for an output's ``prefix``: ``prefix + name``, or a
        collection's own keys (the keys of a dict result replace them once it is computed)."""
        self.prefix = prefix
        self.names = list(self.members()) or [prefix + name]
        self.names_known = bool(self.members())
        return self.names

    def members(self) -> dict[str, Any]:
        """A ``MetricCollection``'s metrics by log key (empty for other metrics)."""
        if not _is_torchmetrics(self.metric, "MetricCollection"):
            return {}
        items = self.metric.items(keep_base=False, copy_state=False)
        return {self.prefix + str(key): metric for key, metric in items}

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
        if self.keras_style:
            self.metric.update_state(y_true, y_pred)
            return
        if isinstance(y_pred, torch.Tensor) and isinstance(y_true, torch.Tensor):
            # torchmetrics wants equal shapes where the loss matched a (N,) target to (N, 1)
            y_true = same_rank_target(y_pred, y_true)
        self.metric.update(y_pred, y_true)

    def result(self) -> Any:
        return self.metric.result() if self.keras_style else self.metric.compute()

    def reset(self) -> None:
        if self.keras_style:
            self.metric.reset_state()
        else:
            self.metric.reset()


def _is_torchmetrics(metric: Any, class_name: str) -> bool:
    """Whether ``metric`` derives from torchmetrics' ``class_name`` (without importing it)."""
    return any(
        cls.__name__ == class_name and cls.__module__.split(".")[0] == "torchmetrics"
        for cls in type(metric).__mro__
    )


def _is_stateful(metric: Any) -> bool:
    keras = all(hasattr(metric, a) for a in ("update_state", "result", "reset_state"))
    torchmetrics = all(hasattr(metric, a) for a in ("update", "compute", "reset"))
    return keras or torchmetrics


def _resolve_metric(metric: Any) -> MetricFn | StatefulMetric:
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(
                f"Unknown metric name {metric!r}. Valid names: {', '.join(sorted(METRICS))}; or "
                "pass a callable (y_pred, y_true) -> tensor, or a metric object."
            )
        return METRICS[metric]
    if _is_torchmetrics(metric, "BaseAggregator"):  # MeanMetric, SumMetric, MaxMetric, ...
        kind = type(metric).__name__
        raise TypeError(
            f"{kind} aggregates the values it is given, update(value, weight): as a metric it "
            "would get update(y_pred, y_true), the targets taken as weights. Pass a callable "
            "(y_pred, y_true) -> tensor instead (its batch values are averaged over the "
            f"epoch), or update the {kind} yourself in a callback and add it to the logs."
        )
    if _is_stateful(metric):
        return StatefulMetric(metric)
    if callable(metric):
        return metric
    raise TypeError(
        f"metric {metric!r} is neither a name, a callable, nor an object with "
        "update_state/result/reset_state or update/compute/reset"
    )


class _Head:
    """The loss and metrics of one model output."""

    def __init__(
        self, prefix: str, loss: Any, metrics: Sequence[Any], weighted: Sequence[Any] = ()
    ) -> None:
        self.prefix = prefix
        self.loss_label = loss_name(loss)
        self.loss_fn = resolve_loss(loss)
        self.check_outputs = output_check(loss, self.loss_label)  # on the first batch only
        self.sum_metrics: list[MetricFn] = []
        self.sum_names: list[str] = []
        self.stateful: list[tuple[str, StatefulMetric]] = []
        self.metric_names: list[str] = []  # every metric, in the order given
        for metric in metrics:
            resolved = _resolve_metric(metric)
            name = prefix + metric_name(metric)
            if isinstance(resolved, StatefulMetric):
                self.metric_names += resolved.name_as(prefix, metric_name(metric))
                self.stateful.append((name, resolved))
            else:
                self.metric_names.append(name)
                self.sum_metrics.append(resolved)
                self.sum_names.append(name)
        self.weighted = WeightedMetrics(prefix, [_weighted(m) for m in weighted], self.metric_names)

    def loss(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.check_outputs is not None:
            self.check_outputs(y_pred)
            self.check_outputs = None
        try:
            if weights is None:
                value = self.loss_fn(y_pred, y_true)
            else:
                value = weighted_loss(self.loss_fn, y_pred, y_true, weights)
        except IndexError as error:  # torch's "Target 5 is out of bounds." (CPU)
            message = label_out_of_range(self.loss_label, y_pred, y_true)
            if message is None:
                raise
            raise ValueError(message) from error
        except RuntimeError as error:
            fix = class_labels_fix(y_pred, y_true)
            raise ValueError(
                f"loss '{self.loss_label}' failed on model output of shape "
                f"{tuple(getattr(y_pred, 'shape', ()))} and target of shape "
                f"{tuple(getattr(y_true, 'shape', ()))}: {error}" + (f". {fix}" if fix else "")
            ) from error
        if value.ndim != 0:
            raise ValueError(
                f"loss '{self.loss_label}' returned a tensor of shape {tuple(value.shape)}; a "
                "loss must return a scalar (reduce it, e.g. with .mean())."
            )
        return value


def _weighted(metric: Any) -> tuple[str, Any, bool]:
    """A ``weighted_metrics`` entry: its name, its per-sample form, whether it is an object."""
    resolved = _resolve_metric(metric)
    if isinstance(resolved, StatefulMetric):
        return metric_name(metric), resolved, True
    return metric_name(metric), SAMPLEWISE.get(resolved, resolved), False


class Objective:
    """Computes the loss (with grad) and the sum-metric values of a batch.

    Single output: ``loss`` and ``metrics`` as given. Several outputs: ``loss`` and
    ``metrics`` may be lists (per output, in order) or dicts (per output name); logs then
    carry ``loss`` (the sum), ``<name>_loss`` and ``<name>_<metric>`` as Keras does.
    ``loss_weights`` (Keras's): the loss is the weighted sum, ``<name>_loss`` unweighted.
    """

    def __init__(
        self, loss: Any, metrics: Any, weighted_metrics: Any = None, loss_weights: Any = None
    ) -> None:
        self.loss_spec = loss
        self.metric_spec = metrics
        self.weighted_spec = weighted_metrics
        self.weights_spec = loss_weights
        self.loss_weights: list[float] | None = None  # one per loss, in the losses' order
        if loss_weights is not None:
            if loss is None:
                raise ValueError(
                    "loss_weights weights the losses given in loss=, and this Trainer has no "
                    "loss= (the module computes its own loss): weight the parts of the loss "
                    "inside the module, or pass loss= with one loss per output."
                )
            several = isinstance(loss, list | tuple | dict)
            keyed = isinstance(loss, dict)  # (a list's output names are known at build)
            if not several or keyed:
                names = list(loss) if keyed else None
                self.loss_weights = loss_weights_for(loss_weights, names, keyed)
        self.ratios: list[tuple[str, str, str]] = []  # weighted metrics: (name, sums' keys)
        self.heads: list[_Head] | dict[str, _Head] | None = None
        self.names: list[str] = []  # of the summed values, in the accumulator's order
        self.stateful: list[tuple[str, StatefulMetric]] = []
        self.log_names: list[str] = []  # the losses, then the metrics in the order given
        if loss is not None and not isinstance(loss, list | tuple | dict):
            self._set_heads(_Head("", loss, *self._metrics_for(None, 0)), None)

    @property
    def ready(self) -> bool:
        return self.heads is not None

    def _metrics_for(self, key: str | None, index: int) -> tuple[list[Any], list[Any]]:
        """The metrics and weighted metrics of one output."""
        return (
            self._spec_for(self.metric_spec, key, index),
            self._spec_for(self.weighted_spec, key, index),
        )

    def _spec_for(self, spec: Any, key: str | None, index: int) -> list[Any]:
        if spec is None:
            return []
        if isinstance(spec, dict):
            return list(_as_list(spec.get(key, [])))
        if isinstance(self.loss_spec, list | tuple) and spec and isinstance(spec[0], list | tuple):
            return list(spec[index])
        return list(_as_list(spec))

    def _set_heads(self, single: _Head | None, several: list[_Head] | dict[str, _Head] | None):
        self.heads = single if single is not None else several  # type: ignore[assignment]
        heads = [single] if single is not None else _values(several)
        if single is None:
            self.names = ["loss"] + [h.prefix + "loss" for h in heads]
        else:
            self.names = ["loss"]
        self.log_names = list(self.names)
        for head in heads:
            self.names += head.sum_names
            self.stateful += head.stateful
            self.log_names += head.metric_names
        for head in heads:
            self.names += head.weighted.keys
            self.stateful += head.weighted.stateful
            self.log_names += head.weighted.names
            self.ratios += head.weighted.ratios
        # A metric object's own name may give way to the keys of a dict result (two
        # ClasswiseWrappers) at its first compute: only final names are checked for repeats.
        provisional = {name for name, metric in self.stateful if not metric.names_known}
        _check_log_names(self.log_names, provisional)

    @property
    def names_known(self) -> bool:
        """Whether `log_names` are the keys the logs will hold: not while a metric object
        that may give a dict result (whose keys replace its name) has not yet given one."""
        return all(metric.names_known for _, metric in self.stateful)

    def rename(self, expected: list[str], keys: list[str]) -> None:
        """Log a dict result's ``keys`` where its ``expected`` keys were (at its first
        compute: a collection's members may give several values each)."""
        start = self.log_names.index(expected[0])
        self.log_names[start : start + len(expected)] = keys

    def build(self, outputs: Any) -> None:
        """Bind per-output losses once the output structure is known (first batch)."""
        if self.loss_spec is None:
            raise ValueError(
                "No loss given: pass loss= to Trainer (a Keras name such as 'mse', an "
                "nn.Module, or a callable (y_pred, y_true) -> scalar tensor)."
            )
        spec = self.loss_spec
        if isinstance(spec, dict):
            if not isinstance(outputs, Mapping):
                raise ValueError(
                    "loss is a dict (per output name) but the model does not return a dict; "
                    "pass a list of losses (per output, in order) instead."
                )
            unknown = set(spec) - set(outputs)
            if unknown:
                raise ValueError(
                    f"loss names outputs {sorted(unknown)} that the model does not return; "
                    f"its outputs are {sorted(outputs)}."
                )
            heads = {k: _Head(f"{k}_", spec[k], *self._metrics_for(k, 0)) for k in spec}
        else:
            names = list(outputs) if isinstance(outputs, Mapping) else None
            count = len(outputs) if isinstance(outputs, list | tuple | Mapping) else 1
            if len(spec) != count:
                raise ValueError(
                    f"loss is a list of {len(spec)} losses but the model returns {count} "
                    "output(s); give one loss per output."
                )
            heads = [
                _Head(
                    f"{names[i] if names else f'output_{i + 1}'}_",
                    spec[i],
                    *self._metrics_for(names[i] if names else None, i),
                )
                for i in range(count)
            ]
        names = [head.prefix[:-1] for head in _values(heads)]
        self.loss_weights = loss_weights_for(self.weights_spec, names, isinstance(spec, dict))
        self._set_heads(None, heads)

    def __call__(
        self, outputs: Any, targets: Any, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Total loss (differentiable) and the detached values for the sum accumulator.
        ``weights``: the batch's sample weights (one tensor, for every output)."""
        heads = self.heads
        if isinstance(heads, _Head):
            loss = heads.loss(outputs, targets, weights)
            if self.loss_weights is not None:
                loss = loss * self.loss_weights[0]
            values = [loss.detach()]
            for fn in heads.sum_metrics:
                values.append(_batch_mean(fn(outputs, targets)))
            if heads.weighted.functions:
                values += heads.weighted.values(outputs, targets, weights)
            return loss, values
        pairs = _pairs(heads, outputs, targets)
        losses = [head.loss(y_pred, y_true, weights) for head, y_pred, y_true in pairs]
        if self.loss_weights is not None:  # the per-output losses are logged unweighted
            total = sum(loss * weight for loss, weight in zip(losses, self.loss_weights))
        else:
            total = torch.stack(losses).sum() if len(losses) > 1 else losses[0]
        values = [total.detach()] + [loss.detach() for loss in losses]
        for head, y_pred, y_true in pairs:
            for fn in head.sum_metrics:
                values.append(_batch_mean(fn(y_pred, y_true)))
        for head, y_pred, y_true in pairs:
            values += head.weighted.values(y_pred, y_true, weights)
        return total, values

    def update_stateful(
        self, outputs: Any, targets: Any, weights: torch.Tensor | None = None
    ) -> None:
        heads = self.heads
        pairs = [(heads, outputs, targets)] if isinstance(heads, _Head) else None
        for head, y_pred, y_true in pairs or _pairs(heads, outputs, targets):
            for _, metric in head.stateful:
                metric.update(y_pred.detach(), y_true)
            head.weighted.update_stateful(y_pred.detach(), y_true, weights)


def _batch_mean(value: Any) -> torch.Tensor:
    """A metric's batch mean; per-sample values (as Keras metric functions return) are averaged."""
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(float(value))
    if value.ndim:
        value = value.mean(dtype=torch.float32)
    return value.detach() if value.requires_grad else value


def _as_list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else [value]


def _values(heads: Any) -> list[_Head]:
    return list(heads.values()) if isinstance(heads, dict) else list(heads)


def _pairs(heads: Any, outputs: Any, targets: Any) -> list[tuple[_Head, Any, Any]]:
    if isinstance(heads, dict):
        try:
            return [(head, outputs[k], targets[k]) for k, head in heads.items()]
        except (TypeError, KeyError, IndexError):
            _check_named_targets(list(heads), targets)
            raise
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(targets, Mapping):
        targets = list(targets.values())
    return list(zip(heads, outputs, targets))


def _check_named_targets(names: list[str], targets: Any) -> None:
    """Raise a ValueError naming the outputs when the targets of losses given by output
    name are not a dict holding those names."""
    if isinstance(targets, Mapping):
        missing = [name for name in names if name not in targets]
        if not missing:
            return
        problem = f"a dict without {missing} (its keys: {list(targets)})"
    else:
        problem = f"a {type(targets).__name__}"
    example = ", ".join(f"{name!r}: ..." for name in names)
    raise ValueError(
        f"loss is a dict by output name and the model returns the outputs {names}, but the "
        f"targets are {problem}. Give y as a dict with those keys (y={{{example}}}), or give "
        "loss as a list, one loss per output in the model's order, to match targets by "
        "position."
    )


def _check_log_names(names: list[str], provisional: set[str]) -> None:
    """Refuse metric names that one log key cannot hold: a name given twice (one value would
    replace the other; ``provisional`` names are left out), or one starting with ``val_``,
    which validation's copies use (a torchmetrics collection cloned with ``prefix="val_"``
    would log training values there)."""
    repeated = sorted({n for n in names if names.count(n) > 1 and n not in provisional})
    if repeated:
        raise ValueError(
            f"Several metrics are logged as {repeated}: one value would replace the other. "
            "Give them distinct names (a metric object's `name`, a MetricCollection's keys "
            "or its prefix/postfix)."
        )
    validation = [name for name in names if name.startswith("val_")]
    if validation:
        raise ValueError(
            f"Metric name(s) {validation} start with 'val_', the prefix of the validation "
            "copies: they would hold training values. Pass each metric once, named without "
            "'val_' (e.g. one MetricCollection with no 'val_' prefix): validation logs a "
            "'val_' copy of every metric itself."
        )


class MetricTracker:
    """Running sums of the objective's values for one epoch (or one evaluation)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.sums: torch.Tensor | None = None
        self.count = 0

    def reset(self) -> None:
        self.sums = None
        self.count = 0
        for _, metric in self.objective.stateful:
            metric.reset()

    def metric_objects(self) -> list[str]:
        """The names of the metric objects (their state is their own, not saved)."""
        return [name for name, _ in self.objective.stateful]

    def update(self, values: list[torch.Tensor], batch_size: int) -> None:
        batch = torch.stack(values) if len(values) > 1 else values[0].reshape(1)
        if self.sums is None:
            self.sums = batch.float() * batch_size
        else:
            self.sums.add_(batch, alpha=batch_size)
        self.count += batch_size

    def logs(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        """Running means as floats (one device→host transfer). ``reduce`` sums across ranks."""
        if self.sums is None:
            return {}
        sums, count = self.sums, self.count
        if reduce is not None:
            reduced = reduce(torch.cat([sums, sums.new_tensor([count])]))
            sums, count = reduced[:-1], reduced[-1]
        # Divide on the device, in float32, as a hand-written loop does: identical logs.
        logs = dict(zip(self.objective.names, (sums / count).tolist()))
        if self.objective.ratios:
            ratios(logs, self.objective.ratios)
        if not self.objective.stateful:
            return logs
        # torchmetrics objects synchronise the processes in compute(): under DDP they are
        # read only where every rank reads them together, at the end of an epoch.
        in_progress = reduce is None and distributed.is_active()
        for name, metric in self.objective.stateful:
            if in_progress and not metric.keras_style:
                continue
            result = metric.result()
            if isinstance(result, Mapping):  # one key per entry
                entries = {metric.prefix + str(k): _plain(v) for k, v in result.items()}
                if list(entries) != metric.names:
                    self.objective.rename(metric.names or [name], list(entries))
                    metric.names = list(entries)
                logs.update(entries)
                metric.names_known = True
            else:
                logs[name] = _plain(result)
                metric.names_known = True
        return {name: logs[name] for name in self.objective.log_names if name in logs}

    def state_dict(self) -> dict[str, Any]:
        sums = None if self.sums is None else self.sums.detach().cpu().clone()
        return {"sums": sums, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.sums = None if state["sums"] is None else state["sums"].to(device)
        self.count = int(state["count"])


def _plain(result: Any) -> Any:
    """A metric's result in the logs: a float when it is one number."""
    return float(result) if _is_scalar(result) else result


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, int | float) or (
        hasattr(value, "item") and getattr(value, "size", 1) == 1
    )
