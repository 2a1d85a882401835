"""Faults reproduced for real: exact resume with a seeded DataLoader, backups written in
their own hook, damaged files, a full disk (a tiny tmpfs), read-only folders, a trickling
HTTP server on 127.0.0.1, and bad arguments; nothing saved is lost and every error names
the file or argument."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from torchcallbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    EarlyStopping,
    JSONLogger,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
    RemoteMonitor,
    TensorBoard,
    Trainer,
    load_checkpoint,
    seed_everything,
)
from torchcallbacks.checkpoints.files import (
    CheckpointFileError,
    UnsafeCheckpointError,
    save_checkpoint,
    save_weights,
)


# -- helpers ---------------------------------------------------------------------------------
def dropout_model(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, width), torch.nn.Dropout(0.3), torch.nn.Linear(width, 1)
    )


def data(n: int = 40):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(n, 4, generator=generator)
    return x, x[:, :1] * 2 - x[:, 1:2]


class Interrupt(Callback):
    """Raises at the end of ``epoch`` (or of global batch ``batch``), once."""

    def __init__(self, epoch: int | None = None, batch: int | None = None) -> None:
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch is not None and self.trainer.global_train_batch == self.batch:
            raise KeyboardInterrupt("interrupted")

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("interrupted")


class Batches(Callback):
    """Counts the training batches run (to show that an error came before any)."""

    count = 0

    def on_train_batch_end(self, batch, logs=None):
        Batches.count += 1


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in model.state_dict().values()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@contextlib.contextmanager
def tmpfs(path, size: str = "64k", read_only: bool = False):
    """A real tmpfs of ``size`` mounted at ``path`` (needs root; skips otherwise)."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- 1. exact resume with a seeded DataLoader --------------------------------------------------
def loader_run(work, callbacks_after=(), save_freq="epoch", interrupt=None):
    """The docs' recipe: a DataLoader with generator=seed_everything(42); a fresh script run."""
    generator = seed_everything(42)
    x, y = data(32)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True, generator=generator
    )
    model = dropout_model()
    trainer = Trainer(model, optimizer="adam", loss="mse", device="cpu")
    callbacks = [BackupAndRestore(str(work / "backup"), save_freq=save_freq), *callbacks_after]
    if interrupt is not None:
        callbacks.append(interrupt)
    history = trainer.fit(loader, epochs=4, callbacks=callbacks, verbose=0)
    return weights(model), history


@pytest.mark.parametrize(
    ("save_freq", "interrupt"),
    [("epoch", {"epoch": 1}), (3, {"batch": 10})],
    ids=["epoch-backup", "mid-epoch-backup"],
)
def test_resume_with_a_seeded_dataloader_is_bit_identical(tmp_path, save_freq, interrupt):
    reference, reference_history = loader_run(tmp_path / "reference", save_freq=save_freq)
    with pytest.raises(KeyboardInterrupt):
        loader_run(tmp_path / "run", save_freq=save_freq, interrupt=Interrupt(**interrupt))
    resumed, history = loader_run(tmp_path / "run", save_freq=save_freq)
    assert history.history == reference_history.history
    assert same(resumed, reference)


# -- 2. backups in BackupAndRestore.on_epoch_end; callback states matched by type ------------
def tensor_run(work, callbacks, epochs=4):
    seed_everything(0)
    x, y = data()
    model = dropout_model()
    trainer = Trainer(model, optimizer="adam", loss="mse", device="cpu")
    history = trainer.fit(
        x, y, epochs=epochs, batch_size=8, validation_split=0.25, callbacks=callbacks, verbose=0
    )
    return weights(model), history


def test_backup_is_written_before_a_later_callback_fails_and_history_continues(tmp_path):
    reference, reference_history = tensor_run(tmp_path / "ref", [])
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        tensor_run(tmp_path, [BackupAndRestore(backup), Interrupt(epoch=1)])
    # The backup of epoch 1 was written in BackupAndRestore.on_epoch_end, before the failure
    # (Keras's behaviour): the rerun starts at epoch 2 and History still has every epoch.
    started = []
    record = LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    resumed, history = tensor_run(tmp_path, [BackupAndRestore(backup), record])
    assert started == [2, 3]
    assert history.epoch == [0, 1, 2, 3]
    assert history.history == reference_history.history
    assert same(resumed, reference)


def test_callback_states_are_matched_by_type_and_unmatched_ones_named(tmp_path):
    backup = str(tmp_path / "backup")
    stop = EarlyStopping(monitor="val_loss", min_delta=100.0, patience=10)
    reference_stop = EarlyStopping(monitor="val_loss", min_delta=100.0, patience=10)
    _, reference_history = tensor_run(tmp_path / "ref", [reference_stop])
    first = [BackupAndRestore(backup), CSVLogger(str(tmp_path / "a.csv")), stop, Interrupt(1)]
    with pytest.raises(KeyboardInterrupt):
        tensor_run(tmp_path, first)
    assert stop.wait == 1
    # The rerun adds a callback in front and drops the CSVLogger: positions all differ.
    stop = EarlyStopping(monitor="val_loss", min_delta=100.0, patience=10)
    rerun = [LambdaCallback(), BackupAndRestore(backup), stop]
    with pytest.warns(UserWarning, match=r"CSVLogger #1 .*not restored"):
        _, history = tensor_run(tmp_path, rerun)
    assert stop.wait == reference_stop.wait == 3
    assert history.history == reference_history.history


def test_the_interrupted_epoch_end_is_replayed_with_one_shared_logs_dict(tmp_path):
    """The failure comes after the backup of epoch 1, in the same epoch end: on resume the
    callbacks listed after BackupAndRestore finish that epoch end, and the "lr" that
    ReduceLROnPlateau adds to the logs reaches the CSVLogger's row, as in an unbroken run."""

    def callbacks(work, *extra):
        plateau = ReduceLROnPlateau(monitor="val_loss", min_delta=100.0, patience=1)
        return [BackupAndRestore(str(work / "backup")), plateau, CSVLogger(str(work / "log.csv")),
                *extra]  # fmt: skip

    tensor_run(tmp_path / "ref", callbacks(tmp_path / "ref"))
    with pytest.raises(KeyboardInterrupt):
        tensor_run(tmp_path, callbacks(tmp_path, Interrupt(epoch=1)))
    tensor_run(tmp_path, callbacks(tmp_path))
    expected = (tmp_path / "ref" / "log.csv").read_bytes()
    assert b",NA" not in expected.split(b"\n", 1)[1]  # every row has its lr
    assert (tmp_path / "log.csv").read_bytes() == expected


def test_a_missing_best_file_is_forgotten_with_a_warning_and_written_again(tmp_path):
    backup = str(tmp_path / "backup")

    def callbacks(*extra):
        best = ModelCheckpoint(
            str(tmp_path / "ckpt" / "{epoch:02d}.pt"), monitor="loss", save_best_only=True
        )
        return best, [best, BackupAndRestore(backup), *extra]

    best, first = callbacks(Interrupt(epoch=2))
    with pytest.raises(KeyboardInterrupt):
        tensor_run(tmp_path, first)
    lost = best.best_model_path
    os.remove(lost)
    best, rerun = callbacks()
    with pytest.warns(UserWarning, match=rf"{os.path.basename(lost)}.*no longer exist"):
        tensor_run(tmp_path, rerun)
    assert best.best_model_path is not None and os.path.exists(best.best_model_path)


# -- 3, 6, 7. a full disk (a real 64 KiB tmpfs) -----------------------------------------------
@pytest.mark.parametrize("name", ["model.h5", "model.pt", "full.pt"])
def test_a_full_disk_raises_naming_the_file_and_keeps_the_previous_one(tmp_path, name):
    pytest.importorskip("h5py")
    small, big = torch.nn.Linear(4, 1), torch.nn.Linear(200, 200)  # 160 KiB of weights
    with tmpfs(tmp_path / "disk") as disk:
        path = disk / name
        save_weights(small, path)
        before = path.read_bytes()
        with pytest.raises(OSError) as caught:
            if name == "full.pt":
                save_checkpoint(path, {"format": "x", "model": big.state_dict()})
            else:
                save_weights(big, path)
        assert caught.value.errno == errno.ENOSPC
        assert str(path) in str(caught.value) and "No space left on device" in str(caught.value)
        assert path.read_bytes() == before
        assert os.listdir(disk) == [name]  # no temporary file left
        fresh = torch.nn.Linear(4, 1)
        load_checkpoint(path, fresh)
        assert same(weights(fresh), weights(small))


def test_h5_on_a_full_disk_does_not_crash_the_process(tmp_path):
    """Used to end the process with a segfault (rc 139): run it in a child to see."""
    pytest.importorskip("h5py")
    with tmpfs(tmp_path / "disk") as disk:
        script = (
            "import torch, sys\nfrom torchcallbacks.checkpoints.files import save_weights\n"
            "try:\n    save_weights(torch.nn.Linear(200, 200), sys.argv[1])\n"
            "except OSError as error:\n    print(error)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(disk / "m.h5")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "m.h5" in result.stdout and "No space left on device" in result.stdout
        assert os.listdir(disk) == []


@pytest.mark.parametrize("logger", [JSONLogger, CSVLogger])
def test_a_log_on_a_full_disk_keeps_whole_lines_and_names_the_file(tmp_path, logger):
    with tmpfs(tmp_path / "disk", size="20k") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (16 * 1024))  # leaves one 4 KiB page
        path = disk / "log.txt"
        # Long keys make each line long, so one of them is cut part way by the full device.
        metrics = {f"metric_with_a_long_name_{i}": (lambda p, t: p.mean()) for i in range(40)}
        model = torch.nn.Linear(4, 1)
        trainer = Trainer(model, "sgd", "mse", metrics, device="cpu")
        x, y = data()
        kwargs = {"batch_level": True} if logger is JSONLogger else {}
        with pytest.raises(OSError) as caught:
            trainer.fit(
                x, y, epochs=200, batch_size=4, callbacks=[logger(path, **kwargs)], verbose=0
            )
        assert caught.value.errno == errno.ENOSPC and str(path) in str(caught.value)
        text = path.read_text()
        assert text and text.endswith("\n")
        if logger is JSONLogger:
            assert all(json.loads(line) for line in text.splitlines())


# -- 5, 8. damaged files: errors name the file; the model is left as it was -------------------
def damaged_files(folder):
    model = torch.nn.Linear(4, 1)
    save_weights(model, folder / "good.pt")
    good_pt = (folder / "good.pt").read_bytes()
    files = {
        "empty.pt": (b"", "is empty"),
        "empty.h5": (b"", "is empty"),
        "random.h5": (bytes(range(7, 250)) * 3, "is not a checkpoint"),
        "random.pt": (bytes(range(7, 250)) * 3, "is not a checkpoint"),
        "text.h5": (b"hello, this is a text file\n", "is not a checkpoint"),
        "text.pt": (b"epoch,loss\n0,0.5\n", "is not a checkpoint"),
        "truncated.pt": (good_pt[: len(good_pt) // 2], "truncated or damaged"),
    }
    try:
        import h5py  # noqa: F401

        save_weights(model, folder / "good.h5")
        good_h5 = (folder / "good.h5").read_bytes()
        files["truncated.h5"] = (good_h5[: len(good_h5) // 2], "damaged HDF5")
    except ImportError:
        pass
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    return {name: expected for name, (_, expected) in files.items()}


def test_damaged_files_give_errors_that_name_the_file_and_change_nothing(tmp_path):
    trainer = Trainer(torch.nn.Linear(4, 1), "adam", "mse", device="cpu")
    before = weights(trainer.model)
    for name, expected in damaged_files(tmp_path).items():
        path = str(tmp_path / name)
        with pytest.raises(CheckpointFileError) as caught:
            trainer.load_weights(path)
        message = str(caught.value)
        assert path in message and expected in message, message
        assert "weights_only=False" not in message  # never advised for a non-pickle
        assert same(weights(trainer.model), before)
        with pytest.raises(CheckpointFileError, match=expected):
            trainer.fit(torch.randn(8, 4), torch.randn(8, 1), resume_from=path, verbose=0)


class Payload:
    """Any class: unpickling it would run code of the file's choosing."""


def test_a_refused_pickle_is_reported_as_such(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "object": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        load_checkpoint(path)


def test_failed_loads_leave_model_and_optimizer_untouched(tmp_path):
    source = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    save_weights(source, tmp_path / "weights.pt")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.Adam(model.parameters())
    before = weights(model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "weights.pt", model, optimizer)
    assert same(weights(model), before)
    # Another architecture: the first layer's shapes match, the second's do not.
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    before = weights(other)
    with pytest.raises(CheckpointFileError, match=r"weights\.pt.*other shapes"):
        load_checkpoint(tmp_path / "weights.pt", other)
    assert same(weights(other), before)


def test_a_damaged_backup_names_the_file_and_how_to_start_over(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "latest.pt").write_bytes(b"")
    Batches.count = 0
    with pytest.raises(CheckpointFileError, match=r"latest\.pt.*is empty.*Delete it"):
        tensor_run(tmp_path, [BackupAndRestore(str(tmp_path / "backup")), Batches()])
    assert Batches.count == 0


# -- point 9 of issue 14: output paths are checked before any training ------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda folder: CSVLogger(str(folder / "logs" / "log.csv")),
        lambda folder: JSONLogger(str(folder / "log.jsonl")),
        lambda folder: ModelCheckpoint(str(folder / "ckpt" / "{epoch}.pt")),
        lambda folder: ModelCheckpoint(str(folder / "model.pt")),
        lambda folder: BackupAndRestore(str(folder / "backup")),
        lambda folder: TensorBoard(str(folder / "tb")),
    ],
    ids=["csv", "json", "checkpoint-template", "checkpoint", "backup", "tensorboard"],
)
def test_an_unwritable_output_path_fails_before_any_training(tmp_path, make):
    pytest.importorskip("tensorboard")
    with tmpfs(tmp_path / "readonly", read_only=True) as folder:
        Batches.count = 0
        with pytest.raises(OSError, match=str(folder)) as caught:
            tensor_run(tmp_path, [make(folder), Batches()])
        assert caught.value.errno == errno.EROFS
        assert Batches.count == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    Batches.count = 0
    with pytest.raises(NotADirectoryError, match="a-file"):
        tensor_run(tmp_path, [make(blocker), Batches()])
    assert Batches.count == 0


# -- ModelCheckpoint's auto mode and templates ------------------------------------------------
def test_checkpoint_monitor_of_unknown_direction_asks_for_a_mode(tmp_path):
    Batches.count = 0
    checkpoint = ModelCheckpoint(str(tmp_path / "m.pt"), monitor="score")
    with pytest.raises(ValueError, match=r"mode='min'"):
        tensor_run(tmp_path, [checkpoint, Batches()])
    assert Batches.count == 0


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("m-{val_loss:d}.pt", r"\{val_loss:d\} cannot format val_loss, a float"),
        ("{epoch.pt", "not a valid path template"),
        ("model-{}.pt", r"placeholder \{\} needs the name"),
    ],
)
def test_bad_checkpoint_templates_fail_at_construction(template, expected):
    with pytest.raises(ValueError, match=expected):
        ModelCheckpoint(template)


def test_a_template_may_name_any_logged_value(tmp_path):
    """A metric object named "top-5" logs "top-5": str.format takes that name, as Keras does."""
    checkpoint = ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{top-5:.2f}.pt"))

    def top5(y_pred, y_true):
        return torch.tensor(0.25)

    top5.__name__ = "top-5"
    trainer = Trainer(torch.nn.Linear(4, 1), "adam", "mse", metrics=[top5], device="cpu")
    trainer.fit(torch.randn(8, 4), torch.randn(8, 1), epochs=1, callbacks=[checkpoint], verbose=0)
    assert os.listdir(tmp_path) == ["m-01-0.25.pt"]


def test_a_folder_that_is_no_checkpoint_is_named_as_such(tmp_path):
    (tmp_path / "plain").mkdir()
    trainer = Trainer(torch.nn.Linear(4, 1), "adam", "mse", device="cpu")
    with pytest.raises(CheckpointFileError, match=r"plain'? is a directory but not a sharded"):
        trainer.load_weights(tmp_path / "plain")


# -- RemoteMonitor ----------------------------------------------------------------------------
def test_remote_monitor_without_requests_raises_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "requests", None)  # makes `import requests` fail
    with pytest.raises(ImportError, match=r"torchcallbacks\[remote\]"):
        RemoteMonitor()


class TrickleServer:
    """Answers every POST slowly on 127.0.0.1: one byte every 50 ms (10 s in all), in the
    headers (``where="headers"``) or in the body; notes whether the client hung up."""

    def __init__(self, where: str) -> None:
        self.sent, self.cut_off, self.release = [], threading.Event(), threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                if where == "body":
                    self.wfile.write(b"Content-Length: 200\r\n\r\n")
                else:
                    self.wfile.write(b"X-Slow: ")
                try:
                    for _ in range(200):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        outer.sent.append(1)
                        if outer.release.wait(0.05):
                            return
                except OSError:  # the client closed the connection
                    outer.cut_off.set()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_remote_monitor_timeout_bounds_a_trickling_answer(where):
    server = TrickleServer(where)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, history = tensor_run(None, [RemoteMonitor(root=server.root, timeout=0.3)], 2)
        sent_when_done = len(server.sent)
        messages = [str(w.message) for w in caught if "RemoteMonitor" in str(w.message)]
        assert history.epoch == [0, 1]
        # Training went on long before the slow answers (10 s each) were over.
        assert sent_when_done < 200
        if where == "headers":  # no status within the timeout: one warning for the fit
            assert messages == [
                f"Could not reach RemoteMonitor root server at {server.root}: no answer "
                "within 0.3 seconds"
            ]
        else:  # the status came in time; the slow body is not waited for
            assert messages == []
            assert server.cut_off.wait(5)
    finally:
        server.close()


# -- 9. malformed calls fail before training, naming the argument ----------------------------
def bad_call(name):
    x, y = data(16)
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:0], y[:0]))
    return {
        "epochs": ({"x": x, "y": y, "epochs": -3}, "epochs=-3"),
        "steps_per_epoch": ({"x": x, "y": y, "steps_per_epoch": 0}, "steps_per_epoch=0"),
        "batch_size": ({"x": x, "y": y, "batch_size": 8.5}, "batch_size=8.5"),
        "no y": ({"x": x}, "no y, but the loss 'mse' needs targets"),
        "empty x": ({"x": x[:0], "y": y[:0]}, "x is empty"),
        "empty loader": ({"x": empty}, "x is empty .a DataLoader"),
        "empty validation": (
            {"x": x, "y": y, "validation_data": (x[:0], y[:0])},
            "validation_data is empty",
        ),
    }[name]


@pytest.mark.parametrize(
    "name",
    [
        "epochs",
        "steps_per_epoch",
        "batch_size",
        "no y",
        "empty x",
        "empty loader",
        "empty validation",
    ],
)
def test_malformed_calls_fail_before_training_naming_the_argument(name):
    arguments, expected = bad_call(name)
    trainer = Trainer(torch.nn.Linear(4, 1), "sgd", "mse", device="cpu")
    Batches.count = 0
    with pytest.raises(ValueError, match=expected):
        trainer.fit(**arguments, verbose=0, callbacks=[Batches()])
    assert Batches.count == 0


def test_non_finite_inputs_are_reported_once_and_can_be_silenced():
    from torchcallbacks.checks import NonFiniteInputWarning

    x, y = data(16)
    x[5, 2] = float("nan")
    x[9, 0] = float("inf")
    trainer = Trainer(torch.nn.Linear(4, 1), "sgd", "mse", device="cpu")
    with pytest.warns(NonFiniteInputWarning, match="2 sample.*first at index 5") as caught:
        trainer.fit(x, y, epochs=2, verbose=0)
    assert len([w for w in caught if w.category is NonFiniteInputWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", NonFiniteInputWarning)
        trainer.fit(x, y, epochs=1, verbose=0)


def test_missing_values_in_a_pandas_frame_are_reported():
    from torchcallbacks.checks import NonFiniteInputWarning

    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"a": [0.5, 1.0, 2.0, 3.0], "count": pd.array([1, 2, None, 3], dtype="Int64")}
    )
    trainer = Trainer(torch.nn.Linear(2, 1), "sgd", "mse", device="cpu")
    with pytest.warns(NonFiniteInputWarning, match="1 sample.*first at index 2"):
        trainer.fit(frame, frame["a"], epochs=1, verbose=0)


def test_a_misspelt_monitor_is_named_with_the_closest_logged_name():
    x, y = data(16)
    trainer = Trainer(torch.nn.Linear(4, 1), "sgd", "mse", ["mae"], device="cpu")
    expected = r"looks misspelled: 'val_los' is not a metric .*Did you mean 'val_loss'"
    with pytest.raises(ValueError, match=expected) as caught:
        trainer.fit(
            x, y, validation_split=0.25, callbacks=[EarlyStopping(monitor="val_los")], verbose=0
        )
    assert "mode=" not in str(caught.value)  # the fix is the name, not a mode
