"""Losses that take probabilities: the warning when they receive logits, and the
``from_logits`` forms of Keras's loss classes."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from torchcallbacks import Trainer, losses

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, 3.0], [0.0, 0.0, -2.0]])
CLASSES = torch.tensor([0, 2, 1])
ONE_HOT = F.one_hot(CLASSES, 3).float()


def _logit_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "look like logits" in str(w.message)]


@pytest.mark.parametrize(
    ("name", "targets", "advice"),
    [
        ("sparse_categorical_crossentropy", CLASSES, 'loss="cross_entropy"'),
        ("categorical_crossentropy", ONE_HOT, "CategoricalCrossentropy(from_logits=True)"),
        ("binary_crossentropy", (LOGITS > 0).float(), "BinaryCrossentropy(from_logits=True)"),
    ],
)
def test_logits_given_to_a_probability_loss_warn_once_naming_the_loss_to_use(name, targets, advice):
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 3)  # outputs logits
    trainer = Trainer(module, "sgd", loss=name)
    x = torch.randn(12, 3)
    y = torch.cat([targets] * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(x, y, batch_size=3, epochs=2, validation_data=(x, y), verbose=0)
        trainer.evaluate(x, y, verbose=0)
    messages = _logit_warnings(caught)
    assert len(messages) == 1
    assert f"loss '{name}' takes probabilities" in messages[0]
    assert advice in messages[0]


def test_probabilities_do_not_warn():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Softmax(dim=-1))
    trainer = Trainer(module, "sgd", loss="sparse_categorical_crossentropy")
    sigmoid = Trainer(
        torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid()),
        "sgd",
        loss="binary_crossentropy",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(torch.randn(6, 3), CLASSES.repeat(2), verbose=0)
        sigmoid.fit(torch.randn(6, 3), torch.ones(6, 1), verbose=0)
    assert _logit_warnings(caught) == []


@pytest.mark.parametrize("loss", ["cross_entropy", torch.nn.CrossEntropyLoss()])
def test_a_softmax_output_given_to_cross_entropy_warns_once_and_logits_do_not(loss):
    # a Keras model ported with its final softmax, and the loss for logits
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Softmax(dim=-1))
    trainer = Trainer(module, "sgd", loss=loss)
    x, y = torch.randn(12, 3), CLASSES.repeat(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(x, y, batch_size=3, epochs=2, validation_data=(x, y), verbose=0)
        Trainer(torch.nn.Linear(3, 3), "sgd", loss=loss).fit(x, y, verbose=0)  # logits
    messages = [str(w.message) for w in caught if "softmaxed twice" in str(w.message)]
    assert len(messages) == 1
    assert "Remove the final softmax" in messages[0]
    assert 'loss="sparse_categorical_crossentropy"' in messages[0]


def test_a_loss_object_without_from_logits_warns_and_with_it_does_not():
    with pytest.warns(UserWarning, match="from_logits=True"):
        Trainer(torch.nn.Identity(), loss=losses.BinaryCrossentropy()).evaluate(
            LOGITS, (LOGITS > 0).float(), verbose=0
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(torch.nn.Identity(), loss=losses.BinaryCrossentropy(from_logits=True)).evaluate(
            LOGITS, (LOGITS > 0).float(), verbose=0
        )
    assert _logit_warnings(caught) == []


def test_from_logits_losses_equal_the_probability_losses_on_activated_outputs():
    binary = (LOGITS > 0).float()
    cases = [
        (losses.BinaryCrossentropy, "binary_crossentropy", binary, torch.sigmoid(LOGITS)),
        (losses.CategoricalCrossentropy, "categorical_crossentropy", ONE_HOT, LOGITS.softmax(-1)),
        (
            losses.SparseCategoricalCrossentropy,
            "sparse_categorical_crossentropy",
            CLASSES,
            LOGITS.softmax(-1),
        ),
    ]
    for cls, name, targets, probabilities in cases:
        from_logits = Trainer(torch.nn.Identity(), loss=cls(from_logits=True))
        on_probabilities = Trainer(torch.nn.Identity(), loss=name)
        assert from_logits.evaluate(LOGITS, targets, verbose=0) == pytest.approx(
            on_probabilities.evaluate(probabilities, targets, verbose=0), rel=1e-5
        ), name
    expected = F.cross_entropy(LOGITS, CLASSES)
    sparse = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(sparse(LOGITS, CLASSES)) == pytest.approx(float(expected))


def test_probability_losses_by_hand():
    probabilities = torch.tensor([[0.8], [0.3]])
    labels = torch.tensor([[1.0], [0.0]])
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert float(losses.BinaryCrossentropy()(probabilities, labels)) == pytest.approx(expected)
    summed = losses.BinaryCrossentropy(reduction="sum")(probabilities, labels)
    assert float(summed) == pytest.approx(2 * expected)
    rows = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert float(losses.CategoricalCrossentropy()(rows, ONE_HOT[:2])) == pytest.approx(
        -(math.log(0.7) + math.log(0.8)) / 2  # classes 0 and 2
    )


def test_loss_objects_train_a_model():
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = (x[:, :1] > 0).float()
    module = torch.nn.Linear(2, 1)
    trainer = Trainer(
        module,
        torch.optim.SGD(module.parameters(), lr=1.0),
        loss=losses.BinaryCrossentropy(from_logits=True),
        metrics=[lambda p, t: ((p > 0).float() == t).float().mean()],
    )
    history = trainer.fit(x, y, epochs=5, batch_size=16, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert history["<lambda>"][-1] > 0.9
