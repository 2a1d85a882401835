"""The real ``lightning.Trainer`` as the oracle: the same LightningModule run through it and
through our Trainer calls the same hooks, in the same order, with the same arguments, and
ends with the same weights, learning rates and logged values.

A recorder module overrides every hook Lightning calls on a module (and a recorder
callback every callback hook) and records ``(hook, its arguments)``, with tensors as their
shapes and optimizers as their class names.
"""

from __future__ import annotations

import enum
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback as LightningCallback
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Trainer
from torchcallbacks.models.lightning.calls import CALLBACK_HOOKS, MODULE_HOOKS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _summary(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, LightningOptimizer):
        return "LightningOptimizer"
    if isinstance(value, torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler):
        return type(value).__name__
    if isinstance(value, enum.Enum):  # Lightning's stage names are str enums
        return value.value
    if isinstance(value, list | tuple):
        return tuple(_summary(v) for v in value)
    if isinstance(value, dict):
        return {k: _summary(v) for k, v in value.items()}
    if isinstance(value, torch.device):
        return "device"
    if callable(value):
        return "closure"
    return value


class Boring(L.LightningModule):
    """Lightning's BoringModel, with a step scheduler and values logged in each step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        loss = self(batch).pow(2).mean()
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self(batch).pow(2).mean())

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self(batch).pow(2).mean())

    def predict_step(self, batch, batch_idx):
        return self(batch)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


RECORDED = [h for h in MODULE_HOOKS if h != "configure_sharded_model"]  # Lightning: one of two
RECORDED += ["training_step", "validation_step", "test_step", "predict_step", "clip_gradients"]


def _recording(cls: type, calls: list) -> type:
    def make(name):
        parent = getattr(cls, name)

        def hook(self, *args, **kwargs):
            calls.append((name, _summary(args), _summary(kwargs)))
            return parent(self, *args, **kwargs)

        return hook

    return type(f"Recording{cls.__name__}", (cls,), {name: make(name) for name in RECORDED})


def _recording_callback(calls: list) -> LightningCallback:
    def make(name):
        def hook(self, trainer, pl_module, *args, **kwargs):
            assert pl_module.trainer is trainer  # the module's self.trainer, as in Lightning
            calls.append((f"callback.{name}", _summary(args), _summary(kwargs)))

        return hook

    names = [n for n in CALLBACK_HOOKS if n not in ("state_dict", "load_state_dict")]
    return type("RecordingCallback", (LightningCallback,), {n: make(n) for n in names})()


def _data(samples: int, seed: int) -> DataLoader:
    return DataLoader(torch.randn(samples, 4, generator=torch.Generator().manual_seed(seed)),
                      batch_size=2)  # fmt: skip


def lightning_trainer(**options) -> L.Trainer:
    options = {"max_epochs": 2, "accelerator": "cpu", "num_sanity_val_steps": 0, **options}
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **options)  # fmt: skip


def _both(stage: str, module_class: type = Boring, callbacks: bool = False, **options):
    """Run ``stage`` with lightning.Trainer and with ours on a recording module: both call
    lists (configure_callbacks aside: ours calls it per run) and both modules."""
    results = []
    for runner in ("lightning", "ours"):
        calls: list = []
        torch.manual_seed(0)
        module = _recording(module_class, calls)()
        given = [_recording_callback(calls)] if callbacks else []
        train, val = _data(6, 1), _data(4, 2)  # 3 training and 2 validation batches
        if runner == "lightning":
            trainer = lightning_trainer(callbacks=given, **options)
            if stage == "fit":
                trainer.fit(module, train, val)
            else:
                getattr(trainer, stage)(module, val)
        else:
            clip = options.get("gradient_clip_val")
            algorithm = options.get("gradient_clip_algorithm", "norm")
            ours = Trainer(module, device="cpu",
                           accumulate_grad_batches=options.get("accumulate_grad_batches", 1),
                           gradient_clip_norm=clip if algorithm == "norm" else None,
                           gradient_clip_value=clip if algorithm == "value" else None)  # fmt: skip
            if stage == "fit":
                ours.fit(train, validation_data=val, epochs=2, verbose=0, callbacks=given)
            elif stage == "predict":
                ours.predict(val, verbose=0, callbacks=given)
            else:
                getattr(ours, stage)(dataloaders=val)
            trainer = ours
        calls = [call for call in calls if call[0] != "configure_callbacks"]
        results.append((calls, module, trainer))
    return results


@pytest.mark.parametrize("stage", ["fit", "validate", "test", "predict"])
def test_the_same_hooks_in_the_same_order_as_lightning(stage):
    (theirs, their_module, lightning), (ours, our_module, trainer) = _both(stage)
    assert ours == theirs
    names = {call[0] for call in ours}
    if stage == "fit":  # every hook, the same weights and logged values at the end
        elsewhere = {"test_step", "predict_step", "configure_callbacks", "on_save_checkpoint",
                     "on_load_checkpoint"}  # fmt: skip
        assert names == {n for n in RECORDED if not n.startswith(("on_test", "on_predict"))} - (
            elsewhere
        )
        for theirs_p, ours_p in zip(their_module.parameters(), our_module.parameters()):
            assert torch.equal(theirs_p, ours_p)
        logged = trainer.history.history  # (Lightning's train_loss_epoch: ours is train_loss)
        metrics = lightning.callback_metrics
        assert logged["train_loss"][-1] == pytest.approx(metrics["train_loss_epoch"].item())
        assert logged["val_loss"][-1] == pytest.approx(metrics["val_loss"].item())
        assert trainer.get_lr() == pytest.approx(lightning.optimizers[0].param_groups[0]["lr"])


def test_lightning_callbacks_get_their_hooks_before_the_module_as_in_lightning():
    (theirs, _, _), (ours, _, _) = _both("fit", callbacks=True)
    assert ours == theirs
    assert ("callback.on_train_batch_start", (("tensor", (2, 4)), 0), {}) in ours
    first = ours.index(("callback.on_train_epoch_start", (), {}))
    assert ours[first + 1] == ("on_train_epoch_start", (), {})


@pytest.mark.parametrize(
    "options",
    [
        {
            "accumulate_grad_batches": 2,
            "gradient_clip_val": 0.01,
            "gradient_clip_algorithm": "norm",
        },
        {"gradient_clip_val": 0.001, "gradient_clip_algorithm": "value"},
    ],
)
def test_accumulation_and_clipping_match_lightning(options):
    """The zero_grad at each window's first batch, the step at its end and at the epoch's
    last batch, clipping after on_before_optimizer_step: same calls, same weights."""
    (theirs, their_module, their_trainer), (ours, our_module, trainer) = _both("fit", **options)
    assert ours == theirs
    for theirs_p, ours_p in zip(their_module.parameters(), our_module.parameters()):
        torch.testing.assert_close(ours_p, theirs_p, rtol=0, atol=1e-7)
    assert trainer.global_step == their_trainer.global_step


def _fit_both(module_class: type, epochs: int = 2, samples: int = 6, **loader):
    """Fit fresh ``module_class`` modules with both trainers: (theirs, ours, our history)."""
    torch.manual_seed(0)
    theirs = module_class()
    torch.manual_seed(0)
    ours = module_class()
    data = TensorDataset(torch.randn(samples, 4, generator=torch.Generator().manual_seed(1)))
    lightning_trainer(max_epochs=epochs).fit(theirs, DataLoader(data, batch_size=2, **loader))
    trainer = Trainer(ours, device="cpu")
    history = trainer.fit(DataLoader(data, batch_size=2, **loader), epochs=epochs, verbose=0)
    return theirs, ours, history


def _assert_same_weights(theirs, ours):
    for name, parameter in theirs.named_parameters():
        assert torch.equal(ours.get_parameter(name), parameter), name


class Steps(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        config = {"scheduler": scheduler, "interval": "step", "frequency": 2}
        return {"optimizer": optimizer, "lr_scheduler": config}


def test_step_schedulers_count_frequency_within_each_epoch_as_lightning():
    """3 batches an epoch, frequency 2: Lightning steps after batches 1 of each epoch (its
    (batch_idx + 1) % frequency), not every second step of the run."""
    theirs, ours, history = _fit_both(Steps, epochs=3)
    _assert_same_weights(theirs, ours)
    assert ours.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 / 2**3)
    assert theirs.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 / 2**3)


class StepPlateau(Steps):
    """A ReduceLROnPlateau stepped each batch on a value logged in that batch."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("step_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        config = {"scheduler": scheduler, "interval": "step", "monitor": "step_loss"}
        return {"optimizer": optimizer, "lr_scheduler": config}


def test_a_step_interval_plateau_scheduler_reads_this_steps_value_as_lightning():
    theirs, ours, history = _fit_both(StepPlateau, epochs=2, samples=10)
    _assert_same_weights(theirs, ours)
    lr = theirs.optimizers().param_groups[0]["lr"]
    assert lr < 0.1  # it reduced, from epoch 0 on
    assert ours.optimizers().param_groups[0]["lr"] == lr


class WarmUp(Steps):
    """The issue's example: the learning rate warmed up in an overridden optimizer_step,
    and the gradient norm logged in on_before_optimizer_step."""

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure):
        scale = min(1.0, (self.trainer.global_step + 1) / 4)
        for group in optimizer.param_groups:
            group["lr"] = scale * 0.1
        optimizer.step(closure=optimizer_closure)

    def on_before_optimizer_step(self, optimizer):
        norms = [p.grad.norm() for p in self.parameters() if p.grad is not None]
        self.log("grad_norm", torch.stack(norms).norm())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_warm_up_in_optimizer_step_and_logs_in_on_before_optimizer_step_match_lightning():
    theirs, ours, history = _fit_both(WarmUp, epochs=2)
    _assert_same_weights(theirs, ours)
    assert history.history["lr"] == [pytest.approx(0.075), pytest.approx(0.1)]
    assert len(history.history["grad_norm"]) == 2


class StopsEpochs(Steps):
    def on_train_batch_start(self, batch, batch_idx):
        return -1 if batch_idx == 1 else None  # each epoch ends at its second batch


class SkipsBatches(Steps):
    def training_step(self, batch, batch_idx):
        return None if batch_idx == 1 else super().training_step(batch, batch_idx)


@pytest.mark.parametrize("module_class", [StopsEpochs, SkipsBatches])
def test_ending_an_epoch_and_skipping_a_batch_as_lightning(module_class):
    """on_train_batch_start returning -1 ends the epoch; training_step returning None
    skips the batch's backward pass: weights, steps and learning rates as Lightning's."""
    theirs, ours, _ = _fit_both(module_class, epochs=3)
    _assert_same_weights(theirs, ours)
    assert ours.trainer.global_step == theirs.trainer.global_step
    lr = ours.optimizers().param_groups[0]["lr"]
    assert lr == pytest.approx(theirs.optimizers().param_groups[0]["lr"])


class ReadsTheRun(L.LightningModule):
    """OneCycleLR sized by estimated_stepping_batches (configure_optimizers runs when fit
    starts), and callback_metrics read in on_train_epoch_end."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def on_train_epoch_end(self):
        metrics = self.trainer.callback_metrics
        self.seen.append({k: float(metrics[k]) for k in ("train_loss", "val_loss")})

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=total)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


def test_estimated_stepping_batches_and_current_callback_metrics_as_lightning():
    data = TensorDataset(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)))
    modules = []
    for runner in ("lightning", "ours"):
        torch.manual_seed(0)
        module = ReadsTheRun()
        train, val = DataLoader(data, batch_size=4), DataLoader(data, batch_size=6)
        if runner == "lightning":
            lightning_trainer(max_epochs=3).fit(module, train, val)
        else:
            trainer = Trainer(module, device="cpu")
            assert trainer.optimizer is None  # configure_optimizers reads the run: deferred
            trainer.fit(train, validation_data=val, epochs=3, verbose=0)
            assert module.trainer.estimated_stepping_batches == 9
        modules.append(module)
    theirs, ours = modules
    _assert_same_weights(theirs, ours)
    assert len(ours.seen) == 3
    for their_epoch, our_epoch in zip(theirs.seen, ours.seen):  # this epoch's, not the last
        assert our_epoch == pytest.approx(their_epoch)


class ReadsValidationMetrics(LightningCallback):
    """Reads ``callback_metrics`` where a checkpoint-like callback of a user's does."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_validation_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        self.seen.append({k: float(metrics[k]) for k in ("val_loss", "val_peak")})


class LogsInValidationEpochEnd(ReadsTheRun):
    def on_validation_epoch_end(self):
        metrics = self.trainer.callback_metrics
        self.seen.append({"val_loss": float(metrics["val_loss"])})
        self.log("val_peak", metrics["val_loss"] * 10)


def _fit_both_read(module_class: type, reader_class: type) -> list[tuple]:
    """Fit fresh ``module_class`` modules with both trainers, each with a fresh Lightning
    callback ``reader_class``: [(module, reader) with Lightning's, with ours]."""
    data = TensorDataset(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)))
    runs = []
    for runner in ("lightning", "ours"):
        torch.manual_seed(0)
        module, reader = module_class(), reader_class()
        train, val = DataLoader(data, batch_size=4), DataLoader(data, batch_size=5)
        if runner == "lightning":
            lightning_trainer(max_epochs=2, callbacks=[reader]).fit(module, train, val)
        else:
            Trainer(module, device="cpu").fit(
                train, validation_data=val, epochs=2, verbose=0, callbacks=[reader]
            )
        runs.append((module, reader))
    return runs


def test_callback_metrics_hold_this_validation_in_its_epoch_end_and_end_hooks_as_lightning():
    runs = _fit_both_read(LogsInValidationEpochEnd, ReadsValidationMetrics)
    # (on_train_epoch_end reads too)
    (their_epoch_ends, their_ends), (our_epoch_ends, our_ends) = [
        (module.seen[::2], reader.seen) for module, reader in runs
    ]
    assert len(our_epoch_ends) == len(our_ends) == 2
    for theirs, ours in zip(their_epoch_ends + their_ends, our_epoch_ends + our_ends):
        assert ours == pytest.approx(theirs)  # this epoch's, also in epoch 0


class ReadsStepMetrics(LightningCallback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(float(trainer.callback_metrics["step_loss"]))


class LogsEachStep(ReadsTheRun):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("step_loss", loss)
        return loss


def test_callback_metrics_hold_this_steps_values_in_on_train_batch_end_as_lightning():
    theirs, ours = [reader.seen for _, reader in _fit_both_read(LogsEachStep, ReadsStepMetrics)]
    assert len(ours) == 6
    assert ours == pytest.approx(theirs)  # this step's, also in epoch 0


class GAN(L.LightningModule):
    """Manual optimization: two optimizers, toggled, clipped, schedulers stepped by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = torch.nn.Sequential(
            torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )
        self.discriminator = torch.nn.Sequential(
            torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
        )
        self.noise = torch.Generator().manual_seed(3)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        g_opt, d_opt = self.optimizers()
        fake = self.generator(torch.randn(len(real), 2, generator=self.noise))
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        self.toggle_optimizer(d_opt)
        d_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        d_loss = d_loss + F.binary_cross_entropy_with_logits(
            self.discriminator(fake.detach()), zeros
        )
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        self.clip_gradients(d_opt, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
        d_opt.step()
        self.untoggle_optimizer(d_opt)
        with g_opt.toggle_model():
            g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
            g_opt.zero_grad()
            self.manual_backward(g_loss)
            g_opt.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss})

    def on_train_epoch_end(self):
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=0.01)
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=0.01)
        schedulers = [torch.optim.lr_scheduler.StepLR(o, 1, 0.5) for o in (g_opt, d_opt)]
        return [g_opt, d_opt], schedulers


def test_a_manual_optimization_gan_ends_with_lightnings_weights():
    torch.manual_seed(0)
    real = torch.randn(48, 2) * 0.5 + torch.tensor([2.0, -1.0])
    data = TensorDataset(real)
    torch.manual_seed(0)
    theirs = GAN()
    torch.manual_seed(0)
    ours = GAN()
    lightning = lightning_trainer(max_epochs=3)
    lightning.fit(theirs, DataLoader(data, batch_size=16))
    trainer = Trainer(ours, device="cpu")
    history = trainer.fit(DataLoader(data, batch_size=16), epochs=3, verbose=0)
    _assert_same_weights(theirs, ours)
    assert trainer.global_step == lightning.global_step == 3 * 3 * 2  # each optimizer's steps
    for name in ("d_loss", "g_loss"):
        assert history.history[name][-1] == pytest.approx(lightning.callback_metrics[name].item())
    assert [s.get_last_lr() for s in ours.lr_schedulers()] == [[0.01 / 8]] * 2
    assert all(p.requires_grad for p in ours.parameters())  # untoggled


def test_16_bit_manual_backward_is_scaled_and_steps_unscaled():
    """Under 16-bit AMP, manual_backward scales the loss (on_before_backward sees it
    scaled) and opt.step() unscales before on_before_optimizer_step, as in Lightning."""
    seen: dict[str, list] = {"loss": [], "grad": []}

    class Scaled(GAN):
        def on_before_backward(self, loss):
            seen["loss"].append(loss.detach().float())

        def on_before_optimizer_step(self, optimizer):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
            seen["grad"].append(max(g.abs().max().item() for g in grads if g is not None))

    torch.manual_seed(0)
    module = Scaled()
    trainer = Trainer(module, device="cpu", precision="16-mixed")
    trainer.fit(DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=16), epochs=1, verbose=0)
    scale = trainer.scaler.get_scale()
    assert scale > 1 and min(loss.abs().item() for loss in seen["loss"]) > 1  # scaled losses
    assert len(seen["grad"]) == 2 and max(seen["grad"]) < 100  # unscaled before the step


def test_trainer_aliases_and_the_data_module():
    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return _data(6, 1)

        def val_dataloader(self):
            return _data(4, 2)

        def test_dataloader(self):
            return _data(4, 3)

    seen = []

    class Module(Boring):
        def on_fit_start(self):
            seen.append(self.trainer.datamodule)

    data = Data()
    module = Module()
    trainer = Trainer(module, device="cpu")
    trainer.fit(datamodule=data, epochs=1, verbose=0)
    assert seen == [data] and trainer.datamodule is data
    (validated,) = trainer.validate(datamodule=data, verbose=False)
    (tested,) = trainer.test(module, dataloaders=_data(4, 3), verbose=False)
    assert set(validated) == {"val_loss"} and set(tested) == {"test_loss"}
    assert tested == trainer.test(datamodule=data, verbose=False)[0]
    with pytest.raises(ValueError, match="either the data"):
        trainer.fit(_data(6, 1), datamodule=data)
    with pytest.raises(ValueError, match=r"'best' is Lightning's name.*best_model_path"):
        trainer.test(datamodule=data, ckpt_path="best")


class PredictsOnly(L.LightningModule):
    """A module for inference alone (Lightning's Monte Carlo dropout recipe): no
    training_step, no configure_optimizers."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.layer(x)

    def predict_step(self, batch, batch_idx):
        return self(batch).softmax(-1)

    def test_step(self, batch, batch_idx):
        self.log("test_score", self(batch).max())


def test_a_module_with_only_predict_and_test_steps_runs_them_as_lightning():
    torch.manual_seed(0)
    module = PredictsOnly()
    theirs = lightning_trainer().predict(module, _data(6, 1))
    their_test = lightning_trainer().test(module, _data(6, 1), verbose=False)
    trainer = Trainer(module, device="cpu")
    assert torch.equal(trainer.predict(_data(6, 1), verbose=0), torch.cat(theirs))
    (ours,) = trainer.test(dataloaders=_data(6, 1), verbose=False)
    assert ours == pytest.approx(their_test[0])
    with pytest.raises(ValueError, match="PredictsOnly defines no training_step"):
        trainer.fit(_data(6, 1), verbose=0)


def test_test_without_test_step_is_refused_as_lightning_refuses_it():
    class NoTestStep(Boring):
        test_step = L.LightningModule.test_step  # not overridden: validation_step only

    with pytest.raises(Exception, match=r"No `test_step\(\)` method defined"):
        lightning_trainer().test(NoTestStep(), dataloaders=_data(4, 3))
    trainer = Trainer(NoTestStep(), device="cpu")
    with pytest.raises(ValueError, match=r"defines no test_step.*trainer\.validate"):
        trainer.test(dataloaders=_data(4, 3), verbose=False)
    # evaluate, Keras's name, still scores with validation_step
    assert set(trainer.evaluate(_data(4, 3), verbose=0, return_dict=True)) == {"val_loss"}


def test_test_without_test_dataloader_is_refused_as_lightning_refuses_it():
    class ValidationDataOnly(L.LightningDataModule):
        def val_dataloader(self):
            return _data(4, 2)

    with pytest.raises(Exception, match="`test_dataloader` must be implemented"):
        lightning_trainer().test(Boring(), datamodule=ValidationDataOnly())
    trainer = Trainer(Boring(), device="cpu")
    with pytest.raises(ValueError, match=r"defines no test_dataloader.*trainer\.validate"):
        trainer.test(datamodule=ValidationDataOnly(), verbose=False)
    # evaluate, Keras's name, still falls back to val_dataloader()
    assert set(trainer.evaluate(ValidationDataOnly(), verbose=0, return_dict=True)) == {"test_loss"}


class StepsOnTheLastBatch(L.LightningModule):
    """Lightning's manual-optimization recipe: the scheduler steps on the epoch's last batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(4, 2)
        self.last = []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(self.layer(x).pow(2).mean())
        optimizer.step()
        self.last.append(self.trainer.is_last_batch)
        if self.trainer.is_last_batch:
            self.lr_schedulers().step()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)]


def test_is_last_batch_as_in_lightning():
    theirs, ours, _ = _fit_both(StepsOnTheLastBatch, samples=5)  # batches of 2, 2 and 1
    assert ours.last == theirs.last == [False, False, True] * 2
    _assert_same_weights(theirs, ours)
    assert ours.trainer.num_devices == 1
    unsized = Trainer(StepsOnTheLastBatch(), device="cpu")
    with pytest.raises(TypeError, match="is_last_batch is not known for training data without"):
        unsized.fit(iter([(torch.randn(2, 4),)] * 3), epochs=1, verbose=0)


def test_estimated_stepping_batches_with_accumulation():
    module = Boring()
    trainer = Trainer(module, device="cpu", accumulate_grad_batches=2)
    trainer.fit(_data(10, 1), epochs=3, verbose=0)  # 5 batches: 3 steps an epoch
    assert module.trainer.estimated_stepping_batches == 9 == trainer.global_step
    assert math.isinf(Trainer(Boring(), device="cpu").model.trainer.num_training_batches)
