"""The event sequence, the logs each hook receives, and where stop_training is checked."""

from __future__ import annotations

import pytest
import torch
from conftest import linear_model

from torchcallbacks import Callback, CallbackList, History, LambdaCallback, Trainer


class Spy(Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def _record(self, name, *args):
        self.events.append((name, *args))

    def on_train_begin(self, logs=None):
        self._record("train_begin", dict(logs))

    def on_train_end(self, logs=None):
        self._record("train_end", sorted(logs))

    def on_epoch_begin(self, epoch, logs=None):
        self._record("epoch_begin", epoch, dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self._record("epoch_end", epoch, sorted(logs))

    def on_train_batch_begin(self, batch, logs=None):
        self._record("batch_begin", batch, dict(logs))

    def on_train_batch_end(self, batch, logs=None):
        self._record("batch_end", batch, sorted(logs))

    def on_test_begin(self, logs=None):
        self._record("test_begin", dict(logs))

    def on_test_batch_end(self, batch, logs=None):
        self._record("test_batch_end", batch, sorted(logs))

    def on_test_end(self, logs=None):
        self._record("test_end", sorted(logs))


def test_fit_emits_keras_event_order(regression_data):
    x, y = regression_data
    spy = Spy()
    trainer = Trainer(linear_model(), "sgd", "mse", metrics=["mae"])
    trainer.fit(
        x, y, batch_size=10, epochs=2, verbose=0, callbacks=[spy], validation_data=(x[:5], y[:5])
    )
    batch_keys = ["loss", "mae"]
    epoch = [
        ("batch_begin", 0, {}),
        ("batch_end", 0, batch_keys),
        ("batch_begin", 1, {}),
        ("batch_end", 1, batch_keys),
        ("test_begin", {}),
        ("test_batch_end", 0, batch_keys),
        ("test_end", batch_keys),
    ]
    epoch_keys = ["loss", "mae", "val_loss", "val_mae"]
    expected = (
        [("train_begin", {}), ("epoch_begin", 0, {})]
        + epoch
        + [("epoch_end", 0, epoch_keys)]
        + [("epoch_begin", 1, {})]
        + epoch
        + [("epoch_end", 1, epoch_keys)]
        + [("train_end", epoch_keys)]
    )
    assert spy.events == expected


def test_lambda_callback_order_matches_keras_experiment(regression_data):
    # Keras's hook order: 2 batches, 1 epoch, with validation.
    x, y = regression_data
    calls = []
    spy = LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin", logs)),
        on_batch_end=lambda batch, logs: calls.append(("batch_end", batch)),
        on_test_begin=lambda logs: calls.append(("test_begin", logs)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, sorted(logs))),
    )
    Trainer(linear_model(), "sgd", "mse").fit(
        x, y, batch_size=10, epochs=1, verbose=0, callbacks=[spy], validation_data=(x, y)
    )
    assert calls == [
        ("train_begin", {}),
        ("batch_end", 0),
        ("batch_end", 1),
        ("test_begin", {}),
        ("epoch_end", 0, ["loss", "val_loss"]),
    ]


def test_batch_logs_are_running_sample_weighted_means(regression_data):
    x, y = regression_data
    model = linear_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    recorder = LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(logs["loss"]))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), "mse")
    history = trainer.fit(
        x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[recorder]
    )

    # Hand computation: the same SGD steps, batch losses weighted by batch size.
    reference = linear_model()
    reference.load_state_dict(initial)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    total, count, running = 0.0, 0, []
    for start in range(0, 20, 8):
        xb, yb = x[start : start + 8], y[start : start + 8]
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(reference(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(xb)
        count += len(xb)
        running.append(total / count)
    assert seen == [pytest.approx(v, rel=1e-6) for v in running]
    assert history.history["loss"] == [pytest.approx(running[-1], rel=1e-6)]
    assert all(type(v) is float for v in seen)


def test_stop_in_batch_hook_stops_after_that_batch_but_finishes_epoch(regression_data):
    x, y = regression_data
    spy = Spy()

    class StopAtBatch1(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True  # the Keras idiom

    trainer = Trainer(linear_model(), "sgd", "mse")
    history = trainer.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        verbose=0,
        callbacks=[StopAtBatch1(), spy],
        validation_data=(x, y),
    )
    batch_ends = [e[1] for e in spy.events if e[0] == "batch_end"]
    assert batch_ends == [0, 1]
    assert [e[0] for e in spy.events][-3:] == ["test_end", "epoch_end", "train_end"]
    assert history.epoch == [0]
    assert trainer.stop_training is True


def test_stop_in_train_begin_runs_exactly_one_batch(regression_data):
    x, y = regression_data
    spy = Spy()
    stopper = LambdaCallback(on_train_begin=lambda logs: setattr(trainer, "stop_training", True))
    trainer = Trainer(linear_model(), "sgd", "mse")
    assert trainer.stop_training is False
    trainer.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[stopper, spy])
    # fit resets stop_training before on_train_begin; the stop is seen after the first batch.
    assert [e[1] for e in spy.events if e[0] == "batch_end"] == [0]
    assert [e[1] for e in spy.events if e[0] == "epoch_end"] == [0]


def test_epoch_end_stop_reaches_every_callback_first(regression_data):
    x, y = regression_data
    later = Spy()
    trainer = Trainer(linear_model(), "sgd", "mse")
    stopper = LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(trainer, "stop_training", True)
    )
    trainer.fit(x, y, epochs=5, verbose=0, callbacks=[stopper, later])
    assert [e[1] for e in later.events if e[0] == "epoch_end"] == [0]


def test_shared_logs_dict_lets_later_callbacks_see_added_keys(regression_data):
    x, y = regression_data
    seen = {}

    class AddsKey(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["lr"] = 0.5

    reader = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.update(logs))
    trainer = Trainer(linear_model(), "sgd", "mse")
    history = trainer.fit(x, y, epochs=1, verbose=0, callbacks=[AddsKey(), reader])
    assert seen["lr"] == 0.5
    assert history.history["lr"] == [0.5]  # History comes after user callbacks


def test_callback_exception_propagates_without_train_end(regression_data):
    x, y = regression_data
    spy = Spy()

    class Boom(Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    trainer = Trainer(linear_model(), "sgd", "mse")
    try:
        trainer.fit(x, y, epochs=2, verbose=0, callbacks=[Boom(), spy])
    except RuntimeError as error:
        assert str(error) == "boom"
    else:
        raise AssertionError("the callback's exception must propagate")
    assert "train_end" not in [e[0] for e in spy.events]


def test_params_history_and_initial_epoch(regression_data):
    x, y = regression_data
    trainer = Trainer(linear_model(), "sgd", "mse")
    history = trainer.fit(x, y, batch_size=5, epochs=4, initial_epoch=2, verbose=0)
    assert history.params == {"verbose": 0, "epochs": 4, "steps": 4}
    assert history.epoch == [2, 3]
    assert trainer.history is history
    empty = trainer.fit(x, y, epochs=2, initial_epoch=2, verbose=0)
    assert empty.history == {} and empty.epoch == []


def test_callback_list_appends_history_and_progbar_last():
    from torchcallbacks import ProgbarLogger

    user = Spy()
    callbacks = CallbackList([user], add_history=True, add_progbar=True)
    assert [type(c) for c in callbacks] == [Spy, History, ProgbarLogger]
    own = History()
    callbacks = CallbackList([own, user], add_history=True)
    assert callbacks.callbacks == [own, user] and callbacks.history is own


def test_epoch_only_callbacks_get_no_batch_hooks(regression_data):
    x, y = regression_data

    class EpochOnly(Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    callbacks = CallbackList([EpochOnly()], add_history=True)
    assert not callbacks.implements_batch_hooks("train")
    assert CallbackList([Spy()]).implements_batch_hooks("train")
    assert CallbackList([LambdaCallback(on_batch_end=lambda b, logs: None)]).implements_batch_hooks(
        "train"
    )


def test_validation_freq_int_and_list(regression_data):
    x, y = regression_data
    trainer = Trainer(linear_model(), "sgd", "mse")
    ran = []
    spy = LambdaCallback(on_epoch_end=lambda epoch, logs: ran.append("val_loss" in logs))
    trainer.fit(
        x, y, epochs=4, verbose=0, validation_data=(x, y), validation_freq=2, callbacks=[spy]
    )
    assert ran == [False, True, False, True]
    ran.clear()
    trainer.fit(
        x, y, epochs=4, verbose=0, validation_data=(x, y), validation_freq=[1, 4], callbacks=[spy]
    )
    assert ran == [True, False, False, True]


def test_evaluate_and_predict_hooks_and_stops(regression_data):
    x, y = regression_data
    ends = []

    class StopAfterTwo(Callback):
        def on_test_batch_end(self, batch, logs=None):
            ends.append(("test", batch))
            if batch == 1:
                self.trainer.stop_evaluating = True

        def on_predict_batch_end(self, batch, logs=None):
            ends.append(("predict", batch, tuple(logs["outputs"].shape)))
            if batch == 2:
                self.trainer.stop_predicting = True

    trainer = Trainer(linear_model(), "sgd", "mse")
    trainer.evaluate(x, y, batch_size=4, verbose=0, callbacks=[StopAfterTwo()])
    out = trainer.predict(x, batch_size=4, verbose=0, callbacks=[StopAfterTwo()])
    assert ends == [
        ("test", 0),
        ("test", 1),
        ("predict", 0, (4, 1)),
        ("predict", 1, (4, 1)),
        ("predict", 2, (4, 1)),
    ]
    assert out.shape == (12, 1)


def test_model_modes_restored(regression_data):
    x, y = regression_data
    model = linear_model()
    modes = []
    spy = LambdaCallback(
        on_train_batch_end=lambda b, logs: modes.append(("train", model.training)),
        on_test_batch_end=lambda b, logs: modes.append(("test", model.training)),
    )
    trainer = Trainer(model, "sgd", "mse")
    model.eval()
    trainer.fit(x, y, batch_size=20, verbose=0, validation_data=(x, y), callbacks=[spy])
    assert modes == [("train", True), ("test", False)]
    assert model.training is False
    model.train()
    trainer.predict(x, verbose=0)
    assert model.training is True


def test_batch_logs_are_built_only_for_callbacks_that_read_them(regression_data):
    x, y = regression_data

    class CountsBatches(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def needs_batch_logs(self, mode):
            return False

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(dict(logs))

    counter = CountsBatches()
    Trainer(linear_model(), "sgd", "mse").fit(x, y, batch_size=10, verbose=0, callbacks=[counter])
    assert counter.seen == [{}, {}]  # hooks ran, no logs were built

    counter = CountsBatches()
    reader = LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    Trainer(linear_model(), "sgd", "mse").fit(
        x, y, batch_size=10, verbose=0, callbacks=[counter, reader]
    )
    assert [sorted(logs) for logs in counter.seen] == [["loss"], ["loss"]]
