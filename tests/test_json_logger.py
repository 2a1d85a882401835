"""JSONLogger writes JSON Lines that strict JSON readers parse, through the real Trainer."""

import copy
import json
import math

import pytest
import torch

from torchcallbacks import Callback, JSONLogger, Trainer
from torchcallbacks.checks import NonFiniteInputWarning


def strict_records(path):
    """Every line parsed by json.loads, refusing the non-standard NaN/Infinity tokens."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def make_trainer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    trainer = Trainer(model, "sgd", "mse", ["mae"], "cpu")
    x = torch.randn(24, 3)
    return trainer, x, x.sum(1, keepdim=True)


def test_one_record_per_epoch_with_the_epoch_logs(tmp_path):
    path = tmp_path / "log.jsonl"
    trainer, x, y = make_trainer()
    history = trainer.fit(
        x, y, batch_size=8, epochs=3, verbose=0, validation_split=0.25, callbacks=[JSONLogger(path)]
    )
    records = strict_records(path)
    assert records == [
        {"epoch": e, **{key: values[e] for key, values in history.history.items()}}
        for e in range(3)
    ]
    assert list(records[0]) == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    assert path.read_text().splitlines()[0].startswith('{"epoch": 0, "loss": ')


def test_batch_level_adds_one_record_per_training_batch(tmp_path):
    path = tmp_path / "log.jsonl"
    batch_losses = []

    class Recorder(Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_losses.append(logs["loss"])

    trainer, x, y = make_trainer()
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        validation_split=0.25,
        callbacks=[JSONLogger(path, batch_level=True), Recorder()],
    )
    records = strict_records(path)
    positions = [(r["epoch"], r.get("batch")) for r in records]
    # 18 training samples in batches of 8: 3 batches per epoch
    assert positions == [(0, 0), (0, 1), (0, 2), (0, None), (1, 0), (1, 1), (1, 2), (1, None)]
    assert [r["loss"] for r in records if "batch" in r] == batch_losses
    assert set(records[0]) == {"epoch", "batch", "loss", "mae"}
    assert "val_loss" in records[3] and "val_loss" not in records[2]


def test_batch_hooks_are_requested_only_with_batch_level(tmp_path):
    assert not JSONLogger(tmp_path / "a.jsonl").implements_batch_hooks("train")
    assert JSONLogger(tmp_path / "a.jsonl", batch_level=True).implements_batch_hooks("train")
    assert not JSONLogger(tmp_path / "a.jsonl", batch_level=True).implements_batch_hooks("test")


def test_nan_and_infinity_are_written_as_strings(tmp_path):
    path = tmp_path / "log.jsonl"

    class Odd(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs.update(big=math.inf, small=-math.inf, values=[1.0, math.nan], note="ok")

    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, "sgd", "mse", device="cpu")
    y = torch.tensor([[1.0], [math.nan]])  # a NaN target makes the loss NaN
    with pytest.warns(NonFiniteInputWarning, match="y holds NaN"):
        trainer.fit(
            torch.ones(2, 1), y, batch_size=2, epochs=1, verbose=0,
            callbacks=[Odd(), JSONLogger(path)],
        )  # fmt: skip
    (record,) = strict_records(path)
    assert record == {
        "epoch": 0,
        "big": "Infinity",
        "loss": "NaN",
        "note": "ok",
        "small": "-Infinity",
        "values": [1.0, "NaN"],
    }
    assert math.isnan(float(record["loss"])) and float(record["big"]) == math.inf


def test_append_continues_and_default_replaces(tmp_path):
    path = tmp_path / "log.jsonl"
    trainer, x, y = make_trainer()
    trainer.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[JSONLogger(path)])
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[JSONLogger(path, append=True)])
    assert [r["epoch"] for r in strict_records(path)] == [0, 1, 0]
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[JSONLogger(path)])
    assert [r["epoch"] for r in strict_records(path)] == [0]


def test_lines_are_flushed_as_they_are_written(tmp_path):
    path = tmp_path / "log.jsonl"
    seen = []

    class ReadFile(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(len(path.read_text().splitlines()))

    trainer, x, y = make_trainer()
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[JSONLogger(path, batch_level=True), ReadFile()],
    )
    assert seen == [1, 2, 3, 5, 6, 7]


def test_resumed_training_gives_the_uninterrupted_file(tmp_path):
    reference, resumed = tmp_path / "reference.jsonl", tmp_path / "resumed.jsonl"
    trainer, x, y = make_trainer(seed=3)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[JSONLogger(reference, batch_level=True)],
    )
    saved = {}

    class Backup(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                saved["state"] = copy.deepcopy(self.trainer.checkpoint_state(epoch, logs))

    trainer, x, y = make_trainer(seed=3)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[JSONLogger(resumed, batch_level=True), Backup()],
    )
    assert len(strict_records(resumed)) == 8  # epoch 1 was written after the backup

    class Restore(Callback):
        def on_train_begin(self, logs=None):
            self.trainer.request_resume(saved["state"])

    trainer, x, y = make_trainer(seed=3)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[JSONLogger(resumed, batch_level=True), Restore()],
    )
    assert resumed.read_bytes() == reference.read_bytes()


def test_mid_epoch_resume_gives_the_uninterrupted_file(tmp_path):
    reference, resumed = tmp_path / "reference.jsonl", tmp_path / "resumed.jsonl"
    trainer, x, y = make_trainer(seed=4)
    trainer.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[JSONLogger(reference, batch_level=True)]
    )
    saved = {}

    class Backup(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (self.trainer.current_epoch, batch) == (1, 0):
                saved["state"] = copy.deepcopy(self.trainer.checkpoint_state())

    trainer, x, y = make_trainer(seed=4)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[JSONLogger(resumed, batch_level=True), Backup()],
    )

    class Restore(Callback):
        def on_train_begin(self, logs=None):
            self.trainer.request_resume(saved["state"])

    trainer, x, y = make_trainer(seed=4)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[JSONLogger(resumed, batch_level=True), Restore()],
    )
    assert resumed.read_bytes() == reference.read_bytes()


def test_state_round_trip_cuts_later_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    logger = JSONLogger(path)
    logger.on_train_begin({})
    logger.on_epoch_end(0, {"loss": 1.0})
    state = logger.state_dict()
    logger.on_epoch_end(1, {"loss": 0.5})
    logger.on_train_end({})
    assert state == {"length": len('{"epoch": 0, "loss": 1.0}\n')}
    fresh = JSONLogger(path)
    fresh.on_train_begin({})
    fresh.load_state_dict(state)
    assert path.read_text() == '{"epoch": 0, "loss": 1.0}\n'
    with pytest.warns(UserWarning, match="fewer than"):
        fresh.load_state_dict({"length": 1000})
    fresh.on_epoch_end(1, {"loss": 0.25})
    fresh.on_train_end({})
    assert [r["epoch"] for r in strict_records(path)] == [0, 1]


def test_only_the_main_process_writes(tmp_path):
    class WorkerTrainer(Trainer):
        is_main_process = False

    trainer = WorkerTrainer(torch.nn.Linear(1, 1), "sgd", "mse", device="cpu")
    path = tmp_path / "log.jsonl"
    trainer.fit(
        torch.ones(4, 1),
        torch.ones(4, 1),
        epochs=2,
        verbose=0,
        callbacks=[JSONLogger(path, batch_level=True)],
    )
    assert not path.exists()
