"""Monitor callbacks driven by scripted sequences of monitored values (Keras 3.15 traces).

A real `Trainer` trains a tiny model; a `Feed` callback placed first writes the scripted value
of each epoch into the shared epoch logs, so EarlyStopping / ReduceLROnPlateau see exactly
Keras 3's documented sequences for these callbacks.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from torchcallbacks import Callback, EarlyStopping, ReduceLROnPlateau, Trainer
from torchcallbacks.checkpoints.files import save_checkpoint

NAN = float("nan")


class Feed(Callback):
    """Writes ``values[epoch]`` into the epoch logs under ``key``."""

    def __init__(self, key: str, values: list[float]) -> None:
        super().__init__()
        self.key = key
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class Recorder(Callback):
    """Placed last: the optimizer's LR and a copy of the weights after every epoch."""

    def on_train_begin(self, logs=None):
        self.lrs = []
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.lrs.append(self.trainer.get_lr())
        self.weights.append({k: v.clone() for k, v in self.model.state_dict().items()})


class SaveAt(Callback):
    """Saves a full checkpoint at the end of ``epoch`` and stops there (an interrupted run)."""

    def __init__(self, epoch: int, path) -> None:
        super().__init__()
        self.epoch = epoch
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            save_checkpoint(self.path, self.trainer.checkpoint_state(epoch, logs))
            self.trainer.stop_training = True


def make_trainer(lr: float = 0.01, metrics=None) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), loss="mse", metrics=metrics)


DATA = (0.1 * torch.randn(8, 2, generator=torch.Generator().manual_seed(1)), torch.zeros(8, 1))


def drive(callback, values, key="val_loss", lr=0.01, epochs=None, trainer=None, extra=()):
    trainer = trainer or make_trainer(lr)
    recorder = Recorder()
    history = trainer.fit(
        *DATA,
        batch_size=8,
        epochs=epochs or len(values),
        verbose=0,
        callbacks=[Feed(key, values), callback, *extra, recorder],
    )
    return history, trainer, recorder


# -- the shared helper ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [(0.75, 0, True), (0.5, None, True), (0.5, 0, False), (0.2, 0.5, False)],
)
def test_min_delta_max_mode_keras_table(value, reference, expected):
    callback = EarlyStopping(mode="max", min_delta=0.5)
    callback.on_train_begin()
    assert callback.min_delta == 0.5
    assert callback._is_improvement(value, reference) is expected


def test_min_delta_sign_and_strictness():
    callback = EarlyStopping(monitor="val_loss", min_delta=0.5)
    callback.on_train_begin()
    callback.on_train_begin()  # resolving twice keeps the sign
    assert callback.min_delta == -0.5
    assert callback._is_improvement(0.4, 1.0)
    assert not callback._is_improvement(0.5, 1.0)  # equal after min_delta: not an improvement
    assert not callback._is_improvement(NAN, 1.0)
    assert callback._is_improvement(NAN, None)
    # float32 comparison, as Keras's backend ops: 0.7 + 0.1 is 0.8 in float32.
    callback.min_delta = -0.1
    assert not callback._is_improvement(0.7, 0.8)


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("acc", "max"),
        ("val_accuracy", "max"),
        ("val_auc", "max"),
        ("precision", "max"),
        ("val_recall", "max"),
        ("f1_score", "max"),
        ("fmeasure", "max"),
        ("val_mean_iou", "max"),
        ("dice", "max"),
        ("val_mae", "min"),
        ("mse", "min"),
        ("val_rmse", "min"),
        ("binary_crossentropy", "min"),
        ("perplexity", "min"),
        ("error_rate", "min"),
        ("output_1_loss", "min"),
    ],
)
def test_auto_mode_from_name(monitor, mode):
    for cls in (EarlyStopping, ReduceLROnPlateau):
        callback = cls(monitor=monitor)
        assert callback.monitor_op is None
        assert callback._resolve_mode() == mode
        assert callback.monitor_op is (np.less if mode == "min" else np.greater)


@pytest.mark.parametrize("cls", [EarlyStopping, ReduceLROnPlateau])
def test_auto_mode_unknown_name_raises_at_fit_start(cls):
    trainer = make_trainer()
    with pytest.raises(ValueError) as info:
        trainer.fit(*DATA, epochs=3, verbose=0, callbacks=[cls(monitor="val_foo")])
    message = str(info.value)
    assert message.startswith(
        f"{cls.__name__} callback received monitor=val_foo, but torchcallbacks cannot"
    )
    assert "Pass `mode='max'`" in message and "pass `mode='min'`" in message


@pytest.mark.parametrize("cls", [EarlyStopping, ReduceLROnPlateau])
def test_unknown_mode_warns_and_falls_back_to_auto(cls):
    with pytest.warns(UserWarning) as record:
        callback = cls(monitor="val_acc", mode="maximum")
    assert (
        str(record[0].message)
        == f"{cls.__name__} mode 'maximum' is unknown, fallback to auto mode."
    )
    assert record[0].filename == __file__
    assert callback.mode == "auto"
    assert callback._resolve_mode() == "max"


class Score:
    """A torchmetrics-style metric whose name says nothing about its direction."""

    name = "score"

    def __init__(self, higher_is_better: bool) -> None:
        self.higher_is_better = higher_is_better
        self.total = 0.0

    def update(self, preds, target):
        self.total += 1.0

    def compute(self):
        return self.total

    def reset(self):
        self.total = 0.0


@pytest.mark.parametrize(("higher", "mode"), [(True, "max"), (False, "min")])
def test_auto_mode_reads_metric_object_direction(higher, mode):
    trainer = make_trainer(metrics=[Score(higher)])
    stop = EarlyStopping(monitor="val_score", patience=1)
    # Decreasing values: an improvement only when smaller is better.
    drive(stop, [3.0, 2.0, 1.0], key="val_score", trainer=trainer)
    assert stop.monitor_op is not None
    assert stop.stopped_epoch == (1 if mode == "max" else 0)


# -- EarlyStopping traces (Keras 3) --------------------------------------------------------------
STEPS = [10, 9, 8, 9, 8.9, 8.8, 8.7, 8.6, 8.5]
ES_TRACES = [
    # values, kwargs, stopped_epoch, epochs run, best_epoch
    (STEPS, {"patience": 0}, 3, 4, 2),
    (STEPS, {"patience": 1}, 3, 4, 2),
    (STEPS, {"patience": 2}, 4, 5, 2),
    (STEPS, {"patience": 3}, 5, 6, 2),
    ([0.2, 0.15, 0.1, 0.11, 0.12], {"patience": 2, "restore_best_weights": True}, 4, 5, 2),
    (
        [0.9, 0.8, 0.7, 0.71, 0.72, 0.73],
        {"patience": 5, "baseline": 0.5, "restore_best_weights": True},
        4,
        5,
        2,
    ),
    ([1.0] * 10, {"patience": 3, "start_from_epoch": 2}, 5, 6, 2),
    ([5, 4, 3, 2, 2, 2], {"patience": 1, "start_from_epoch": 3}, 4, 5, 3),
    ([0.5, 0.4, 0.45, 0.44, 0.43], {"patience": 1, "min_delta": 0.05}, 2, 3, 1),
    # baseline never reached while improving every epoch: never stops
    ([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45], {"patience": 2, "baseline": 0.3}, 0, 7, 6),
    # improvement exactly when wait reaches patience resets the count
    ([1.0, 1.1, 1.2, 0.9, 1.0, 1.0, 1.0, 1.0], {"patience": 3}, 6, 7, 3),
    # ties within min_delta (the second in float32, as Keras compares)
    ([1.0, 0.9, 0.85], {"patience": 1, "min_delta": 0.1}, 1, 2, 0),
    ([0.8, 0.7, 0.6], {"patience": 1, "min_delta": 0.1}, 1, 2, 0),
    # NaN: first value becomes the best and is never beaten; later NaNs never improve
    ([NAN, 1.0, 0.5], {"patience": 1}, 1, 2, 0),
    ([1.0, NAN, NAN, 0.5, 0.4], {"patience": 2}, 2, 3, 0),
    # patience 0 and an improving run: all epochs, stopped_epoch stays 0
    ([3.0, 2.0, 1.0], {"patience": 0}, 0, 3, 2),
]


def _negate(kwargs):
    return {k: -v if k == "baseline" else v for k, v in kwargs.items()}


@pytest.mark.parametrize(("values", "kwargs", "stopped", "run", "best_epoch"), ES_TRACES)
@pytest.mark.parametrize(
    ("key", "mode", "sign"),
    [
        ("val_loss", "auto", 1),
        ("val_score", "min", 1),
        ("val_acc", "auto", -1),
        ("val_score", "max", -1),
    ],
)
def test_early_stopping_traces(values, kwargs, stopped, run, best_epoch, key, mode, sign):
    values = [sign * v for v in values]
    kwargs = kwargs if sign == 1 else _negate(kwargs)
    stop = EarlyStopping(monitor=key, mode=mode, **kwargs)
    history, trainer, recorder = drive(stop, values, key=key)
    assert stop.stopped_epoch == stopped
    assert len(history.epoch) == run
    assert stop.best_epoch == best_epoch
    assert trainer.stop_training is (stopped > 0)
    best = values[best_epoch]
    assert stop.best == best or (math.isnan(best) and math.isnan(stop.best))
    if kwargs.get("restore_best_weights"):
        final = trainer.model.state_dict()
        for name, tensor in recorder.weights[best_epoch].items():
            assert torch.equal(final[name], tensor)
        assert not torch.equal(final["weight"], recorder.weights[-1]["weight"])


def test_baseline_never_reached_counts_every_epoch():
    stop = EarlyStopping(patience=2, baseline=0.3)
    drive(stop, [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45])
    assert stop.wait == 7


def test_early_stopping_messages(capsys):
    stop = EarlyStopping(patience=2, restore_best_weights=True, verbose=1)
    drive(stop, [0.2, 0.15, 0.1, 0.11, 0.12])
    assert capsys.readouterr().out == (
        "Epoch 5: early stopping\nRestoring model weights from the end of the best epoch: 3.\n"
    )


def test_early_stopping_silent_without_verbose(capsys):
    drive(EarlyStopping(patience=0, restore_best_weights=True), [1.0, 2.0])
    assert capsys.readouterr().out == ""


def test_missing_monitor_warns_once_and_training_goes_on():
    stop = EarlyStopping(monitor="val_loss", patience=0)
    trainer = make_trainer()
    with pytest.warns(UserWarning) as record:
        warnings.simplefilter("always")
        history = trainer.fit(*DATA, epochs=4, verbose=0, callbacks=[stop])
    messages = [str(w.message) for w in record]
    assert messages == [
        "Early stopping conditioned on metric `val_loss` which is not available. "
        "Available metrics are: loss. 'val_loss' is logged only in epochs that validate: pass "
        "validation_data= or validation_split= to fit (see validation_freq), or monitor 'loss'."
    ]
    assert len(history.epoch) == 4
    assert stop.stopped_epoch == 0


def test_reused_instance_starts_fresh():
    stop = EarlyStopping(patience=1)
    drive(stop, [1.0, 0.5, 0.6])
    assert (stop.stopped_epoch, stop.best) == (2, 0.5)
    history, _, _ = drive(stop, [5.0, 4.0, 3.0])  # worse than the old best: still improvements
    assert len(history.epoch) == 3
    assert (stop.stopped_epoch, stop.best, stop.wait) == (0, 3.0, 0)


def resume(callback, values, path, lr=0.01):
    """A fresh trainer continuing the interrupted run saved at ``path``."""
    trainer = make_trainer(lr)
    recorder = Recorder()
    history = trainer.fit(
        *DATA,
        batch_size=8,
        epochs=len(values),
        verbose=0,
        callbacks=[Feed("val_loss", values), callback, SaveAt(-1, path), recorder],
        resume_from=str(path),
    )
    return history, trainer, recorder


def test_early_stopping_resume_decides_the_same(tmp_path):
    values = [0.9, 0.8, 0.85, 0.7, 0.75, 0.76, 0.77, 0.78, 0.79, 0.6]
    kwargs = {"patience": 4, "baseline": 0.72, "restore_best_weights": True}
    reference = EarlyStopping(**kwargs)
    _, full_trainer, _ = drive(reference, values)
    assert (reference.stopped_epoch, reference.best_epoch) == (7, 3)

    path = tmp_path / "ckpt.pt"
    drive(EarlyStopping(**kwargs), values, extra=[SaveAt(4, path)])
    resumed = EarlyStopping(**kwargs)
    _, trainer, recorder = resume(resumed, values, path)
    assert len(recorder.lrs) == 3  # epochs 5, 6, 7
    assert (resumed.stopped_epoch, resumed.best_epoch, resumed.wait) == (7, 3, reference.wait)
    for name, tensor in full_trainer.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], tensor)


def test_state_dict_round_trip():
    stop = EarlyStopping(patience=5, restore_best_weights=True)
    drive(stop, [1.0, 0.5, 0.7])
    state = stop.state_dict()
    other = EarlyStopping(patience=5, restore_best_weights=True)
    other.load_state_dict(state)
    assert (other.wait, other.best, other.best_epoch, other.stopped_epoch) == (1, 0.5, 1, 0)
    assert all(v.device.type == "cpu" for v in other.best_weights.values())
    assert other.best_weights.keys() == stop.best_weights.keys()


# -- ReduceLROnPlateau traces (Keras 3) ---------------------------------------------------------
RLROP_TRACES = [
    # values, kwargs, start lr, LR logged each epoch (pre-reduction), optimizer LR after each
    (
        [1, 1, 1, 1, 1, 1, 0.5, 0.5],
        {"factor": 0.5, "patience": 2, "cooldown": 1, "min_delta": 0},
        1.0,
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25],
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25],
    ),
    ([0.0860, 0.1096, 0.1040], {"patience": 2}, 1.0, [1.0, 1.0, 1.0], [1.0, 1.0, 0.1]),
    ([0.5, 0.4], {"patience": 1, "min_delta": 100}, 0.1, [0.1, 0.1], [0.1, 0.01]),
    (
        [0.5, 0.4, 0.3, 0.2],
        {"patience": 1, "min_delta": 100, "cooldown": 2},
        0.1,
        [0.1, 0.1, 0.01, 0.01],
        [0.1, 0.01, 0.01, 0.001],
    ),
    (
        [0.5, 0.4, 0.3, 0.2],
        {"patience": 1, "min_delta": 10, "min_lr": 0.005},
        0.1,
        [0.1, 0.1, 0.01, 0.005],
        [0.1, 0.01, 0.005, 0.005],
    ),
    # already at min_lr (float32 comparison): nothing more happens
    (
        [1.0] * 6,
        {"factor": 0.5, "patience": 1, "min_lr": 0.3},
        1.0,
        [1.0, 1.0, 0.5, 0.3, 0.3, 0.3],
        [1.0, 0.5, 0.3, 0.3, 0.3, 0.3],
    ),
    # NaN never improves
    (
        [1.0, NAN, NAN, NAN],
        {"factor": 0.5, "patience": 2},
        1.0,
        [1.0, 1.0, 1.0, 0.5],
        [1.0, 1.0, 0.5, 0.5],
    ),
]


@pytest.mark.parametrize(("values", "kwargs", "lr", "logged", "after"), RLROP_TRACES)
@pytest.mark.parametrize(
    ("key", "mode", "sign"),
    [
        ("val_loss", "auto", 1),
        ("val_score", "min", 1),
        ("val_auc", "auto", -1),
        ("val_score", "max", -1),
    ],
)
def test_reduce_lr_traces(values, kwargs, lr, logged, after, key, mode, sign):
    reduce = ReduceLROnPlateau(monitor=key, mode=mode, **kwargs)
    history, trainer, recorder = drive(reduce, [sign * v for v in values], key=key, lr=lr)
    assert history.history["lr"] == pytest.approx(logged, rel=1e-12)
    assert recorder.lrs == pytest.approx(after, rel=1e-12)
    assert all(type(v) is float for v in history.history["lr"])


def test_reduce_lr_min_lr_reached_exactly_and_wait_keeps_growing():
    reduce = ReduceLROnPlateau(patience=1, min_delta=10, min_lr=0.005)
    _, trainer, _ = drive(reduce, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0], lr=0.1)
    assert trainer.get_lr() == 0.005
    assert reduce.wait == 3
    assert reduce.cooldown_counter == 0


def test_reduce_lr_messages(capsys):
    reduce = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_delta=0, verbose=1)
    drive(reduce, [1, 1, 1, 1, 1, 1, 0.5, 0.5], lr=1.0)
    assert capsys.readouterr().out == (
        "\nEpoch 3: ReduceLROnPlateau reducing learning rate to 0.5.\n"
        "\nEpoch 5: ReduceLROnPlateau reducing learning rate to 0.25.\n"
    )


def test_reduce_lr_missing_monitor_warns_once_with_lr_key():
    reduce = ReduceLROnPlateau(monitor="val_loss", patience=0)
    trainer = make_trainer(lr=0.1)
    with pytest.warns(UserWarning) as record:
        warnings.simplefilter("always")
        history = trainer.fit(*DATA, epochs=3, verbose=0, callbacks=[reduce])
    assert [str(w.message) for w in record] == [
        "Learning rate reduction is conditioned on metric `val_loss` which is not available. "
        "Available metrics are: loss,lr. 'val_loss' is logged only in epochs that validate: "
        "pass validation_data= or validation_split= to fit (see validation_freq), or monitor "
        "'loss'."
    ]
    assert history.history["lr"] == [0.1, 0.1, 0.1]
    assert trainer.get_lr() == 0.1


def test_reduce_lr_keeps_param_group_ratios():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[1].parameters()}],
        lr=0.4,
    )
    trainer = Trainer(model, optimizer, loss="mse")
    reduce = ReduceLROnPlateau(factor=0.5, patience=1, min_lr=0.04)
    drive(reduce, [1.0, 1.0, 1.0, 1.0], trainer=trainer)
    # first group: 0.1 -> 0.05 -> 0.04 (min_lr) -> stays; the second keeps ratio 4.
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.04, 0.16])


def test_reduce_lr_bad_arguments():
    with pytest.raises(ValueError, match=r"does not support a factor >= 1.0. Received factor=1.5"):
        ReduceLROnPlateau(factor=1.5)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        ReduceLROnPlateau(patients=3)
    with pytest.warns(UserWarning, match="`epsilon` argument is deprecated"):
        reduce = ReduceLROnPlateau(epsilon=0.5)
    assert reduce.min_delta == 0.5


def test_reduce_lr_resume_decides_the_same(tmp_path):
    values = [1, 1, 1, 1, 1, 1, 0.5, 0.5]
    kwargs = {"factor": 0.5, "patience": 2, "cooldown": 1, "min_delta": 0}
    path = tmp_path / "ckpt.pt"
    drive(ReduceLROnPlateau(**kwargs), values, lr=1.0, extra=[SaveAt(3, path)])
    resumed = ReduceLROnPlateau(**kwargs)
    history, trainer, recorder = resume(resumed, values, path, lr=1.0)
    assert history.history["lr"][-4:] == [0.5, 0.25, 0.25, 0.25]
    assert recorder.lrs == [0.25, 0.25, 0.25, 0.25]
    assert (resumed.best, resumed.wait, resumed.cooldown_counter) == (0.5, 1, 0)
