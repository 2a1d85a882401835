"""Callbacks reach the optimizer as ``self.optimizer`` and as ``self.model.optimizer`` (Keras)."""

from __future__ import annotations

import pytest
import torch

from torchcallbacks import Callback, Trainer

LEARNING_RATES = [0.1, 0.05, 0.02, 0.01]  # one per batch


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


class BatchLearningRate(Callback):
    """Sets the learning rate of each batch, the way a Keras callback would."""

    def __init__(self, keras_idiom: bool) -> None:
        super().__init__()
        self.keras_idiom = keras_idiom

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer if self.keras_idiom else self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATES[batch]


def _by_hand() -> torch.Tensor:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = _data()
    for batch in range(4):
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATES[batch]
        optimizer.zero_grad()
        rows = slice(batch * 4, batch * 4 + 4)
        loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
    return model.weight.detach()


@pytest.mark.parametrize("keras_idiom", [False, True], ids=["self.optimizer", "model.optimizer"])
def test_callback_changes_the_learning_rate_of_the_steps(keras_idiom):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, optimizer, "mse")
    callback = BatchLearningRate(keras_idiom)
    trainer.fit(*_data(), batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    assert callback.optimizer is optimizer and model.optimizer is optimizer
    assert trainer.get_lr() == LEARNING_RATES[-1]
    torch.testing.assert_close(model.weight.detach(), _by_hand())


class Reader(Callback):
    # Records what a callback sees as the optimizer at each epoch end.

    def __init__(self, keras_idiom: bool = False) -> None:
        super().__init__()
        self.keras_idiom = keras_idiom
        self.seen: list = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.optimizer if self.keras_idiom else self.optimizer)


class OwnOptimizerAttribute(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.optimizer = "the module's own setting"

    def forward(self, x):
        return self.layer(x)


class OptimizerProperty(torch.nn.Linear):
    @property
    def optimizer(self) -> str:
        return "a property of the module"


class OptimizerSubmodule(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.optimizer = torch.nn.Linear(3, 1)  # e.g. a learned optimizer

    def forward(self, x):
        return self.optimizer(x)


def test_a_module_keeps_an_optimizer_of_its_own():
    modules = [OwnOptimizerAttribute(), OptimizerProperty(3, 1), OptimizerSubmodule()]
    kept = [module.optimizer for module in modules]
    for module, before in zip(modules, kept):
        trainer = Trainer(module, "sgd", "mse")
        reader = Reader()
        trainer.fit(*_data(), batch_size=4, epochs=1, verbose=0, callbacks=[reader])
        assert module.optimizer is before
        assert reader.seen == [trainer.optimizer]
    assert set(modules[2].state_dict()) == {"optimizer.weight", "optimizer.bias"}


def test_model_optimizer_follows_the_trainer_and_stays_out_of_the_state_dict():
    model = _model()
    first = Trainer(model, "sgd", "mse")
    first.evaluate(*_data(), verbose=0)
    assert model.optimizer is first.optimizer
    second = Trainer(model, "adam", "mse")
    second.fit(*_data(), batch_size=4, epochs=1, verbose=0)
    assert isinstance(model.optimizer, torch.optim.Adam) and model.optimizer is second.optimizer
    assert set(model.state_dict()) == {"weight", "bias"}


def test_a_callback_that_sets_its_own_optimizer_keeps_it():
    class Holder(Callback):
        def __init__(self, optimizer):
            super().__init__()
            self.optimizer = optimizer

    own = torch.optim.SGD(_model().parameters(), lr=0.3)
    holder = Holder(own)
    Trainer(_model(), "sgd", "mse").fit(*_data(), epochs=1, verbose=0, callbacks=[holder])
    assert holder.optimizer is own


def test_lightning_module_gets_model_optimizer_and_keeps_optimizers():
    import lightning

    class Regressor(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Regressor()
    trainer = Trainer(module)
    reader = Reader(keras_idiom=True)
    trainer.fit(*_data(), batch_size=4, epochs=1, verbose=0, callbacks=[reader])
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert reader.seen == [trainer.optimizer]
    assert type(module).optimizers is lightning.LightningModule.optimizers
