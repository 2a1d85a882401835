"""Learning-rate callbacks and EarlyStopping on a real tiny model: user-visible outcomes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ema import RaiseAt  # raises after a given global batch, as a killed run stops
from torch.optim import lr_scheduler

from torchcallbacks import (
    BackupAndRestore,
    Callback,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ReduceLROnPlateau,
    Trainer,
)
from torchcallbacks.checkpoints.files import save_checkpoint

X = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
X_VAL, Y_VAL = X[:8] + 0.1, Y[:8]


def make_trainer(lr: float = 0.1, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), loss="mse", **kwargs)


class BatchLRs(Callback):
    """The learning rate each training batch runs with, and the weights after each epoch."""

    def on_train_begin(self, logs=None):
        self.lrs = []
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(self.trainer.get_lr())

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append({k: v.clone() for k, v in self.model.state_dict().items()})


# -- LearningRateScheduler with a function ----------------------------------------------------
@pytest.mark.parametrize(
    "schedule",
    [
        lambda epoch: 0.1 / (epoch + 1),
        lambda epoch, lr: 0.1 / (epoch + 1),
        lambda epoch, lr=None: 0.1 / (epoch + 1),
    ],
)
def test_schedule_sets_lr_at_epoch_begin(schedule):
    trainer = make_trainer(lr=0.5)
    probe = BatchLRs()
    history = trainer.fit(
        X, Y, batch_size=16, epochs=3, verbose=0, callbacks=[LearningRateScheduler(schedule), probe]
    )
    assert probe.lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.1 / 3, 0.1 / 3])
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert trainer.get_lr() == pytest.approx(0.1 / 3)


def test_two_argument_schedule_gets_the_current_lr():
    seen = []

    def schedule(epoch, lr):
        seen.append(lr)
        return lr * 0.5

    trainer = make_trainer(lr=0.8)
    trainer.fit(X, Y, epochs=3, verbose=0, callbacks=[LearningRateScheduler(schedule)])
    assert seen == [0.8, 0.4, 0.2]
    assert trainer.get_lr() == 0.1


def test_type_error_inside_two_argument_schedule_is_not_swallowed():
    def schedule(epoch, lr):
        raise TypeError("bug in my schedule")

    with pytest.raises(TypeError, match="bug in my schedule"):
        make_trainer().fit(X, Y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(schedule)])


@pytest.mark.parametrize(
    "value",
    [0.25, 1, np.float32(0.25), np.float64(0.25), np.int64(1), np.array(0.25), torch.tensor(0.25)],
)
def test_schedule_accepts_any_real_number(value):
    trainer = make_trainer()
    history = trainer.fit(
        X, Y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda epoch: value)]
    )
    assert trainer.get_lr() == float(value)
    assert type(history.history["lr"][0]) is float


@pytest.mark.parametrize(
    "value", ["0.1", None, [0.1], torch.tensor([0.1, 0.2]), torch.tensor([0.1]), True, 1j]
)
def test_schedule_rejects_non_numbers(value):
    trainer = make_trainer()
    with pytest.raises(ValueError, match="The output of the `schedule` function should be a float"):
        trainer.fit(X, Y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e: value)])


def test_schedule_message(capsys):
    trainer = make_trainer(lr=0.1)
    callback = LearningRateScheduler(lambda epoch, lr: lr * 0.5, verbose=1)
    trainer.fit(X, Y, epochs=2, verbose=0, callbacks=[callback])
    assert capsys.readouterr().out == (
        "\nEpoch 1: LearningRateScheduler setting learning rate to 0.05.\n"
        "\nEpoch 2: LearningRateScheduler setting learning rate to 0.025.\n"
    )


def test_schedule_keeps_param_group_ratios():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.3}]
    )
    trainer = Trainer(model, optimizer, loss="mse")
    trainer.fit(X, Y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e: 0.01)])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.03])


def test_a_warm_up_from_zero_keeps_param_group_ratios():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}]
    )
    trainer = Trainer(model, optimizer, loss="mse")
    seen = []
    trainer.fit(
        X,
        Y,
        epochs=3,
        verbose=0,
        callbacks=[
            LearningRateScheduler(lambda epoch: 0.05 * epoch),  # 0 at the first epoch
            LambdaCallback(
                on_epoch_end=lambda epoch, logs: seen.append(
                    [g["lr"] for g in optimizer.param_groups]
                )
            ),
        ],
    )
    expected = [[0.0, 0.0], [0.05, 0.005], [0.1, 0.01]]
    assert [pytest.approx(lrs) for lrs in expected] == seen


def test_bad_scheduler_arguments():
    with pytest.raises(TypeError, match="schedule must be a function"):
        LearningRateScheduler(0.1)
    with pytest.raises(ValueError, match="interval must be 'epoch' or 'batch'"):
        LearningRateScheduler(lambda e: 0.1, interval="step")
    with pytest.raises(ValueError, match="interval='batch' needs a torch.optim.lr_scheduler"):
        LearningRateScheduler(lambda e: 0.1, interval="batch")
    trainer = make_trainer()
    other = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    callback = LearningRateScheduler(lr_scheduler.StepLR(other, step_size=1))
    with pytest.raises(ValueError, match="built on another optimizer than the Trainer's"):
        trainer.fit(X, Y, epochs=1, verbose=0, callbacks=[callback])


# -- LearningRateScheduler with a torch scheduler -------------------------------------------
def by_hand(make_scheduler, steps: int) -> list[float]:
    """The LR before each of ``steps`` steps of a scheduler stepped by hand."""
    optimizer = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_one_cycle_stepped_per_batch_matches_stepping_by_hand():
    def one_cycle(optimizer):
        return lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=5 * 4)

    trainer = make_trainer()
    callback = LearningRateScheduler(one_cycle(trainer.optimizer), interval="batch")
    assert callback.implements_batch_hooks("train")
    probe = BatchLRs()
    trainer.fit(X, Y, batch_size=8, epochs=5, verbose=0, callbacks=[callback, probe])
    assert len(probe.lrs) == 20
    assert probe.lrs == by_hand(one_cycle, 20)


def test_warmup_cosine_per_batch_matches_stepping_by_hand():
    def warmup_cosine(optimizer):
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=3)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=9)
        return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])

    trainer = make_trainer()
    callback = LearningRateScheduler(warmup_cosine(trainer.optimizer), interval="batch")
    probe = BatchLRs()
    trainer.fit(X, Y, batch_size=8, epochs=3, verbose=0, callbacks=[callback, probe])
    assert probe.lrs == by_hand(warmup_cosine, 12)


def test_torch_scheduler_stepped_per_epoch():
    def step_lr(optimizer):
        return lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

    trainer = make_trainer()
    callback = LearningRateScheduler(step_lr(trainer.optimizer))
    assert not callback.implements_batch_hooks("train")
    probe = BatchLRs()
    history = trainer.fit(X, Y, batch_size=16, epochs=5, verbose=0, callbacks=[callback, probe])
    during_epoch = by_hand(step_lr, 5)  # LR during epoch e = value after e steps
    assert during_epoch == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert probe.lrs == [lr for lr in during_epoch for _ in range(2)]
    assert history.history["lr"] == during_epoch
    assert trainer.get_lr() == pytest.approx(0.025)  # after 5 steps


def plateau_lrs(plateau, step_by_hand) -> tuple[list[float], list[float]]:
    """The learning rate of each epoch with the scheduler ``plateau(optimizer)`` builds, fed
    a val_loss that stops improving: through LearningRateScheduler, and stepped by hand with
    ``step_by_hand(scheduler, epoch, val_loss)``."""
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.97]
    feed = LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(val_loss=values[epoch]))
    trainer = make_trainer()
    callback = LearningRateScheduler(plateau(trainer.optimizer), monitor="val_loss")
    probe = BatchLRs()
    trainer.fit(
        X, Y, batch_size=32, epochs=len(values), verbose=0, callbacks=[feed, callback, probe]
    )

    optimizer = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1)
    scheduler = plateau(optimizer)
    expected = []
    for epoch, value in enumerate(values):
        expected.append(optimizer.param_groups[0]["lr"])
        step_by_hand(scheduler, epoch, value)
    return probe.lrs, expected


def test_torch_reduce_lr_on_plateau_gets_the_monitored_value():
    def plateau(optimizer):
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)

    lrs, expected = plateau_lrs(plateau, lambda scheduler, epoch, value: scheduler.step(value))
    assert lrs == expected
    assert expected[-1] < 0.1


def test_torch_plateau_missing_monitor_warns_and_skips_the_step():
    trainer = make_trainer()
    scheduler = lr_scheduler.ReduceLROnPlateau(trainer.optimizer, patience=0)
    callback = LearningRateScheduler(scheduler, monitor="val_acc")
    with pytest.warns(UserWarning, match="`val_acc` which is not available"):
        trainer.fit(X, Y, epochs=3, verbose=0, callbacks=[callback])
    assert trainer.get_lr() == 0.1


def test_torch_scheduler_state_resumes(tmp_path):
    def step_lr(optimizer):
        return lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    path = tmp_path / "ckpt.pt"

    def save_at_epoch_1(epoch, logs):
        if epoch == 1:
            save_checkpoint(path, trainer.checkpoint_state(epoch, logs))
            trainer.stop_training = True

    trainer = make_trainer()
    saver = LambdaCallback(on_epoch_end=save_at_epoch_1)
    trainer.fit(
        X,
        Y,
        epochs=4,
        verbose=0,
        callbacks=[LearningRateScheduler(step_lr(trainer.optimizer)), saver],
    )
    assert trainer.get_lr() == 0.025

    resumed = make_trainer()
    callback = LearningRateScheduler(step_lr(resumed.optimizer))
    resumed.fit(
        X, Y, epochs=4, verbose=0, callbacks=[callback, LambdaCallback()], resume_from=str(path)
    )
    assert callback.scheduler.last_epoch == 4
    assert resumed.get_lr() == 0.1 * 0.5**4


def hand_loop(
    model,
    optimizer,
    scheduler,
    batches,
    epochs: int,
    loss=torch.nn.functional.mse_loss,
    accumulate: int = 1,
    after_update=lambda scheduler, updates: scheduler.step(),
    after_epoch=lambda scheduler, epoch: None,
) -> list[float]:
    """A training loop as HuggingFace's and timm's scripts write it: the loss divided by
    ``accumulate``, an optimizer step every ``accumulate`` batches and at each epoch's end,
    ``after_update`` after each optimizer step, ``after_epoch`` after each epoch. Returns the
    learning rate each batch trains with."""
    lrs, updates = [], 0
    for epoch in range(epochs):
        for index, (x, y) in enumerate(batches):
            lrs.append(optimizer.param_groups[0]["lr"])
            (loss(model(x), y) / accumulate).backward()
            if (index + 1) % accumulate == 0 or index + 1 == len(batches):
                optimizer.step()
                optimizer.zero_grad()
                updates += 1
                after_update(scheduler, updates)
        after_epoch(scheduler, epoch)
    return lrs


def linear_hand_loop(make_scheduler, epochs: int, batch_size: int, **options):
    """`hand_loop` over (X, Y) in order with `make_trainer`'s model and optimizer; the LRs
    and the final weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = list(zip(X.split(batch_size), Y.split(batch_size)))
    lrs = hand_loop(model, optimizer, make_scheduler(optimizer), batches, epochs, **options)
    return lrs, model.state_dict()


@pytest.mark.parametrize(
    "name", ["get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup"]
)
def test_transformers_warmup_schedules_per_batch_match_a_hand_loop(name):
    """5 batches per epoch, gradients accumulated over 2: 3 optimizer steps per epoch, the
    last one after the epoch's fifth batch; the schedule follows the optimizer steps."""
    import transformers

    def schedule(optimizer):
        return getattr(transformers, name)(optimizer, num_warmup_steps=3, num_training_steps=3 * 3)

    trainer = make_trainer(accumulate_grad_batches=2)
    callback = LearningRateScheduler(schedule(trainer.optimizer), interval="batch")
    probe = BatchLRs()
    history = trainer.fit(
        X, Y, batch_size=7, epochs=3, shuffle=False, verbose=0, callbacks=[callback, probe]
    )
    lrs, weights = linear_hand_loop(schedule, epochs=3, batch_size=7, accumulate=2)
    assert probe.lrs == lrs
    assert lrs[:5] == pytest.approx([0.0, 0.0, 0.1 / 3, 0.1 / 3, 0.2 / 3])  # the warm-up
    assert history.history["lr"] == [lrs[5], lrs[10], trainer.get_lr()]
    torch.testing.assert_close(trainer.model.state_dict(), weights)


def resumed_like_uninterrupted(make_trainer_and_scheduler, tmp_path, interval: str) -> None:
    """A fit of 3 epochs of 4 batches, backed up every 3 batches by a BackupAndRestore listed
    before the scheduler (its backup holds the state before the batch's scheduler step),
    crashes after batch 5; run again, it trains every later batch with the learning rate and
    ends with the weights of the uninterrupted run."""

    def run(backup, crash):
        trainer, scheduler = make_trainer_and_scheduler()
        probe = BatchLRs()
        callbacks = [BackupAndRestore(backup, save_freq=3)]
        callbacks += [LearningRateScheduler(scheduler, interval=interval), probe, crash]
        trainer.fit(X, Y, batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
        return probe.lrs, trainer.model.state_dict()

    expected_lrs, expected_weights = run(tmp_path / "whole", RaiseAt(0))
    with pytest.raises(RuntimeError, match="interrupted"):
        run(tmp_path / "crashed", RaiseAt(5))
    lrs, weights = run(tmp_path / "crashed", RaiseAt(0))
    assert lrs == expected_lrs[3:]  # resumed after batch 3
    assert len(set(lrs)) >= 3  # the learning rate changed on the way
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=0)


def test_a_per_batch_torch_scheduler_resumes_exactly_from_a_backup(tmp_path):
    def make():
        trainer = make_trainer()
        return trainer, lr_scheduler.OneCycleLR(trainer.optimizer, max_lr=0.5, total_steps=12)

    resumed_like_uninterrupted(make, tmp_path, interval="batch")


# -- EarlyStopping and ReduceLROnPlateau on real training -----------------------------------
@pytest.mark.parametrize("mode", ["auto", "min"])
def test_early_stopping_real_training_restores_best_weights(mode, capsys):
    # Keras [exp]: monitor='loss', patience=0, min_delta=100 -> 2 epochs, best epoch 1.
    trainer = make_trainer()
    stop = EarlyStopping(
        monitor="loss", patience=0, min_delta=100, verbose=1, restore_best_weights=True, mode=mode
    )
    probe = BatchLRs()
    history = trainer.fit(X, Y, epochs=5, verbose=0, callbacks=[stop, probe])
    assert len(history.epoch) == 2
    assert capsys.readouterr().out == (
        "Epoch 2: early stopping\nRestoring model weights from the end of the best epoch: 1.\n"
    )
    restored = trainer.model.state_dict()
    for name, tensor in probe.weights[0].items():
        assert torch.equal(restored[name], tensor)
    assert not torch.equal(restored["weight"], probe.weights[1]["weight"])
    # kept on the CPU, as copies
    assert all(t.device.type == "cpu" for t in stop.best_weights.values())
    assert stop.best_weights["weight"].data_ptr() != trainer.model.weight.data_ptr()


def test_early_stopping_max_mode_on_real_accuracy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    trainer = Trainer(model, "sgd", loss="binary_crossentropy", metrics=["accuracy"])
    labels = (Y > 0).float()
    stop = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=2.0)
    history = trainer.fit(
        X, labels, epochs=6, verbose=0, validation_data=(X_VAL, labels[:8]), callbacks=[stop]
    )
    assert stop.monitor_op is np.greater
    assert len(history.epoch) == 2 and stop.stopped_epoch == 1


def test_restores_best_weights_when_training_ends_otherwise():
    # All epochs finish: best (the improving epoch 0 with a huge min_delta) is restored.
    trainer = make_trainer()
    stop = EarlyStopping(monitor="loss", patience=10, min_delta=100, restore_best_weights=True)
    probe = BatchLRs()
    trainer.fit(X, Y, epochs=3, verbose=0, callbacks=[stop, probe])
    assert stop.stopped_epoch == 0
    assert torch.equal(trainer.model.weight, probe.weights[0]["weight"])

    # Another callback stops training: still restored.
    trainer = make_trainer()
    stop = EarlyStopping(monitor="loss", patience=10, min_delta=100, restore_best_weights=True)
    halt = LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(trainer, "stop_training", epoch == 2)
    )
    probe = BatchLRs()
    history = trainer.fit(X, Y, epochs=10, verbose=0, callbacks=[stop, halt, probe])
    assert len(history.epoch) == 3
    assert torch.equal(trainer.model.weight, probe.weights[0]["weight"])


def test_reduce_lr_on_real_training():
    # Keras test: Adam/SGD 0.1, patience=1, min_delta=100 -> 0.01 after 2 epochs.
    trainer = make_trainer(lr=0.1)
    reduce = ReduceLROnPlateau(monitor="val_loss", patience=1, min_delta=100)
    history = trainer.fit(
        X, Y, epochs=2, verbose=0, validation_data=(X_VAL, Y_VAL), callbacks=[reduce]
    )
    assert trainer.get_lr() == pytest.approx(0.01)
    assert history.history["lr"] == [0.1, 0.1]
    assert "val_loss" in history.history


def test_reduce_lr_mode_max_on_real_metric():
    trainer = make_trainer(lr=0.1, metrics=["mae"])
    reduce = ReduceLROnPlateau(
        monitor="mae", mode="max", factor=0.5, patience=1, cooldown=2, min_delta=100
    )
    history = trainer.fit(X, Y, epochs=5, verbose=0, callbacks=[reduce])
    # Nothing improves after epoch 0: reductions at epochs 1 and 3 (cooldown in between).
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert trainer.get_lr() == pytest.approx(0.025)
