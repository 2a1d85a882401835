"""LightningModules across runs: the checkpoint hooks and every optimizer's and scheduler's
state in full checkpoints and backups (an interrupted manual-optimization run resumes
exactly), the user's Lightning callbacks and their state, Lightning's built-in callbacks
refused by name, and the one warning for hooks this Trainer does not call."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback as LightningCallback
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.callbacks import LearningRateMonitor
from test_backup_and_restore import FailAt
from test_lightning_oracle import GAN, Boring, lightning_trainer
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import BackupAndRestore, Trainer, load_checkpoint


class Counting(LightningCallback):
    """A user's Lightning callback with state: the batches it has seen."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state_dict):
        self.batches = state_dict["batches"]


class ResumableGAN(GAN):
    """Keeps state of its own in checkpoints: its noise generator and an epoch counter."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs_seen = 0
        self.steps_run = 0  # in this process (not saved)

    def training_step(self, batch, batch_idx):
        self.steps_run += 1
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        self.epochs_seen += 1

    def on_save_checkpoint(self, checkpoint):
        checkpoint["gan"] = {"noise": self.noise.get_state(), "epochs_seen": self.epochs_seen}

    def on_load_checkpoint(self, checkpoint):
        self.noise.set_state(checkpoint["gan"]["noise"])
        self.epochs_seen = checkpoint["gan"]["epochs_seen"]


def _real() -> DataLoader:
    real = torch.randn(48, 2, generator=torch.Generator().manual_seed(0)) + 2.0
    return DataLoader(TensorDataset(real), batch_size=16)


def _fit(backup, fail_at: int = -1) -> tuple[ResumableGAN, Trainer, Counting]:
    torch.manual_seed(0)
    module = ResumableGAN()
    trainer = Trainer(module, device="cpu")
    counting = Counting()
    callbacks = [BackupAndRestore(backup, save_freq=1), counting, FailAt(fail_at)]
    trainer.fit(_real(), epochs=3, verbose=0, callbacks=callbacks)
    return module, trainer, counting


def test_an_interrupted_manual_optimization_run_resumes_exactly(tmp_path):
    """Both optimizers, both schedulers, the module's own state (on_save_checkpoint /
    on_load_checkpoint) and the Lightning callback's state come back from the backup."""
    reference, reference_trainer, reference_counting = _fit(tmp_path / "uninterrupted")
    with pytest.raises(RuntimeError, match="boom"):
        _fit(tmp_path / "backup", fail_at=5)  # mid-epoch 1
    saved = load_checkpoint(str(tmp_path / "backup" / "latest.pt"))
    assert saved["gan"]["epochs_seen"] == 1 and len(saved["extra_optimizers"]) == 1
    resumed, trainer, counting = _fit(tmp_path / "backup")
    assert resumed.steps_run == 9 - 5  # it went on from the backup
    for name, parameter in reference.named_parameters():
        assert torch.equal(resumed.get_parameter(name), parameter), name
    for ours, theirs in zip(resumed.optimizers(), reference.optimizers()):
        assert str(ours.state_dict()) == str(theirs.state_dict())
    assert [s.get_last_lr() for s in resumed.lr_schedulers()] == [[0.01 / 8]] * 2
    assert resumed.epochs_seen == reference.epochs_seen == 3
    assert counting.batches == reference_counting.batches == 9
    assert trainer.global_step == reference_trainer.global_step == 18


def test_full_checkpoints_keep_the_single_optimizer_format(tmp_path):
    """One optimizer: no "extra_optimizers" key; the module's checkpoint hook writes into
    the file trainer.save writes, and trainer.load_checkpoint_state reads it back."""
    loaded = []

    class Hooked(Boring):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["note"] = "kept"

        def on_load_checkpoint(self, checkpoint):
            loaded.append(checkpoint["note"])

    trainer = Trainer(Hooked(), device="cpu")
    trainer.fit(DataLoader(torch.randn(8, 4), batch_size=4), epochs=1, verbose=0)
    trainer.save(str(tmp_path / "full.pt"))
    saved = load_checkpoint(str(tmp_path / "full.pt"))
    assert saved["note"] == "kept" and "extra_optimizers" not in saved
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.9**2)
    trainer.load_checkpoint_state(saved)
    assert loaded == ["kept"]


def test_lightning_builtin_callbacks_are_refused_naming_the_equivalent():
    trainer = Trainer(Boring(), device="cpu")
    loader = DataLoader(torch.randn(8, 4), batch_size=4)
    with pytest.raises(
        ValueError, match=r"Lightning's EarlyStopping.*torchcallbacks.EarlyStopping"
    ):
        trainer.fit(loader, epochs=1, verbose=0, callbacks=[LightningEarlyStopping("val_loss")])
    with pytest.raises(ValueError, match="'lr' is in the epoch logs"):
        trainer.fit(loader, epochs=1, verbose=0, callbacks=[LearningRateMonitor()])


def test_hooks_this_trainer_does_not_call_get_one_warning_naming_them():
    """The sanity check hooks (no sanity check runs, as num_sanity_val_steps=0); the
    callback's on_exception is called when fit fails, as in Lightning."""
    failures = []

    class Sanity(LightningCallback):
        def on_sanity_check_start(self, trainer, pl_module):
            pass

        def on_exception(self, trainer, pl_module, exception):
            failures.append(str(exception))

    class Fails(Boring):
        def on_train_epoch_end(self):
            raise RuntimeError("at the end of epoch 0")

    trainer = Trainer(Fails(), device="cpu")
    with pytest.warns(UserWarning) as caught, pytest.raises(RuntimeError, match="epoch 0"):
        trainer.fit(DataLoader(torch.randn(8, 4), batch_size=4), epochs=1, verbose=0,
                    callbacks=[Sanity()])  # fmt: skip
    messages = [str(w.message) for w in caught if "will not be called" in str(w.message)]
    assert messages == [
        "These hooks are defined but will not be called: Sanity.on_sanity_check_start (this "
        "Trainer runs no sanity check before training (as "
        "lightning.Trainer(num_sanity_val_steps=0)))."
    ]
    assert failures == ["at the end of epoch 0"]


@pytest.mark.parametrize(
    ("hook", "run"),
    [("on_fit_start", "fit"), ("on_train_end", "fit"), ("on_test_start", "test"),
     ("on_test_end", "test"), ("on_predict_end", "predict")],
)  # fmt: skip
def test_on_exception_follows_a_failure_in_any_hook_of_the_run(hook, run):
    """The callbacks' and the data module's on_exception, as lightning.Trainer calls them,
    also when a start or end hook fails (outside the epochs and batches)."""

    def fails(self, *args):
        raise RuntimeError(hook)

    class Recorder(LightningCallback):
        def __init__(self):
            self.seen = []

        def on_exception(self, trainer, pl_module, exception):
            self.seen.append(("callback", str(exception)))

    class Data(L.LightningDataModule):
        def __init__(self, recorder):
            super().__init__()
            self.recorder = recorder

        def train_dataloader(self):
            return DataLoader(torch.randn(8, 4), batch_size=4)

        test_dataloader = predict_dataloader = train_dataloader

        def on_exception(self, exception):
            self.recorder.seen.append(("datamodule", str(exception)))

    seen = []
    for ours in (False, True):
        recorder = Recorder()
        module = type("Fails", (Boring,), {hook: fails})()
        data = Data(recorder)
        with pytest.raises(RuntimeError, match=hook):
            if ours:
                trainer = Trainer(module, device="cpu")
                if run == "fit":
                    trainer.fit(datamodule=data, epochs=1, verbose=0, callbacks=[recorder])
                else:
                    getattr(trainer, "evaluate" if run == "test" else run)(
                        data, verbose=0, callbacks=[recorder]
                    )
            else:
                trainer = lightning_trainer(max_epochs=1, callbacks=[recorder])
                getattr(trainer, run)(module, datamodule=data)
        seen.append(recorder.seen)
    assert seen[1] == seen[0] == [("callback", hook), ("datamodule", hook)]


def test_configure_callbacks_and_logging_where_lightning_forbids_it():
    seen = []

    class Configures(Boring):
        def configure_callbacks(self):
            return [Counting()]

        def on_fit_start(self):
            seen.append(len(self.trainer.optimizers))

    module = Configures()
    trainer = Trainer(module, device="cpu")
    trainer.fit(DataLoader(torch.randn(8, 4), batch_size=4), epochs=2, verbose=0)
    assert trainer._kind.lightning_callbacks[0].batches == 4 and seen == [1]

    class LogsInFitStart(Boring):
        def on_fit_start(self):
            self.log("too_early", 1.0)

    with pytest.raises(ValueError, match="not allowed in on_fit_start, as in Lightning"):
        Trainer(LogsInFitStart(), device="cpu").fit(
            DataLoader(torch.randn(8, 4), batch_size=4), epochs=1, verbose=0
        )

    class LogsInPredictStep(Boring):
        def predict_step(self, batch, batch_idx):
            self.log("nothing_collects_this", 1.0)
            return self(batch)

    with pytest.raises(ValueError, match="not allowed in predict_step"):
        Trainer(LogsInPredictStep(), device="cpu").predict(torch.randn(8, 4), verbose=0)


def test_layers_built_in_setup_get_their_optimizer_when_fit_starts():
    """As in Lightning: setup and configure_model run before configure_optimizers."""

    class Lazy(L.LightningModule):
        def setup(self, stage):
            if not hasattr(self, "layer"):
                self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Lazy()
    trainer = Trainer(module, device="cpu")
    assert trainer.optimizer is None
    with pytest.raises(ValueError, match="configure_optimizers runs when fit starts"):
        trainer.get_lr()
    history = trainer.fit(DataLoader(torch.randn(8, 4), batch_size=4), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert trainer.optimizer.param_groups[0]["params"][0] is module.layer.weight
