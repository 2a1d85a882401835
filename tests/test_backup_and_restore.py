"""BackupAndRestore: interrupted runs resume bit-identically; backups are managed safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from torchcallbacks import BackupAndRestore, Callback, Trainer

# A small training run. argv: work folder, save_freq, interruption points "kind@global_batch"
# (kind: raise, kill = SIGKILL, term = SIGTERM); each point fires once (a marker file
# remembers it), so running the script again after an interruption continues the run.
SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    from torchcallbacks import (BackupAndRestore, Callback, CSVLogger, EarlyStopping,
                                ModelCheckpoint, Trainer, seed_everything)

    work, save_freq = sys.argv[1], sys.argv[2]
    save_freq = save_freq if save_freq == "epoch" else int(save_freq)
    points = [p.split("@") for p in sys.argv[3:]]

    class Interrupt(Callback):
        first = True

        def on_train_batch_end(self, batch, logs=None):
            if self.first:  # where this process started training
                self.first = False
                with open(os.path.join(work, "starts.txt"), "a") as f:
                    f.write(f"{self.trainer.global_train_batch} ")
            for kind, at in points:
                marker = os.path.join(work, f"done-{kind}@{at}")
                if self.trainer.global_train_batch == int(at) and not os.path.exists(marker):
                    open(marker, "w").close()
                    if kind == "raise":
                        raise RuntimeError("interrupted")
                    os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGTERM)

    seed_everything(0)
    x = torch.randn(96, 8)
    y = (x[:, :2].sum(1, keepdim=True) > 0).float()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                torch.nn.Linear(16, 1), torch.nn.Sigmoid())
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
                      loss="binary_crossentropy", metrics=["accuracy"], device="cpu")
    stop = EarlyStopping(monitor="val_loss", min_delta=10.0, patience=100)
    best = ModelCheckpoint(os.path.join(work, "ckpt", "{epoch:02d}.pt"), monitor="val_loss",
                           mode="max", save_best_only=True, save_weights_only=True)
    callbacks = [BackupAndRestore(os.path.join(work, "backup"), save_freq=save_freq),
                 CSVLogger(os.path.join(work, "log.csv")), stop, best, Interrupt()]
    history = trainer.fit(x, y, epochs=6, batch_size=8, validation_split=0.25,
                          callbacks=callbacks, verbose=0)
    with open(os.path.join(work, "weights.bin"), "wb") as f:
        for tensor in model.state_dict().values():
            f.write(tensor.numpy().tobytes())
    with open(os.path.join(work, "result.json"), "w") as f:
        json.dump({"history": history.history, "epochs": history.epoch,
                   "stop": [stop.wait, stop.best, stop.best_epoch],
                   "best": [best.best, os.path.basename(best.best_model_path)],
                   "files": sorted(os.listdir(os.path.join(work, "ckpt"))),
                   "global_step": trainer.global_step}, f)
    """
)


def run(work, save_freq, *points):
    script = work / "train.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(work), str(save_freq), *points],
        capture_output=True,
        text=True,
        timeout=120,
    )


def outcome(work):
    return (
        (work / "weights.bin").read_bytes(),
        json.loads((work / "result.json").read_text()),
        (work / "log.csv").read_bytes(),
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("reference")
    result = run(work, "epoch")
    assert result.returncode == 0, result.stderr
    return outcome(work)


# 72 training samples in batches of 8: 9 batches per epoch, global batches 1-54.
@pytest.mark.parametrize(
    ("save_freq", "interruptions", "starts"),
    [
        # backups every 3 batches: resume mid-epoch after the last multiple of 3
        (3, [("raise@5", 1), ("kill@31", -signal.SIGKILL)], "1 4 31"),
        # epoch backups: the interrupted epoch is redone from its start
        ("epoch", [("kill@14", -signal.SIGKILL), ("raise@30", 1)], "1 10 28"),
        # SIGTERM: one last backup at the next batch boundary; during the last epoch, the
        # backup holds the finished run, and the rerun trains no batch
        ("epoch", [("term@20", -signal.SIGTERM), ("term@54", -signal.SIGTERM)], "1 22"),
        # SIGTERM during the last batch of an epoch: backup at the epoch boundary. The
        # backup of batch 40 is written in BackupAndRestore's own hook, before the callback
        # listed after it kills the process, so the rerun starts at batch 41
        (4, [("term@9", -signal.SIGTERM), ("kill@40", -signal.SIGKILL)], "1 10 41"),
    ],
)
def test_interrupted_run_resumes_bit_identically(
    tmp_path, reference, save_freq, interruptions, starts
):
    points = [point for point, _ in interruptions]
    for _, expected_code in interruptions:
        result = run(tmp_path, save_freq, *points)
        assert result.returncode == expected_code, result.stderr
        assert (tmp_path / "backup" / "latest.pt").exists()
    result = run(tmp_path, save_freq, *points)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "starts.txt").read_text().split() == starts.split()
    weights, summary, csv = outcome(tmp_path)
    ref_weights, ref_summary, ref_csv = reference
    assert summary == ref_summary  # History, EarlyStopping counter, ModelCheckpoint best/files
    assert csv == ref_csv
    assert weights == ref_weights
    assert summary["stop"][0] == 5  # the counter survived: one increment per epoch
    assert not (tmp_path / "backup").exists()


# -- in-process behaviour -------------------------------------------------------------------
class FailAt(Callback):
    def __init__(self, global_batch):
        super().__init__()
        self.global_batch = global_batch

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_train_batch == self.global_batch:
            raise RuntimeError("boom")


def make_trainer():
    torch.manual_seed(0)
    return Trainer(torch.nn.Linear(3, 1), optimizer="sgd", loss="mse", device="cpu")


def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(32, 3, generator=generator), torch.randn(32, 1, generator=generator)


def test_resume_then_a_later_fit_starts_at_epoch_zero(tmp_path):
    backup = tmp_path / "backup"
    x, y = data()
    trainer = make_trainer()
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(
            x,
            y,
            epochs=4,
            batch_size=8,
            callbacks=[BackupAndRestore(backup), FailAt(10)],
            verbose=0,
        )
    assert (backup / "latest.pt").exists()
    history = trainer.fit(
        x, y, epochs=4, batch_size=8, callbacks=[BackupAndRestore(backup), FailAt(-1)], verbose=0
    )
    assert history.epoch == [0, 1, 2, 3]  # epochs 0-1 restored from the backup, 2-3 trained
    assert trainer.global_step == 16
    assert not backup.exists()
    history = trainer.fit(
        x, y, epochs=2, batch_size=8, callbacks=[BackupAndRestore(backup), FailAt(-1)], verbose=0
    )
    assert history.epoch == [0, 1]


def test_delete_checkpoint_false_keeps_the_final_state(tmp_path):
    x, y = data()
    callback = BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
    make_trainer().fit(x, y, epochs=2, batch_size=8, callbacks=[callback], verbose=0)
    state = torch.load(tmp_path / "backup" / "latest.pt", weights_only=True)
    assert state["training"]["epoch"] == 2 and state["training"]["batch"] == 0


def test_other_files_in_backup_dir_are_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    x, y = data()
    make_trainer().fit(x, y, epochs=1, callbacks=[BackupAndRestore(tmp_path)], verbose=0)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_sigterm_handler_is_installed_during_fit_and_restored(tmp_path):
    seen = []

    class Probe(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    x, y = data()
    callback = BackupAndRestore(tmp_path / "b")
    make_trainer().fit(x, y, epochs=1, callbacks=[callback, Probe()], verbose=0)
    assert seen[0] == callback._on_sigterm
    assert signal.getsignal(signal.SIGTERM) is before


def test_after_a_failed_fit_sigterm_reaches_the_previous_handler(tmp_path):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        x, y = data()
        with pytest.raises(RuntimeError):
            make_trainer().fit(
                x,
                y,
                epochs=2,
                callbacks=[BackupAndRestore(tmp_path / "b"), FailAt(2)],
                verbose=0,
            )
        signal.raise_signal(signal.SIGTERM)  # no fit running: passed on, not swallowed
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_file_that_is_not_a_backup_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "latest.pt")
    x, y = data()
    with pytest.raises(ValueError, match="is not a BackupAndRestore backup"):
        make_trainer().fit(x, y, callbacks=[BackupAndRestore(tmp_path)], verbose=0)


def test_invalid_arguments_use_keras_messages():
    with pytest.raises(ValueError, match="Empty `backup_dir` argument passed"):
        BackupAndRestore("")
    for bad in ("batch", 0.15, 0, False):
        with pytest.raises(ValueError, match=r"Invalid value for argument `save_freq`. Received"):
            BackupAndRestore("b", save_freq=bad)
