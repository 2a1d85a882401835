"""CSVLogger writes Keras 3's CSV files byte for byte, through the real Trainer."""

import copy
import csv

import pytest
import torch

from torchcallbacks import Callback, CSVLogger, Trainer

HEADER = b"epoch,loss,mae,val_loss,val_mae\r\n"


def constant_trainer(target=2.0):
    """Predictions stay 0 (zero weight, lr 0): loss = target**2, mae = |target| exactly."""
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), "mse", ["mae"], "cpu")
    x = torch.ones(4, 1)
    return trainer, x, torch.full((4, 1), target)


def learning_trainer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    trainer = Trainer(model, "sgd", "mse", ["mae"], "cpu")
    x = torch.randn(24, 3)
    return trainer, x, x.sum(1, keepdim=True)


class AddLogs(Callback):
    """Puts extra values in the shared epoch logs, from ``first_epoch`` on."""

    def __init__(self, values, first_epoch=0):
        super().__init__()
        self.values, self.first_epoch = values, first_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.first_epoch:
            logs.update(self.values)


def test_fresh_file_without_validation_reserves_val_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"old content\r\n")
    trainer, x, y = constant_trainer()
    trainer.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[CSVLogger(path)])
    assert path.read_bytes() == HEADER + b"0,4.0,2.0,NA,NA\r\n1,4.0,2.0,NA,NA\r\n"


def test_validation_every_second_epoch_fills_na(tmp_path):
    path = tmp_path / "log.csv"
    trainer, x, y = constant_trainer()
    trainer.fit(
        x,
        y,
        batch_size=2,
        epochs=4,
        verbose=0,
        validation_data=(x, torch.ones(4, 1)),
        validation_freq=2,
        callbacks=[CSVLogger(str(path))],
    )
    assert path.read_bytes() == HEADER + (
        b"0,4.0,2.0,NA,NA\r\n1,4.0,2.0,1.0,1.0\r\n2,4.0,2.0,NA,NA\r\n3,4.0,2.0,1.0,1.0\r\n"
    )


def test_floats_are_written_with_repr(tmp_path):
    path = tmp_path / "log.csv"
    trainer, x, y = learning_trainer()
    history = trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        validation_split=0.25,
        callbacks=[CSVLogger(path)],
    ).history
    expected = HEADER + b"".join(
        f"{e},{history['loss'][e]!r},{history['mae'][e]!r},"
        f"{history['val_loss'][e]!r},{history['val_mae'][e]!r}\r\n".encode()
        for e in range(3)
    )
    assert path.read_bytes() == expected
    assert len(repr(history["loss"][0])) > 10  # really full precision, not rounded


def test_append_continues_without_second_header(tmp_path):
    # Keras's test: 1 epoch, then an append=True logger for 1 epoch, then that same
    # logger reused for 2 epochs: 5 lines, "epoch" once.
    path = tmp_path / "log.csv"
    trainer, x, y = constant_trainer()
    trainer.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[CSVLogger(path)])
    logger = CSVLogger(path, append=True)
    trainer.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[logger])
    trainer.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[logger])
    row0, row1 = b"0,4.0,2.0,NA,NA\r\n", b"1,4.0,2.0,NA,NA\r\n"
    assert path.read_bytes() == HEADER + row0 + row0 + row0 + row1


def test_append_to_missing_or_empty_file_writes_header(tmp_path):
    trainer, x, y = constant_trainer()
    missing, empty = tmp_path / "new" / "log.csv", tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for path in (missing, empty):
        trainer.fit(
            x, y, batch_size=4, epochs=1, verbose=0, callbacks=[CSVLogger(path, append=True)]
        )
        assert path.read_bytes() == HEADER + b"0,4.0,2.0,NA,NA\r\n"


def test_custom_separator(tmp_path):
    path = tmp_path / "log.tsv"
    trainer, x, y = constant_trainer()
    trainer.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        verbose=0,
        validation_data=(x, y),
        callbacks=[CSVLogger(path, separator="\t")],
    )
    assert path.read_bytes() == (
        b"epoch\tloss\tmae\tval_loss\tval_mae\r\n0\t4.0\t2.0\t4.0\t2.0\r\n1\t4.0\t2.0\t4.0\t2.0\r\n"
    )
    assert csv.Sniffer().sniff(path.read_text()).delimiter == "\t"


@pytest.mark.parametrize("separator", ["", ";;", 1])
def test_separator_must_be_one_character(tmp_path, separator):
    with pytest.raises(ValueError, match="separator must be a single character"):
        CSVLogger(tmp_path / "log.csv", separator=separator)


def test_iterables_text_and_late_keys_are_written_as_keras_does(tmp_path):
    path = tmp_path / "log.csv"
    trainer, x, y = constant_trainer()
    extra = AddLogs({"sizes": [1, 2], "note": "a,b", "shape": (3,)})
    late = AddLogs({"appears_later": 5.0}, first_epoch=1)
    trainer.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        verbose=0,
        validation_data=(x, y),
        callbacks=[extra, late, CSVLogger(path)],
    )
    row = b'4.0,2.0,"a,b","""[3]""","""[1, 2]""",4.0,2.0\r\n'
    assert path.read_bytes() == (
        b"epoch,loss,mae,note,shape,sizes,val_loss,val_mae\r\n0," + row + b"1," + row
    )
    assert list(csv.reader(path.open(newline="")))[1][4] == '"[3]"'


def test_rows_are_flushed_at_each_epoch_end(tmp_path):
    path = tmp_path / "log.csv"
    seen = []

    class ReadFile(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(path.read_bytes())

    trainer, x, y = constant_trainer()
    trainer.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[CSVLogger(path), ReadFile()])
    assert seen == [
        HEADER + b"0,4.0,2.0,NA,NA\r\n",
        HEADER + b"0,4.0,2.0,NA,NA\r\n1,4.0,2.0,NA,NA\r\n",
    ]


def test_load_state_dict_cuts_rows_written_after_the_state(tmp_path):
    path = tmp_path / "log.csv"
    states = {}

    class Snapshot(Callback):
        def __init__(self, logger):
            super().__init__()
            self.logger = logger

        def on_epoch_end(self, epoch, logs=None):
            states[epoch] = self.logger.state_dict()

    logger = CSVLogger(path)
    trainer, x, y = constant_trainer()
    trainer.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[logger, Snapshot(logger)])
    assert states[0] == {
        "keys": ["loss", "mae", "val_loss", "val_mae"],
        "length": len(HEADER) + len(b"0,4.0,2.0,NA,NA\r\n"),
    }
    restored = CSVLogger(path)
    restored.on_train_begin({})  # a new fit begins: must not lose the rows yet
    restored.load_state_dict(states[0])
    assert path.read_bytes() == HEADER + b"0,4.0,2.0,NA,NA\r\n"
    restored.on_epoch_end(1, {"loss": 1.5, "mae": 0.5, "val_loss": 0.25})
    restored.on_train_end({})
    assert path.read_bytes() == HEADER + b"0,4.0,2.0,NA,NA\r\n1,1.5,0.5,0.25,NA\r\n"


def test_resumed_training_gives_the_uninterrupted_file(tmp_path):
    """Resume from a state saved after epoch 1 of 4 (as BackupAndRestore does): rows the
    interrupted run wrote after the backup are cut, and the file ends equal to a run that
    was never interrupted."""
    reference, resumed = tmp_path / "reference.csv", tmp_path / "resumed.csv"
    trainer, x, y = learning_trainer(seed=1)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        verbose=0,
        shuffle=False,
        validation_split=0.25,
        callbacks=[CSVLogger(reference)],
    )
    saved = {}

    class Backup(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                # a copy, as a backup file is: the state holds the live tensors
                saved["state"] = copy.deepcopy(self.trainer.checkpoint_state(epoch, logs))

    trainer, x, y = learning_trainer(seed=1)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        shuffle=False,
        validation_split=0.25,
        callbacks=[CSVLogger(resumed), Backup()],
    )
    assert resumed.read_bytes().count(b"\r\n") == 4  # the "crashed" run wrote epoch 2 too

    class Restore(Callback):
        def on_train_begin(self, logs=None):
            self.trainer.request_resume(saved["state"])

    trainer, x, y = learning_trainer(seed=1)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        verbose=0,
        shuffle=False,
        validation_split=0.25,
        callbacks=[CSVLogger(resumed), Restore()],
    )
    assert resumed.read_bytes() == reference.read_bytes()


def test_only_the_main_process_writes(tmp_path):
    class WorkerTrainer(Trainer):
        is_main_process = False

    model = torch.nn.Linear(1, 1)
    trainer = WorkerTrainer(model, "sgd", "mse", device="cpu")
    path = tmp_path / "log.csv"
    trainer.fit(
        torch.ones(4, 1), torch.ones(4, 1), epochs=2, verbose=0, callbacks=[CSVLogger(path)]
    )
    assert not path.exists()
