"""Lightning-style plain modules (`LoggingMixin`, no Lightning): training_step,
configure_optimizers and self.log with our Trainer. Real LightningModules and Lightning's own
demo modules are tested in test_integrations_lightning.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Callback, EarlyStopping, LoggingMixin, Trainer
from torchcallbacks.callbacks.model_checkpoint import ModelCheckpoint


def _data(samples: int = 96, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 4, generator=generator)
    y = (x[:, 0] - x[:, 1] > 0).long()
    return x, y


class Classifier(LoggingMixin, torch.nn.Module):
    """Written the way a LightningModule is, without Lightning."""

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
        )
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.batch_logs: list[dict] = []
        self.epoch_logs: list[dict] = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs))


def test_lightning_style_module_trains_with_early_stopping_and_checkpoint(tmp_path):
    x, y = _data()
    model = Classifier()
    trainer = Trainer(model, device="cpu")  # no loss, no optimizer: the module has them
    stopper = EarlyStopping(monitor="val_acc", patience=2)
    checkpoint = ModelCheckpoint(
        tmp_path / "best.pt", monitor="val_loss", save_best_only=True, save_weights_only=True
    )
    history = trainer.fit(
        x,
        y,
        epochs=40,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=[stopper, checkpoint],
    )
    logged = history.history
    assert set(logged) == {"loss", "train_loss", "val_loss", "val_acc"}  # the module's names
    assert logged["val_loss"][-1] < logged["val_loss"][0]  # it learned
    # val_acc is the epoch mean weighted by batch size: a fraction of the 24 samples.
    assert all(round(acc * 24, 6) == int(round(acc * 24)) for acc in logged["val_acc"])
    # EarlyStopping watched the logged val_acc: stopped 2 epochs after its best epoch.
    assert 0 < stopper.stopped_epoch < 39
    assert stopper.stopped_epoch == stopper.best_epoch + 2 == len(history.epoch) - 1
    assert stopper.best == max(logged["val_acc"])
    # ModelCheckpoint kept the weights of the epoch with the lowest logged val_loss.
    fresh = Classifier()
    fresh.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    best = Trainer(fresh, device="cpu").evaluate(
        x[72:], y[72:], batch_size=16, verbose=0, return_dict=True
    )
    assert best["val_loss"] == pytest.approx(min(logged["val_loss"]), rel=1e-5)


def test_logged_values_reach_batch_and_epoch_logs():
    class Probe(Classifier):
        def training_step(self, batch, batch_idx):
            x, y = batch
            self.log("batch_index", float(batch_idx))  # on_step only (training default)
            self.log("x_mean", x.mean(), on_step=False, on_epoch=True)
            self.log_dict({"size": float(len(x))}, on_epoch=True)
            return F.cross_entropy(self(x), y)

    x, y = _data(10)
    recorder = Recorder()
    trainer = Trainer(Probe(lr=0.0), device="cpu")
    trainer.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0, callbacks=[recorder])
    # Batch logs: on_step values at this step; on_epoch-only values as running means.
    assert [logs["batch_index"] for logs in recorder.batch_logs] == [0.0, 1.0, 2.0]
    assert [logs["size"] for logs in recorder.batch_logs] == [4.0, 4.0, 2.0]
    assert recorder.batch_logs[1]["x_mean"] == pytest.approx(x[:8].mean().item(), abs=1e-6)
    # Epoch logs: means weighted by batch size; on_step-only keys keep their last value.
    epoch = recorder.epoch_logs[0]
    assert epoch["x_mean"] == pytest.approx(x.mean().item(), abs=1e-6)
    assert epoch["size"] == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)
    assert epoch["batch_index"] == 2.0
    with torch.no_grad():  # lr=0: the model never changes, so "loss" is the full-data loss
        assert epoch["loss"] == pytest.approx(F.cross_entropy(trainer.model(x), y).item(), rel=1e-5)


def test_configure_optimizers_dict_form_steps_schedulers():
    class Scheduled(Classifier):
        def __init__(self, config):
            super().__init__(lr=0.1)
            self.config = config

        def validation_step(self, batch, batch_idx):
            self.log("val_constant", 1.0)

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": optimizer, **self.config(optimizer)}

    x, y = _data(64)
    per_epoch = Scheduled(
        lambda opt: {"lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)}
    )
    history = Trainer(per_epoch, device="cpu").fit(x, y, epochs=3, verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.05, 0.025])

    every_second_step = Scheduled(
        lambda opt: {
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5),
                "interval": "step",
                "frequency": 2,
            }
        }
    )
    trainer = Trainer(every_second_step, device="cpu")
    trainer.fit(x, y, epochs=2, batch_size=16, verbose=0)  # 8 optimizer steps -> 4 halvings
    assert trainer.get_lr() == pytest.approx(0.1 / 16)

    plateau = Scheduled(
        lambda opt: {
            "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
            "monitor": "val_constant",
        }
    )
    trainer = Trainer(plateau, device="cpu")
    history = trainer.fit(x, y, epochs=3, validation_split=0.25, verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05])
    assert trainer.get_lr() == pytest.approx(0.025)


def test_evaluate_uses_test_step_and_predict_uses_predict_step():
    class Full(Classifier):
        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

        def predict_step(self, batch, batch_idx):
            return self(batch).softmax(-1)

    x, y = _data(20)
    trainer = Trainer(Full(), device="cpu")
    result = trainer.evaluate(x, y, verbose=0, return_dict=True)
    with torch.no_grad():
        probabilities = trainer.model(x).softmax(-1)
    accuracy = (probabilities.argmax(-1) == y).float().mean().item()
    assert result == {"test_acc": pytest.approx(accuracy)}
    assert torch.allclose(trainer.predict(x, verbose=0), probabilities)
    # Without predict_step, predict runs the module's forward (logits).
    plain = Trainer(Classifier(), device="cpu")
    with torch.no_grad():
        assert torch.allclose(plain.predict(x, verbose=0), plain.model(x))


def test_predicted_string_fields_come_back_one_per_example_in_order():
    class Predicts(Classifier):
        def predict_step(self, batch, batch_idx):
            return {"id": batch["id"], "label": self(batch["x"]).argmax(-1)}

    x, _ = _data(10)
    rows = [{"x": x[i], "id": f"sample-{i}"} for i in range(10)]
    for batch_size in (4, 5):  # a short last batch, and equal batches
        outputs = Trainer(Predicts(), device="cpu").predict(
            DataLoader(rows, batch_size=batch_size), verbose=0
        )
        assert outputs["id"] == [f"sample-{i}" for i in range(10)]
        assert outputs["label"].shape == (10,)


def test_batches_reach_training_step_as_the_data_yields_them():
    class DictBatches(Classifier):
        def training_step(self, batch, batch_idx):
            self.log("rows", float(batch["features"].shape[0]), on_epoch=True)
            return F.cross_entropy(self(batch["features"]), batch["label"])

    x, y = _data(12)
    batches = [{"features": x[i : i + 4], "label": y[i : i + 4]} for i in range(0, 12, 4)]
    history = Trainer(DictBatches(), device="cpu").fit(batches, epochs=1, verbose=0)
    assert history.history["rows"] == [4.0]


def test_log_outside_a_trainer_step_is_a_no_op():
    x, y = _data(8)
    model = Classifier()
    output = model.training_step((x, y), 0)  # unit-testing a step method directly
    assert output["loss"].ndim == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training_step": lambda self, b, i: "loss"}, "must return the loss"),
        (
            {"configure_optimizers": lambda self: [torch.optim.SGD(self.parameters(), lr=0.1)] * 2},
            "several optimizers needs manual optimization",
        ),
        (
            {"training_step": lambda self, b, i: self.log("vec", b[0]) or self(b[0]).sum()},
            "log a scalar",
        ),
        ({"automatic_optimization": False}, "automatic_optimization = False"),
    ],
)
def test_bad_lightning_modules_get_clear_errors(change, message):
    broken = type("Broken", (Classifier,), change)
    x, y = _data(8)
    with pytest.raises(ValueError, match=message):
        Trainer(broken(), device="cpu").fit(x, y, epochs=1, verbose=0)


def test_lightnings_module_first_calls_name_the_call_without_the_module():
    x, y = _data(8)
    module = Classifier()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    trainer = Trainer(module, device="cpu")
    before = [p.clone() for p in module.parameters()]
    calls = {
        "fit": lambda: trainer.fit(module, loader, loader, epochs=1, verbose=0),
        "evaluate": lambda: trainer.evaluate(module, loader, verbose=0),
        "predict": lambda: trainer.predict(module, loader, verbose=0),
    }
    for method, call in calls.items():
        with pytest.raises(TypeError, match=rf"leave it out, trainer\.{method}\(\w*loader"):
            call()
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_an_optimizer_given_to_the_trainer_warns_that_configure_optimizers_is_not_used():
    module = Classifier()
    adam = torch.optim.Adam(module.parameters(), lr=0.01)
    with pytest.warns(UserWarning, match="Classifier.configure_optimizers is not called"):
        trainer = Trainer(module, optimizer=adam, device="cpu")
    assert trainer.optimizer is adam


def test_a_loss_given_with_a_module_that_has_steps_warns_that_the_steps_are_not_used():
    """loss= makes the Trainer score forward's output: the module's steps are named."""
    x, y = _data(16)
    module = Classifier()
    with pytest.warns(UserWarning, match=r"Classifier.training_step, .* are not used: with loss="):
        trainer = Trainer(module, torch.optim.SGD(module.parameters(), lr=0.1), "cross_entropy")
    history = trainer.fit(x, y, epochs=1, verbose=0)
    assert list(history.history) == ["loss"]  # forward scored by loss=, no self.log values


def test_missing_validation_step_and_metrics_argument_are_explained():
    class NoValidation(Classifier):
        validation_step = None

    x, y = _data(8)
    trainer = Trainer(NoValidation(), device="cpu")
    with pytest.warns(UserWarning, match="defines no validation_step: skipping validation"):
        history = trainer.fit(x, y, epochs=1, validation_split=0.5, verbose=0)
    assert not any(key.startswith("val_") for key in history.history)
    with pytest.raises(ValueError, match="defines no test_step"):
        trainer.evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match="log its metrics"):
        Trainer(Classifier(), metrics=["accuracy"], device="cpu")


def test_resume_mid_epoch_restores_logged_accumulators(tmp_path):
    class SaveAtBatch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.trainer.current_epoch == 1 and batch == 1:
                self.trainer.save(str(tmp_path / "mid.pt"))
                self.trainer.stop_training = True

    x, y = _data(64)
    full = Trainer(Classifier(), device="cpu").fit(x, y, epochs=3, batch_size=16, verbose=0)
    Trainer(Classifier(), device="cpu").fit(
        x, y, epochs=3, batch_size=16, verbose=0, callbacks=[SaveAtBatch()]
    )
    resumed = Trainer(Classifier(), device="cpu").fit(
        x, y, epochs=3, batch_size=16, verbose=0, resume_from=str(tmp_path / "mid.pt")
    )
    assert resumed.epoch == [0, 1, 2]  # History's saved state is matched by type: it continues
    for key in ("loss", "train_loss"):
        assert resumed.history[key][1:] == pytest.approx(full.history[key][1:], rel=1e-6)


class ToyDataModule:
    """Any object with train_dataloader() is a data module; Lightning is not needed."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    def setup(self, stage):
        self.stages.append(stage)
        self.x, self.y = _data(48)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x[:32], self.y[:32]), batch_size=8)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[32:], self.y[32:]), batch_size=8)


def test_any_object_with_loaders_is_a_data_module():
    data = ToyDataModule()
    trainer = Trainer(Classifier(), device="cpu")
    history = trainer.fit(data, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "train_loss", "val_loss", "val_acc"}
    # evaluate without test_dataloader() uses val_dataloader(), after setup("validate")
    result = trainer.evaluate(data, verbose=0, return_dict=True)
    assert result["val_loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
    assert data.stages == ["fit", "validate"]
    with pytest.raises(
        ValueError, match=r"ToyDataModule is used as a data module.*predict_dataloader"
    ):
        trainer.predict(data, verbose=0)


def test_several_validation_loaders_are_refused_before_training():
    class TwoValidationLoaders(ToyDataModule):
        def val_dataloader(self):
            return [super().val_dataloader(), super().val_dataloader()]

    module = Classifier()
    before = [p.clone() for p in module.parameters()]
    trainer = Trainer(module, device="cpu")
    with pytest.raises(ValueError, match="list of 2 DataLoaders where one is taken"):
        trainer.fit(TwoValidationLoaders(), epochs=1, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
    loader = DataLoader(TensorDataset(*_data(16)), batch_size=8)
    with pytest.raises(ValueError, match="evaluate each loader in its own call"):
        trainer.validate(dataloaders=[loader, loader], verbose=False)
