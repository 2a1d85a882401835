"""Seeded runs: `fit`, `evaluate` and `predict` draw nothing from torch's global generator, so
a seeded model with Dropout ends with the weights of the user's own loop; shuffling follows
the seed, is repeatable, and differs from one `fit` to the next."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import OrderRecorder
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Trainer, seed_everything

SAMPLES, BATCH, EPOCHS = 40, 8, 2


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 4, generator=generator)
    return x, x.sum(1, keepdim=True)


def dropout_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1)
    )


def hand_loop(
    x: torch.Tensor, y: torch.Tensor, loader: DataLoader | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """What a user writes, over slices of the tensors or over their DataLoader: the weights
    it ends with and the global generator's state."""
    seed_everything(3)
    model = dropout_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(EPOCHS):
        model.train()
        if loader is None:
            batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, SAMPLES, BATCH)]
        else:
            batches = loader  # a DataLoader draws a seed from the global generator each pass
        for inputs, targets in batches:
            optimizer.zero_grad()
            loss = F.mse_loss(model(inputs), targets)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # validation, as the trainer runs it
            model(x)
    return [p.detach().clone() for p in model.parameters()], torch.get_rng_state()


def test_a_dropout_model_ends_with_the_weights_of_the_hand_loop_for_every_kind_of_input():
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    inputs = {"tensors": (x, y), "a Dataset": (TensorDataset(x, y),), "a DataLoader": (loader,)}
    for name, args in inputs.items():
        expected, expected_state = hand_loop(x, y, loader if name == "a DataLoader" else None)
        seed_everything(3)
        model = dropout_model()
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), "mse")
        validation = TensorDataset(x, y) if name == "a Dataset" else (x, y)
        trainer.fit(
            *args,
            batch_size=None if name == "a DataLoader" else BATCH,  # the loader has its own
            epochs=EPOCHS,
            shuffle=False,
            validation_data=validation,
            validation_batch_size=SAMPLES,
            verbose=0,
        )
        for mine, theirs in zip(model.parameters(), expected):
            assert torch.equal(mine, theirs), name
        assert torch.equal(torch.get_rng_state(), expected_state), name


def test_evaluate_and_predict_leave_the_global_generator_where_it_was():
    x, y = data()
    model = dropout_model()
    trainer = Trainer(model, "sgd", "mse")
    before = torch.get_rng_state()
    trainer.evaluate(x, y, verbose=0)
    trainer.evaluate(TensorDataset(x, y), verbose=0)
    trainer.predict(x, verbose=0)
    trainer.predict(TensorDataset(x), verbose=0)
    assert torch.equal(torch.get_rng_state(), before)


def shuffled_orders(seed: int, fits: int, dataset: bool, draw_first: bool = False) -> list:
    """The sample order of each of ``fits`` calls of `fit` (2 epochs each) on one trainer."""
    seed_everything(seed)
    if draw_first:
        torch.rand(5)  # the user draws numbers of their own before fit
    ids = torch.arange(20, dtype=torch.float32)[:, None]
    x = (TensorDataset(ids, ids),) if dataset else (ids, ids)
    model = OrderRecorder()
    trainer = Trainer(model, "sgd", "mse")
    orders = []
    for _ in range(fits):
        model.seen = []
        before = torch.get_rng_state()
        trainer.fit(*x, batch_size=4, epochs=2, shuffle=True, verbose=0)
        assert torch.equal(torch.get_rng_state(), before)  # shuffling draws nothing from it
        orders.append(model.seen)
    return orders


def test_shuffling_follows_the_seed_repeats_and_differs_between_fits():
    for dataset in (False, True):
        first, second = shuffled_orders(5, fits=2, dataset=dataset)
        assert sorted(first) == sorted(second) == sorted(list(range(20)) * 2)
        assert first[:20] != first[20:]  # each epoch its own order
        assert first != second  # a second fit does not repeat the first one's order
        assert shuffled_orders(5, fits=2, dataset=dataset) == [first, second]
        assert shuffled_orders(5, fits=1, dataset=dataset, draw_first=True) == [first]
        assert shuffled_orders(6, fits=1, dataset=dataset) != [first]
