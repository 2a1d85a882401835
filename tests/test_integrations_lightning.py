"""Lightning's own modules and data modules, trained by our Trainer unchanged.

These tests import the real ``lightning`` and ``torchmetrics`` packages (the `integrations`
extra): a look-alike written here would hide what real users hit. Both import torchvision
when it is installed: marked ``also_vision``, they run in CI's torchvision virtualenv too.
"""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel, DemoModel
from lightning.pytorch.demos.transformer import LightningTransformer
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from torchcallbacks import EarlyStopping, ModelCheckpoint, Trainer
from torchcallbacks.models.lightning import LightningTrainerView

pytestmark = pytest.mark.also_vision


def test_boring_model_final_weights_equal_a_hand_written_loop():
    """Trainer(model).fit uses BoringModel's own configure_optimizers (SGD + StepLR per
    epoch) and training_step: the same weights as a loop that calls them by hand."""
    torch.manual_seed(0)
    model = BoringModel()
    reference = copy.deepcopy(model)
    loader = model.train_dataloader()  # 64 batches of 1 sample, not shuffled

    trainer = Trainer(model, device="cpu")
    history = trainer.fit(loader, epochs=3, verbose=0)

    optimizers, schedulers = reference.configure_optimizers()
    (optimizer,), (scheduler,) = optimizers, schedulers
    for _ in range(3):
        for batch_index, batch in enumerate(loader):
            optimizer.zero_grad(set_to_none=True)
            reference.training_step(batch, batch_index)["loss"].backward()
            optimizer.step()
        scheduler.step()

    for name, parameter in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], parameter), name
    assert history.history["lr"] == pytest.approx([0.1, 0.01, 0.001])  # StepLR's gamma 0.1
    assert trainer.global_step == model.global_step == 3 * 64
    assert model.current_epoch == 3  # after fit: the epochs run, as lightning.Trainer has it


def test_boring_model_is_its_own_data_module_and_validates():
    """fit(model) takes the module's own loaders, as lightning.Trainer.fit(model) does;
    validation_step and test_step are the demo's own (not mistaken for Lightning's stubs)."""
    torch.manual_seed(0)
    model = BoringModel()
    calls: list[str] = []
    for name in ("validation_step", "test_step"):
        step = getattr(model, name)

        def counted(batch, index, step=step, name=name):
            calls.append(name)
            return step(batch, index)

        setattr(model, name, counted)
    trainer = Trainer(model, device="cpu")
    trainer.fit(model, epochs=1, verbose=0)
    assert calls.count("validation_step") == 64
    trainer.evaluate(model, verbose=0)
    assert calls.count("test_step") == 64
    assert trainer.predict(model, verbose=0).shape == (64, 2)


class LoggingBoring(BoringModel):
    """A user's subclass of Lightning's BoringModel that logs and uses the module hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def validation_step(self, batch, batch_idx):
        loss = super().validation_step(batch, batch_idx)["x"]
        self.log("val_loss", loss)

    def on_train_start(self):
        self.events.append(("train_start", self.trainer.max_epochs))

    def on_train_epoch_start(self):
        self.events.append(("epoch_start", self.current_epoch, self.global_step))

    def on_validation_epoch_end(self):
        self.events.append(("validation_end", self.trainer.validating))

    def on_train_epoch_end(self):
        self.log("epoch_steps", float(self.global_step))
        self.events.append(("epoch_end", self.current_epoch))

    def on_train_end(self):
        self.events.append(("train_end",))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_boring_model_subclass_hooks_logging_and_early_stopping():
    torch.manual_seed(0)
    model = LoggingBoring()
    train = DataLoader(torch.randn(32, 32), batch_size=8)
    val = DataLoader(torch.randn(16, 32) * 100, batch_size=8)  # far off: val_loss keeps rising
    stopper = EarlyStopping(monitor="val_loss", patience=1)
    trainer = Trainer(model, device="cpu")
    history = trainer.fit(train, validation_data=val, epochs=10, verbose=0, callbacks=[stopper])

    assert isinstance(model.trainer, LightningTrainerView)
    epochs = len(history.epoch)
    assert history.history["epoch_steps"] == [4.0 * (e + 1) for e in range(epochs)]
    assert stopper.best == min(history.history["val_loss"])
    assert stopper.stopped_epoch == stopper.best_epoch + 1 == epochs - 1 < 9
    expected = [("train_start", 10)]
    for epoch in range(epochs):
        expected += [
            ("epoch_start", epoch, 4 * epoch),
            ("validation_end", True),
            ("epoch_end", epoch),  # after validation, as in Lightning
        ]
    assert model.events == [*expected, ("train_end",)]


def test_demo_model_trains_on_its_own_loss():
    torch.manual_seed(0)
    model = DemoModel()
    loader = DataLoader(torch.randn(64, 32), batch_size=16)
    history = Trainer(model, device="cpu").fit(loader, epochs=3, verbose=0)
    assert isinstance(Trainer(DemoModel(), device="cpu").optimizer, torch.optim.Adam)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]


class OfflineTransformer(LightningTransformer):
    def prepare_data(self) -> None:
        """Its own downloads WikiText-2, as fit calls it (lightning.Trainer too): these
        tests give their own tokens."""


def test_lightning_transformer_demo_trains():
    torch.manual_seed(0)
    model = OfflineTransformer(vocab_size=16)
    tokens = torch.randint(0, 16, (8, 13))
    batches = DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=4)
    trainer = Trainer(model, device="cpu")
    assert isinstance(trainer.optimizer, torch.optim.SGD)  # its configure_optimizers
    history = trainer.fit(batches, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Its forward takes (inputs, target): the summary shows no shapes rather than failing.
    table = trainer.summary(print_fn=None)
    assert "model (Transformer)" in table and "│ ?" in table
    # Lightning's example_input_array gives the shapes, as in Lightning's own summary.
    model.example_input_array = (tokens[:2, :-1], tokens[:2, 1:])
    trainer.fit(batches, epochs=1, verbose=0)
    assert "(24, 16)" in trainer.summary(print_fn=None)  # 2 sequences of 12 tokens, flattened


class ToyData(L.LightningDataModule):
    """Three classes in 4 features; the loaders Lightning users write."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: list[str] = []

    def setup(self, stage: str) -> None:
        self.stages.append(stage)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(160, 4, generator=generator)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        self.train, self.val = TensorDataset(x[:96], y[:96]), TensorDataset(x[96:128], y[96:128])
        self.test, self.unlabeled = TensorDataset(x[128:], y[128:]), TensorDataset(x[128:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=16)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=16)

    def predict_dataloader(self):
        return DataLoader(self.unlabeled, batch_size=16)


class LitClassifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
        self.val_auroc = MulticlassAUROC(num_classes=3)
        self.val_accuracy = MulticlassAccuracy(num_classes=3, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes=3, average="micro")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_auroc.update(logits, y)
        self.val_accuracy(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_accuracy", self.val_accuracy)  # the metric object: computed per epoch

    def on_validation_epoch_end(self):
        self.log("val_auroc", self.val_auroc.compute())
        self.val_auroc.reset()

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_accuracy.update(self(x), y)

    def on_test_epoch_end(self):
        self.log("test_accuracy", self.test_accuracy.compute())
        self.test_accuracy.reset()

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).softmax(-1)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.02)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)},
            "monitor": "val_loss",
        }


def test_user_module_with_torchmetrics_in_epoch_end_hooks_and_a_data_module(tmp_path):
    data = ToyData()
    model = LitClassifier()
    checkpoint = ModelCheckpoint(
        str(tmp_path / "best.pt"), monitor="val_auroc", save_best_only=True, save_weights_only=True
    )
    trainer = Trainer(model, device="cpu")
    history = trainer.fit(data, epochs=4, verbose=0, callbacks=[checkpoint])
    logged = history.history
    assert {"loss", "train_loss", "val_loss", "val_auroc", "val_accuracy", "lr"} <= set(logged)
    assert data.stages == ["fit"]

    # The last epoch's val_auroc is torchmetrics' AUROC of the final weights on val data.
    x_val, y_val = data.val.tensors
    with torch.no_grad():
        expected = MulticlassAUROC(num_classes=3)(model(x_val), y_val).item()
    assert logged["val_auroc"][-1] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        accuracy = (model(x_val).argmax(-1) == y_val).float().mean().item()
    assert logged["val_accuracy"][-1] == pytest.approx(accuracy)
    # ModelCheckpoint took "auroc" as higher-is-better and kept the best epoch's weights.
    fresh = LitClassifier()
    fresh.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    with torch.no_grad():
        best = MulticlassAUROC(num_classes=3)(fresh(x_val), y_val).item()
    assert best == pytest.approx(max(logged["val_auroc"]), rel=1e-6)

    result = trainer.evaluate(data, verbose=0, return_dict=True)
    x_test, y_test = data.test.tensors
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    assert result == {"test_accuracy": pytest.approx(accuracy)}
    probabilities = trainer.predict(data, verbose=0)
    assert probabilities.shape == (32, 3)
    assert torch.allclose(probabilities.sum(-1), torch.ones(32))
    assert data.stages == ["fit", "test", "predict"]


def test_lightning_data_module_from_lightning_itself():
    torch.manual_seed(0)
    history = Trainer(BoringModel(), device="cpu").fit(BoringDataModule(), epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1


def test_real_lightning_module_trains_with_our_trainer(tmp_path):
    class LitClassifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
            )

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log_dict(
                {
                    "val_loss": F.cross_entropy(logits, y),
                    "val_acc": (logits.argmax(-1) == y).float().mean(),
                }
            )

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.5)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10, 0.5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(96, 4, generator=generator)
    y = (x[:, 0] - x[:, 1] > 0).long()
    stopper = EarlyStopping(monitor="val_acc", patience=2)
    checkpoint = ModelCheckpoint(
        tmp_path / "best.pt", monitor="val_loss", save_best_only=True, save_weights_only=True
    )
    trainer = Trainer(LitClassifier(), device="cpu")
    history = trainer.fit(
        x,
        y,
        epochs=40,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=[stopper, checkpoint],
    )
    assert {"loss", "train_loss", "val_loss", "val_acc", "lr"} <= set(history.history)
    assert stopper.stopped_epoch == stopper.best_epoch + 2 == len(history.epoch) - 1
    fresh = LitClassifier()
    fresh.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    best = Trainer(fresh, device="cpu").evaluate(
        x[72:], y[72:], batch_size=16, verbose=0, return_dict=True
    )
    assert best["val_loss"] == pytest.approx(min(history.history["val_loss"]), rel=1e-5)


def _step(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


@pytest.mark.parametrize(
    ("form", "final_lr"),
    [
        (lambda opt: opt, 0.1),
        (lambda opt: [opt], 0.1),
        (lambda opt: (opt,), 0.1),
        (lambda opt: {"optimizer": opt}, 0.1),
        (lambda opt: ([opt], [_step(opt)]), 0.1 / 4),  # per epoch, 2 epochs
        (lambda opt: ([opt], [{"scheduler": _step(opt), "interval": "step"}]), 0.1 / 2**8),
        (lambda opt: {"optimizer": opt, "lr_scheduler": _step(opt)}, 0.1 / 4),
        (
            lambda opt: {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": _step(opt), "frequency": 2},
            },
            0.1 / 2,
        ),
        (lambda opt: [{"optimizer": opt, "lr_scheduler": _step(opt)}], 0.1 / 4),
    ],
)
def test_every_documented_configure_optimizers_form(form, final_lr):
    class Configured(BoringModel):
        def configure_optimizers(self):
            return form(torch.optim.SGD(self.parameters(), lr=0.1))

    lrs: list[float] = []

    class ReadsItsOptimizer(Configured):
        def on_train_epoch_start(self):
            lrs.append(self.optimizers().param_groups[0]["lr"])

    model = ReadsItsOptimizer()
    trainer = Trainer(model, device="cpu")
    trainer.fit(DataLoader(torch.randn(16, 32), batch_size=4), epochs=2, verbose=0)
    assert trainer.get_lr() == pytest.approx(final_lr)
    assert lrs[0] == 0.1 and len(lrs) == 2
    assert model.optimizers().optimizer is trainer.optimizer  # Lightning's wrapper, as there
    assert model.optimizers(use_pl_optimizer=False) is trainer.optimizer


def test_trainer_should_stop_and_unknown_trainer_attributes():
    class StopsItself(BoringModel):
        def on_train_epoch_end(self):
            if self.current_epoch == 1:
                self.trainer.should_stop = True

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = StopsItself()
    trainer = Trainer(model, device="cpu")
    history = trainer.fit(DataLoader(torch.randn(8, 32), batch_size=4), epochs=5, verbose=0)
    assert history.epoch == [0, 1] and trainer.stop_training
    assert model.trainer.callback_metrics["loss"].item() == history.history["loss"][-1]
    with pytest.raises(AttributeError, match="fit_loop is a lightning.Trainer attribute"):
        model.trainer.fit_loop  # noqa: B018


def test_validation_data_without_a_validation_step_is_skipped_with_a_warning():
    """As Lightning does ("no validation_step ... skipping"), before any training batch."""
    torch.manual_seed(0)
    loader = DataLoader(torch.randn(64, 32), batch_size=16)
    trainer = Trainer(DemoModel(), device="cpu")
    with pytest.warns(UserWarning, match="DemoModel defines no validation_step: skipping"):
        history = trainer.fit(loader, validation_data=loader, epochs=2, verbose=0)
    assert history.epoch == [0, 1] and not any(k.startswith("val_") for k in history.history)


def test_in_memory_inputs_without_targets_reach_training_step_as_given():
    """``fit(x)`` and ``train_on_batch(x)``: training_step gets the batch of x itself, as a
    DataLoader over x gives it (here with the default verbosity)."""
    x = torch.randn(64, 32)
    torch.manual_seed(0)
    from_loader = DemoModel()
    Trainer(from_loader, device="cpu").fit(DataLoader(x, batch_size=16), epochs=2)
    torch.manual_seed(0)
    in_memory = DemoModel()
    trainer = Trainer(in_memory, device="cpu")
    trainer.fit(x, batch_size=16, epochs=2, shuffle=False)
    for name, parameter in from_loader.state_dict().items():
        assert torch.equal(in_memory.state_dict()[name], parameter), name
    assert trainer.train_on_batch(x[:16]) > 0


def test_weights_that_training_step_cannot_see_are_refused_before_a_step():
    model = DemoModel()
    before = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, device="cpu")
    x, y = torch.randn(16, 32), torch.randint(0, 2, (16,))
    refusal = "DemoModel computes its loss in its own training_step, which {}= cannot reach"
    with pytest.raises(ValueError, match=refusal.format("sample_weight")):
        trainer.fit(x, sample_weight=torch.ones(16), epochs=1)
    with pytest.raises(ValueError, match=refusal.format("class_weight")):
        trainer.fit(x, y, class_weight={0: 1.0, 1: 2.0}, epochs=1)
    with pytest.raises(ValueError, match=refusal.format("sample_weight")):
        trainer.evaluate(x, sample_weight=torch.ones(16))
    with pytest.raises(ValueError, match=refusal.format("sample_weight")):
        trainer.train_on_batch(x, sample_weight=torch.ones(16))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class LogsInStartHooks(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def on_train_start(self) -> None:
        self.log("train_started", 1.0)

    def on_train_epoch_start(self) -> None:
        self.log("lr_at_start", self.optimizers().param_groups[0]["lr"])

    def on_validation_epoch_start(self) -> None:
        self.log("val_started", 2.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_values_logged_in_start_hooks_reach_the_epoch_logs_as_in_lightning():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    torch.manual_seed(0)
    module = LogsInStartHooks()
    trainer = Trainer(module, device="cpu")
    ours = trainer.fit(loader, validation_data=loader, epochs=1)
    torch.manual_seed(0)
    theirs = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    theirs.fit(LogsInStartHooks(), loader, loader)
    for name, value in theirs.callback_metrics.items():
        assert ours.history[name] == [pytest.approx(value.item())], name
    # callback_metrics holds tensors, as Lightning's does, and evaluate refreshes it
    assert set(theirs.callback_metrics) <= set(module.trainer.callback_metrics)
    assert isinstance(module.trainer.callback_metrics["val_loss"], torch.Tensor)
    evaluated = trainer.evaluate(
        DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8), return_dict=True
    )
    assert evaluated["val_loss"] != pytest.approx(ours.history["val_loss"][0])
    assert module.trainer.callback_metrics["val_loss"].item() == evaluated["val_loss"]
