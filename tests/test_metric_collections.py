"""torchmetrics collections (and metrics with several results) are logged one key per metric,
as Keras logs a dict result, with the values torchmetrics itself computes."""

import io
import re
import warnings
from contextlib import redirect_stdout

import numpy
import pytest
import torch

torchmetrics = pytest.importorskip("torchmetrics")
from torchmetrics import MetricCollection  # noqa: E402
from torchmetrics.classification import (  # noqa: E402
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper  # noqa: E402

from torchcallbacks import EarlyStopping, Trainer  # noqa: E402


def _data(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # three classes


def _trainer(metrics):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), "cross_entropy", metrics)


def _own(collection, outputs, targets):
    """torchmetrics' own computation: a fresh copy of the collection over all the outputs."""
    fresh = collection.clone()
    fresh.reset()
    fresh.update(outputs, targets)
    return {key: float(value) for key, value in fresh.compute().items()}


class TrainingOutputs:
    """Forward hook: the module's outputs in training mode, batch by batch."""

    def __init__(self, module):
        self.outputs = []
        module.register_forward_hook(self)

    def __call__(self, module, args, output):
        if module.training:
            self.outputs.append(output.detach().clone())


def test_a_collection_is_logged_under_its_keys_in_fit_and_evaluate():
    collection = MetricCollection({"acc": MulticlassAccuracy(3), "f1": MulticlassF1Score(3)})
    trainer = _trainer([collection])
    recorder = TrainingOutputs(trainer.model)
    x, y = _data()
    x_val, y_val = _data(32, seed=1)
    history = trainer.fit(
        x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, validation_data=(x_val, y_val)
    )
    assert sorted(history.history) == ["acc", "f1", "loss", "val_acc", "val_f1", "val_loss"]
    # the last epoch's training values: over that epoch's outputs, as the weights changed
    last_epoch = torch.cat(recorder.outputs[-4:])
    expected = _own(collection, last_epoch, y)
    assert history.history["acc"][-1] == pytest.approx(expected["acc"], abs=1e-6)
    assert history.history["f1"][-1] == pytest.approx(expected["f1"], abs=1e-6)
    # validation after the last epoch: the final weights on the validation data
    expected = _own(collection, trainer.predict(x_val, verbose=0), y_val)
    assert history.history["val_acc"][-1] == pytest.approx(expected["acc"], abs=1e-6)
    assert history.history["val_f1"][-1] == pytest.approx(expected["f1"], abs=1e-6)

    results = trainer.evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert list(results) == ["loss", "acc", "f1"]
    assert results["acc"] == pytest.approx(expected["acc"], abs=1e-6)
    assert trainer.evaluate(x_val, y_val, verbose=0) == list(results.values())


def test_keys_keep_the_order_metrics_were_given_in_and_a_prefix():
    collection = MetricCollection([MulticlassAccuracy(3), MulticlassF1Score(3)], prefix="cls_")

    def top_logit(y_pred, y_true):
        return y_pred.max(-1).values

    trainer = _trainer(["accuracy", collection, top_logit])
    x, y = _data()
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=_data(32, seed=1))
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    assert list(results) == [
        "loss", "accuracy", "cls_MulticlassAccuracy", "cls_MulticlassF1Score", "top_logit",
    ]  # fmt: skip
    expected = _own(collection, trainer.predict(x, verbose=0), y)
    assert results["cls_MulticlassF1Score"] == pytest.approx(
        expected["cls_MulticlassF1Score"], abs=1e-6
    )


def test_a_collection_is_updated_once_per_batch_for_each_compute_group():
    """Precision, recall and F1 share their state: MetricCollection updates one of them per
    batch. The Trainer updates the collection as a whole, so it keeps that saving."""
    updates = []

    def counting(metric):
        update = metric.update

        def counted(*args, **kwargs):
            updates.append(type(metric).__name__)
            return update(*args, **kwargs)

        metric.update = counted
        return metric

    def collection():
        return MetricCollection(
            {
                "precision": counting(MulticlassPrecision(3)),
                "recall": counting(MulticlassRecall(3)),
                "f1": counting(MulticlassF1Score(3)),
            }
        )

    x, y = _data()
    ours = collection()
    trainer = _trainer([ours])
    trainer.evaluate(x, y, batch_size=16, verbose=0)
    ours_count, updates[:] = len(updates), []
    theirs = collection()  # the same batches fed to torchmetrics directly
    with torch.no_grad():
        for start in range(0, 64, 16):
            theirs.update(trainer.model(x[start : start + 16]), y[start : start + 16])
    assert ours.compute_groups == theirs.compute_groups
    assert len(ours.compute_groups) == 1
    assert ours_count == len(updates) < 3 * 4  # fewer updates than one per metric and batch


def test_a_metric_with_several_results_is_logged_one_key_each():
    """A result that is a dict (ClasswiseWrapper, or a collection holding one) is logged one
    key per entry, in the place the metric was given, as Keras logs a dict result."""
    classwise = ClasswiseWrapper(MulticlassAccuracy(3, average=None), labels=["a", "b", "c"])
    trainer = _trainer([classwise, "accuracy"])
    x, y = _data()
    history = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_split=0.25)
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    keys = ["multiclassaccuracy_a", "multiclassaccuracy_b", "multiclassaccuracy_c"]
    assert list(results) == ["loss", *keys, "accuracy"]
    assert {f"val_{key}" for key in keys} <= set(history.history)
    assert trainer.evaluate(x, y, verbose=0) == list(results.values())


def test_the_progress_bar_shows_each_metric_of_a_collection():
    collection = MetricCollection({"acc": MulticlassAccuracy(3), "f1": MulticlassF1Score(3)})
    trainer = _trainer([collection])
    x, y = _data()
    printed = io.StringIO()
    with redirect_stdout(printed):
        trainer.fit(x, y, batch_size=16, epochs=1, verbose=1, validation_data=_data(32, seed=1))
    line = printed.getvalue().splitlines()[-1]
    for key in ("acc", "f1", "val_acc", "val_f1"):
        assert f" {key}: 0." in line or f" {key}: 1." in line, line
    assert "metric_collection" not in printed.getvalue()


def test_monitoring_a_collection_member_uses_its_declared_direction():
    """``score`` says nothing by its name; the member's ``higher_is_better`` decides."""
    collection = MetricCollection({"score": MulticlassAccuracy(3)})
    trainer = _trainer([collection])
    stopping = EarlyStopping(monitor="val_score", patience=5)
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the monitor is found in the logs
        trainer.fit(
            x, y, epochs=1, verbose=0, callbacks=[stopping], validation_data=_data(32, seed=1)
        )
    assert stopping.monitor_op is numpy.greater


def test_monitoring_a_key_of_a_dict_result_is_not_called_a_misspelling():
    """A dict result's keys replace the metric's name only at its first compute: before it,
    mode='auto' asks for the mode without calling the logged key unknown or suggesting the
    metric's own name, which is never logged."""
    from torchmetrics.classification import MulticlassSpecificity

    def classwise():
        specificity = MulticlassSpecificity(3, average=None)
        return ClasswiseWrapper(specificity, labels=["a", "b", "c"], prefix="classwise_")

    x, y = _data()
    stopping = EarlyStopping(monitor="val_classwise_a", patience=5)
    with pytest.raises(ValueError, match="Pass `mode='max'`") as raised:
        _trainer([classwise()]).fit(x, y, epochs=1, verbose=0, callbacks=[stopping],
                                    validation_split=0.25)  # fmt: skip
    assert "misspelled" not in str(raised.value)
    assert "not a metric this fit logs" not in str(raised.value)

    stopping = EarlyStopping(monitor="val_classwise_a", mode="max", patience=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the key is in the logs
        history = _trainer([classwise()]).fit(
            x, y, epochs=1, verbose=0, callbacks=[stopping], validation_split=0.25
        )
    assert "val_classwise_a" in history.history


def test_a_one_dimensional_target_goes_with_a_one_unit_output_as_for_the_loss():
    # a pandas Series or NumPy vector target for an (N, 1) regression output, as in Keras
    from torchmetrics.regression import MeanAbsoluteError, R2Score

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator)
    y = x.sum(1)  # shape (32,)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    collection = MetricCollection([R2Score(), MeanAbsoluteError()])
    trainer = Trainer(model, "adam", "mse", metrics=[collection])
    result = trainer.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    with torch.no_grad():
        expected = _own(collection, model(x), y[:, None])
    assert result == pytest.approx({"loss": result["loss"], **expected})


@pytest.mark.parametrize(
    "metrics, named",
    [
        ("train_and_val_clones", "['val_acc'] start with 'val_'"),
        ("same_key_twice", "logged as ['acc']"),
    ],
)
def test_metric_names_one_log_key_cannot_hold_are_refused(metrics, named):
    collection = MetricCollection({"acc": MulticlassAccuracy(num_classes=3)})
    given = {
        # Lightning's habit: one clone per stage; validation's would log training values
        "train_and_val_clones": [
            collection.clone(prefix="train_"),
            collection.clone(prefix="val_"),
        ],
        "same_key_twice": ["acc", collection],
    }[metrics]
    with pytest.raises(ValueError, match=re.escape(named)):
        _trainer(given)


def test_two_metrics_named_by_their_dict_results_are_not_taken_for_one():
    # both are called "classwise_wrapper" until their first results name their keys
    x, y = _data()
    wrappers = [
        ClasswiseWrapper(MulticlassPrecision(num_classes=3, average=None)),
        ClasswiseWrapper(MulticlassRecall(num_classes=3, average=None)),
    ]
    result = _trainer(wrappers).evaluate(x, y, verbose=0, return_dict=True)
    assert sorted(result) == ["loss"] + [
        f"multiclass{kind}_{i}" for kind in ("precision", "recall") for i in range(3)
    ]


def test_a_mid_epoch_resume_says_that_metric_objects_restart_empty(tmp_path):
    from torchcallbacks import BackupAndRestore, Callback

    class RaiseAtBatch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.trainer.current_epoch == 1 and batch == 2:
                raise RuntimeError("interrupted")

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))

    def run(*extra):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), "cross_entropy",
                          metrics=["accuracy", MulticlassAccuracy(3)])  # fmt: skip
        backup = BackupAndRestore(tmp_path / "backup", save_freq=2)
        return trainer.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[backup, *extra])

    with pytest.raises(RuntimeError, match="interrupted"):
        run(RaiseAtBatch())
    with pytest.warns(UserWarning, match=r"inside epoch 2: the metric objects "
                      r"\['multiclass_accuracy'\] restart empty.*first 2 batches"):  # fmt: skip
        history = run()
    assert len(history.history["loss"]) == 2  # the run went on


def test_an_aggregator_given_as_a_metric_is_refused_naming_the_fix():
    from torchmetrics.aggregation import MeanMetric

    model = torch.nn.Linear(4, 1)
    with pytest.raises(TypeError, match=r"MeanMetric aggregates.*targets taken as weights"):
        Trainer(model, "sgd", "mse", metrics=[MeanMetric()])
