"""ModelCheckpoint: file names, save_best_only, save_freq, top-k, formats, messages."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from torchcallbacks import Callback, CSVLogger, Trainer, load_checkpoint
from torchcallbacks.callbacks.model_checkpoint import ModelCheckpoint


class Script(Callback):
    """Puts ``values[epoch]`` in the epoch logs as ``score`` (the logs dict is shared, so a
    callback listed after this one sees it)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]


class ListFiles(Callback):
    def __init__(self, folder):
        super().__init__()
        self.folder = folder
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(sorted(os.listdir(self.folder)))


def make_trainer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return Trainer(model, optimizer="sgd", loss="mse", device="cpu")


def data(n=32):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator)


def fit(callbacks, epochs=3, validation_split=0.0, batch_size=8, trainer=None):
    trainer = trainer or make_trainer()
    x, y = data()
    history = trainer.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        callbacks=callbacks,
        verbose=0,
    )
    return trainer, history


def test_file_names_follow_the_template_with_one_based_epoch_and_logs(tmp_path):
    template = str(tmp_path / "sub" / "{epoch:02d}-{loss:.3f}-{val_loss:.2f}.pt")
    _, history = fit([ModelCheckpoint(template)], validation_split=0.25)
    expected = {
        f"{e + 1:02d}-{history.history['loss'][e]:.3f}-{history.history['val_loss'][e]:.2f}.pt"
        for e in range(3)
    }
    assert set(os.listdir(tmp_path / "sub")) == expected


def test_missing_template_key_names_it_and_the_available_keys(tmp_path):
    checkpoint = ModelCheckpoint(str(tmp_path / "{epoch}-{val_acc:.2f}.pt"))
    with pytest.raises(
        KeyError, match=r"`val_acc` is not in the logs. Available keys: epoch, loss"
    ):
        fit([checkpoint], epochs=1)
    batch_level = ModelCheckpoint(str(tmp_path / "{val_loss}.pt"), save_freq=2)
    with pytest.raises(KeyError, match="validation results exist at epoch ends"):
        fit([batch_level], epochs=1, validation_split=0.25)


def test_save_best_only_writes_only_on_improvement_with_keras_messages(tmp_path, capsys):
    scores = [0.5, 0.7, 0.4, 0.4, 0.6]
    checkpoint = ModelCheckpoint(
        str(tmp_path / "{epoch}.pt"),
        monitor="score",
        mode="min",
        save_best_only=True,
        save_weights_only=True,
        verbose=1,
    )
    fit([Script(scores), checkpoint], epochs=5)
    assert sorted(os.listdir(tmp_path)) == ["1.pt", "3.pt"]
    assert checkpoint.best == checkpoint.best_score == 0.4
    assert checkpoint.best_model_path == str(tmp_path / "3.pt")
    p1, p3 = tmp_path / "1.pt", tmp_path / "3.pt"
    assert capsys.readouterr().out == (
        f"\nEpoch 1: score improved from None to 0.50000, saving model to {p1}\n"
        f"\nEpoch 1: finished saving model to {p1}\n"
        "\nEpoch 2: score did not improve from 0.50000\n"
        f"\nEpoch 3: score improved from 0.50000 to 0.40000, saving model to {p3}\n"
        f"\nEpoch 3: finished saving model to {p3}\n"
        "\nEpoch 4: score did not improve from 0.40000\n"
        "\nEpoch 5: score did not improve from 0.40000\n"
    )


def test_plain_saving_messages_and_max_mode(tmp_path, capsys):
    checkpoint = ModelCheckpoint(str(tmp_path / "m.pt"), save_weights_only=True, verbose=1)
    fit([checkpoint], epochs=2)
    path = tmp_path / "m.pt"
    assert capsys.readouterr().out == (
        f"\nEpoch 1: saving model to {path}\n\nEpoch 1: finished saving model to {path}\n"
        f"\nEpoch 2: saving model to {path}\n\nEpoch 2: finished saving model to {path}\n"
    )
    assert checkpoint.best_model_path == str(path)
    best = ModelCheckpoint(str(tmp_path / "acc{epoch}.pt"), monitor="acc", save_best_only=True)
    fit([Script([0.5, 0.4, 0.9]), LogsAs("acc"), best])
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("acc")) == ["acc1.pt", "acc3.pt"]


class LogsAs(Callback):
    """Copies ``score`` to another key."""

    def __init__(self, key):
        super().__init__()
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = logs["score"]


def test_missing_monitor_warns_and_does_not_save(tmp_path):
    checkpoint = ModelCheckpoint(str(tmp_path / "{epoch}.pt"), save_best_only=True)
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available"):
        fit([checkpoint], epochs=2)
    assert os.listdir(tmp_path) == []


def test_initial_value_threshold_is_the_first_best(tmp_path):
    checkpoint = ModelCheckpoint(
        str(tmp_path / "{epoch}.pt"),
        monitor="score",
        mode="min",
        save_best_only=True,
        initial_value_threshold=0.45,
    )
    fit([Script([0.5, 0.45, 0.3]), checkpoint])
    assert os.listdir(tmp_path) == ["3.pt"]
    never = ModelCheckpoint(
        str(tmp_path / "n{epoch}.pt"),
        monitor="score",
        mode="max",
        save_best_only=True,
        initial_value_threshold=1.0,
    )
    fit([Script([0.5, 0.9, 0.3]), never])
    assert os.listdir(tmp_path) == ["3.pt"]


def test_save_freq_int_saves_every_n_batches_across_epochs(tmp_path):
    # 32 samples / batch 8 = 4 batches per epoch, 12 in all: saves at global batches 3, 6, 9, 12.
    checkpoint = ModelCheckpoint(str(tmp_path / "{epoch}-{batch}.pt"), save_freq=3)
    assert checkpoint.implements_batch_hooks("train")
    assert not ModelCheckpoint("m.pt").implements_batch_hooks("train")
    fit([checkpoint], epochs=3)
    names = ["1-3.pt", "2-2.pt", "3-1.pt", "3-4.pt"]
    assert sorted(os.listdir(tmp_path)) == names
    steps = [load_checkpoint(tmp_path / name)["global_step"] for name in names]
    assert steps == [3, 6, 9, 12]


def test_save_freq_int_with_save_best_only_uses_batch_logs(tmp_path):
    # Keras 3 crashes here (monitor op resolved lazily); the port resolves it at train begin.
    checkpoint = ModelCheckpoint(
        str(tmp_path / "{epoch}-{batch}.pt"), monitor="loss", save_best_only=True, save_freq=1
    )
    fit([checkpoint], epochs=1)
    assert "1-1.pt" in os.listdir(tmp_path)
    assert isinstance(checkpoint.best, float)
    assert os.path.exists(checkpoint.best_model_path)


def test_save_top_k_keeps_exactly_the_k_best_files(tmp_path):
    scores = [0.5, 0.3, 0.6, 0.2, 0.4, 0.1]
    checkpoint = ModelCheckpoint(
        str(tmp_path / "{epoch}.pt"),
        monitor="score",
        mode="min",
        save_top_k=2,
        save_weights_only=True,
    )
    listing = ListFiles(tmp_path)
    fit([Script(scores), checkpoint, listing], epochs=6)
    assert listing.seen == [
        ["1.pt"],
        ["1.pt", "2.pt"],
        ["1.pt", "2.pt"],
        ["2.pt", "4.pt"],
        ["2.pt", "4.pt"],
        ["4.pt", "6.pt"],
    ]
    assert checkpoint.kept == [[0.1, str(tmp_path / "6.pt")], [0.2, str(tmp_path / "4.pt")]]
    assert checkpoint.best_model_path == str(tmp_path / "6.pt")
    assert checkpoint.best_score == 0.1


def test_save_top_k_with_a_fixed_name_keeps_one_file(tmp_path):
    checkpoint = ModelCheckpoint(
        str(tmp_path / "best.pt"), monitor="score", mode="max", save_top_k=3
    )
    fit([Script([0.1, 0.5, 0.2]), checkpoint])
    assert os.listdir(tmp_path) == ["best.pt"]
    assert checkpoint.kept == [[0.2, str(tmp_path / "best.pt")]]


@pytest.mark.parametrize("ext", ["pt", "h5"])
@pytest.mark.parametrize("weights_only", [True, False])
def test_checkpoint_loads_into_a_fresh_model_with_identical_predictions(
    tmp_path, ext, weights_only
):
    path = tmp_path / f"model.{ext}"
    trainer, _ = fit([ModelCheckpoint(str(path), save_weights_only=weights_only)])
    fresh = make_trainer(seed=5)
    optimizer = None if weights_only else fresh.optimizer
    state = load_checkpoint(path, fresh.model, optimizer)
    x, _ = data()
    assert torch.equal(fresh.predict(x, verbose=0), trainer.predict(x, verbose=0))
    if not weights_only:
        assert state["epoch"] == 2 and state["global_step"] == 12
        assert set(state["logs"]) == {"loss"}


def test_period_is_a_deprecated_epoch_interval(tmp_path):
    with pytest.warns(DeprecationWarning, match="`period` argument is deprecated"):
        checkpoint = ModelCheckpoint(str(tmp_path / "{epoch}.pt"), period=2)
    fit([checkpoint], epochs=5)
    assert sorted(os.listdir(tmp_path)) == ["2.pt", "4.pt"]


@pytest.mark.parametrize("bad", ["batch", 0.5, 0, True])
def test_invalid_save_freq(bad):
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        ModelCheckpoint("m.pt", save_freq=bad)


def test_invalid_save_top_k():
    with pytest.raises(ValueError, match="save_top_k"):
        ModelCheckpoint("m.pt", save_top_k=0)


def test_existing_directory_as_filepath_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError, match="Please specify a non-directory filepath"):
        fit([ModelCheckpoint(str(tmp_path / "d"))], epochs=1)


def test_best_is_reset_each_fit_and_round_trips_through_state_dict(tmp_path):
    checkpoint = ModelCheckpoint(
        str(tmp_path / "{epoch}.pt"), monitor="score", mode="min", save_best_only=True
    )
    trainer, _ = fit([Script([0.5, 0.2, 0.3]), checkpoint])
    state = checkpoint.state_dict()
    assert state["best"] == 0.2
    other = ModelCheckpoint(str(tmp_path / "x.pt"), monitor="score", save_best_only=True)
    other.load_state_dict(state)
    assert other.best == 0.2 and other.best_model_path == str(tmp_path / "2.pt")
    fit([Script([0.9]), checkpoint], epochs=1, trainer=trainer)
    assert checkpoint.best == 0.9  # a new fit starts from initial_value_threshold (None)


def test_only_the_main_process_writes_and_prints(tmp_path, monkeypatch, capsys):
    trainer = make_trainer()
    monkeypatch.setattr(type(trainer), "is_main_process", property(lambda self: False))
    fit([ModelCheckpoint(str(tmp_path / "{epoch}.pt"), verbose=1)], trainer=trainer)
    assert os.listdir(tmp_path) == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("ext", ["pt", "h5"])
def test_full_checkpoint_resumes_training_bit_identically(tmp_path, ext):
    def dropout_trainer():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1)
        )
        return Trainer(model, optimizer="adam", loss="mse", device="cpu")

    x, y = data()
    torch.manual_seed(3)
    trainer = dropout_trainer()
    checkpoint = ModelCheckpoint(str(tmp_path / f"{{epoch}}.{ext}"))
    trainer.fit(x, y, epochs=3, batch_size=8, callbacks=[checkpoint], verbose=0)
    resumed = dropout_trainer()
    # Resumed without the ModelCheckpoint: its saved state is named in a warning; History's
    # state is matched by type and continues.
    with pytest.warns(UserWarning, match="ModelCheckpoint #1"):
        history = resumed.fit(
            x, y, epochs=3, batch_size=8, resume_from=str(tmp_path / f"2.{ext}"), verbose=0
        )
    assert history.epoch == [0, 1, 2]
    for a, b in zip(trainer.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_hdf5_path_needs_h5py_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[h5\]"'):
        ModelCheckpoint("model.h5")
    ModelCheckpoint("model.pt")


def test_resume_from_a_full_checkpoint_continues_history_and_csv_exactly(tmp_path):
    """The file is written once the callbacks after it (CSVLogger, History) have handled
    the epoch, so resuming from epoch 2's file rebuilds the uninterrupted run's results."""
    x, y = data()

    def run(**fit_args):
        trainer = make_trainer()
        callbacks = [
            ModelCheckpoint(str(tmp_path / "ckpt/{epoch}.pt")),
            CSVLogger(str(tmp_path / "log.csv")),
        ]
        history = trainer.fit(
            x, y, epochs=4, batch_size=8, callbacks=callbacks, verbose=0, **fit_args
        )
        return trainer, history

    uninterrupted, expected = run()
    expected_csv = (tmp_path / "log.csv").read_bytes()
    resumed, history = run(resume_from=str(tmp_path / "ckpt/2.pt"))
    assert history.epoch == [0, 1, 2, 3]
    assert history.history == expected.history
    assert (tmp_path / "log.csv").read_bytes() == expected_csv
    for a, b in zip(uninterrupted.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
