"""Keras's train_on_batch / test_on_batch / predict_on_batch.

As in Keras 3: a scalar loss without metrics, ``[loss, *metrics]`` with them, a dict with
``return_dict=True``; the metrics restart at every call (they describe that batch only);
``train_on_batch`` reports the batch's loss before its optimizer step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchcallbacks import Trainer

X = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0], [-2.0, 0.5]])
Y = torch.tensor([[1.0], [0.0], [2.0], [-1.0]])


def linear() -> torch.nn.Linear:
    module = torch.nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[0.5, -0.25]]))
        module.bias.fill_(0.1)
    return module


def test_train_on_batch_takes_one_sgd_step_and_returns_the_loss_before_it():
    module = linear()
    reference = linear()
    trainer = Trainer(module, torch.optim.SGD(module.parameters(), lr=0.1), loss="mse")
    loss = trainer.train_on_batch(X, Y)
    expected = torch.nn.functional.mse_loss(reference(X), Y)
    expected.backward()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter -= 0.1 * parameter.grad
    assert isinstance(loss, float)
    assert loss == pytest.approx(float(expected.detach()))
    for got, want in zip(module.parameters(), reference.parameters()):
        assert torch.allclose(got, want)
    assert trainer.global_step == 1


def test_results_are_a_list_or_a_dict_with_metrics_and_restart_every_call():
    module = linear()
    trainer = Trainer(
        module, torch.optim.SGD(module.parameters(), lr=0.0), loss="mse", metrics=["mae"]
    )
    first = trainer.train_on_batch(X[:2], Y[:2])
    second = trainer.train_on_batch(X[2:], Y[2:], return_dict=True)
    with torch.no_grad():
        errors = module(X) - Y
    assert first == pytest.approx(
        [float(errors[:2].square().mean()), float(errors[:2].abs().mean())]
    )
    assert second == pytest.approx(
        {"loss": float(errors[2:].square().mean()), "mae": float(errors[2:].abs().mean())}
    )
    assert trainer.test_on_batch(X[:2], Y[:2]) == pytest.approx(first)
    assert trainer.test_on_batch(X, Y, return_dict=True)["mae"] == pytest.approx(
        float(errors.abs().mean())
    )


def test_train_on_batch_with_sample_and_class_weights():
    module = linear()
    trainer = Trainer(module, torch.optim.SGD(module.parameters(), lr=0.0), loss="mse")
    with torch.no_grad():
        squared = (module(X) - Y).square().flatten()
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5])
    assert trainer.train_on_batch(X, Y, sample_weight=weights) == pytest.approx(
        float((squared * weights).sum() / 4)
    )
    labels = torch.tensor([[1.0], [0.0], [2.0], [-1.0]])  # classes 1, 0, 2, -1 (unnamed: 1.0)
    class_weights = torch.tensor([3.0, 1.0, 1.0, 1.0])  # class 1 weighs 3
    assert trainer.train_on_batch(X, labels, class_weight={1: 3.0}) == pytest.approx(
        float((squared * class_weights).sum() / 4)
    )
    with pytest.raises(ValueError, match="cannot be specified at the same time"):
        trainer.train_on_batch(X, Y, sample_weight=weights, class_weight={1: 3.0})


def test_test_on_batch_runs_in_eval_mode_and_changes_nothing():
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1)
    )
    trainer = Trainer(module, "sgd", loss="mse")
    before = [p.detach().clone() for p in module.parameters()]
    first = trainer.test_on_batch(X.numpy(), Y.numpy())
    assert trainer.test_on_batch(X, Y) == first  # no dropout: the same value twice
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert module.training  # the module's own mode is given back


def test_predict_on_batch_returns_the_eval_mode_outputs_on_the_cpu():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    trainer = Trainer(module, "sgd", loss="mse")
    outputs = trainer.predict_on_batch(X.numpy().astype(np.float64))
    module.eval()
    with torch.no_grad():
        expected = module(X)
    assert isinstance(outputs, torch.Tensor) and outputs.device.type == "cpu"
    assert torch.allclose(outputs, expected)


def test_train_on_batch_steps_every_call_even_with_gradient_accumulation():
    module = linear()
    trainer = Trainer(
        module, torch.optim.SGD(module.parameters(), lr=0.1), loss="mse", accumulate_grad_batches=4
    )
    reference = linear()
    trainer.train_on_batch(X, Y)
    torch.nn.functional.mse_loss(reference(X), Y).backward()
    assert torch.allclose(module.weight, reference.weight - 0.1 * reference.weight.grad)


def test_train_on_batch_keeps_frozen_submodules_in_eval_mode():
    torch.manual_seed(0)
    backbone = torch.nn.BatchNorm1d(2)
    module = torch.nn.Sequential(backbone, torch.nn.Linear(2, 1))
    backbone.eval()
    trainer = Trainer(module, "sgd", loss="mse")
    trainer.train_on_batch(X, Y)
    assert not backbone.training
    assert torch.equal(backbone.running_mean, torch.zeros(2))  # statistics not updated


def test_train_on_batch_without_optimizer_says_how_to_pass_one():
    trainer = Trainer(linear(), loss="mse")
    with pytest.raises(ValueError, match="optimizer"):
        trainer.train_on_batch(X, Y)
