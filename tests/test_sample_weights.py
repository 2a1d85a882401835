"""Sample weights, class weights and weighted metrics, against numbers computed by hand.

Keras 3 reduces a weighted loss with "sum_over_batch_size": ``sum(loss_i * w_i) / n``, n the
number of samples (not the sum of the weights). ``metrics`` ignore the weights;
``weighted_metrics`` are ``sum(m_i * w_i) / sum(w_i)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Trainer, losses

# A linear model with known weights: predictions are x0 - x1.
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
Y = torch.tensor([[0.0], [0.0], [1.0], [1.0], [3.0]])
W = torch.tensor([1.0, 2.0, 0.5, 0.0, 3.0])
PRED = torch.tensor([1.0, -1.0, 2.0, 0.0, 0.0])
SQUARED = (PRED - Y[:, 0]) ** 2  # 1, 1, 1, 1, 9
ABSOLUTE = (PRED - Y[:, 0]).abs()  # 1, 1, 1, 1, 3


def fixed_model() -> torch.nn.Module:
    module = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -1.0]]))
    return module


def test_weighted_loss_divides_by_the_number_of_samples_not_the_weights():
    trainer = Trainer(fixed_model(), loss="mse", device="cpu")
    loss = trainer.evaluate(X, Y, sample_weight=W, batch_size=5, verbose=0)
    # (1*1 + 2*1 + 0.5*1 + 0*1 + 3*9) / 5 = 30.5 / 5
    assert loss == pytest.approx(6.1)
    assert loss != pytest.approx(30.5 / float(W.sum()))
    as_list = trainer.evaluate(X, Y, sample_weight=W.tolist(), batch_size=5, verbose=0)
    assert as_list == pytest.approx(6.1)
    assert trainer.evaluate(X, Y, batch_size=5, verbose=0) == pytest.approx(13 / 5)


def test_logged_loss_is_the_batch_size_weighted_mean_of_the_batch_losses():
    trainer = Trainer(fixed_model(), loss="mse", device="cpu")
    loss = trainer.evaluate(X, Y, sample_weight=W, batch_size=2, verbose=0)
    batches = [(1 * 1 + 2 * 1) / 2, (0.5 * 1 + 0 * 1) / 2, (3 * 9) / 1]
    assert loss == pytest.approx((batches[0] * 2 + batches[1] * 2 + batches[2] * 1) / 5)


def test_metrics_are_unweighted_and_weighted_metrics_weighted_with_keras_names():
    trainer = Trainer(
        fixed_model(), loss="mse", metrics=["mae"], weighted_metrics=["mae", "mse"], device="cpu"
    )
    logs = trainer.evaluate(X, Y, sample_weight=W, batch_size=2, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "mae", "weighted_mae", "mse"]
    assert logs["mae"] == pytest.approx(float(ABSOLUTE.mean()))  # 7 / 5
    assert logs["weighted_mae"] == pytest.approx((1 + 2 + 0.5 + 0 + 9) / 6.5)
    assert logs["mse"] == pytest.approx((1 + 2 + 0.5 + 0 + 27) / 6.5)
    # without weights, a weighted metric is the plain mean
    plain = trainer.evaluate(X, Y, batch_size=2, verbose=0, return_dict=True)
    assert plain["weighted_mae"] == pytest.approx(7 / 5)
    assert plain["mse"] == pytest.approx(13 / 5)


def test_weighted_accuracy_over_an_epoch_of_uneven_batches():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])  # hits: 1, 0, 1, 1, 0
    weights = torch.tensor([1.0, 4.0, 2.0, 1.0, 2.0])
    trainer = Trainer(
        torch.nn.Identity(),
        loss="cross_entropy",
        metrics=["accuracy"],
        weighted_metrics=["accuracy"],
        device="cpu",
    )
    result = trainer.evaluate(logits, labels, sample_weight=weights, batch_size=2, verbose=0)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    batch_losses = [(ce[:2] * weights[:2]).sum() / 2, (ce[2:4] * weights[2:4]).sum() / 2]
    batch_losses.append(ce[4] * weights[4])
    expected_loss = (2 * batch_losses[0] + 2 * batch_losses[1] + batch_losses[2]) / 5
    assert result == pytest.approx([float(expected_loss), 3 / 5, (1 + 2 + 1) / 10])


def test_class_weight_weights_each_sample_by_its_class():
    # The first epoch's logged loss is computed before the (only) step.
    labels = torch.tensor([0, 1, 1, 2])
    x = torch.randn(4, 3)
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 3)
    ce = torch.nn.functional.cross_entropy(module(x), labels, reduction="none").detach()
    trainer = Trainer(module, "sgd", loss="cross_entropy", device="cpu")
    history = trainer.fit(x, labels, class_weight={0: 2.0, 1: 0.5}, batch_size=4, verbose=0)
    expected = (2.0 * ce[0] + 0.5 * ce[1] + 0.5 * ce[2] + 1.0 * ce[3]) / 4
    assert history.history["loss"][0] == pytest.approx(float(expected), rel=1e-6)


class Passthrough(torch.nn.Module):
    """Returns its input (times a trainable 1.0): the outputs are the given probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_class_weight_with_one_hot_targets_uses_the_argmax():
    probabilities = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]])
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    per_sample = -(one_hot * probabilities.log()).sum(-1)
    expected = float((per_sample * torch.tensor([3.0, 1.0, 3.0])).sum() / 3)
    trainer = Trainer(Passthrough(), "sgd", loss="categorical_crossentropy", device="cpu")
    # train_on_batch returns the loss of the batch before its optimizer step
    assert trainer.train_on_batch(probabilities, one_hot, class_weight={0: 3.0}) == pytest.approx(
        expected, rel=1e-6
    )


def _history(x, y=None, **kwargs):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    trainer = Trainer(
        module, torch.optim.SGD(module.parameters(), lr=0.1), loss="mse", metrics=["mae"],
        weighted_metrics=["mae"], device="cpu",
    )  # fmt: skip
    return trainer.fit(x, y, epochs=2, shuffle=False, verbose=0, **kwargs).history


def test_every_kind_of_input_gives_the_same_weighted_training():
    x, y, w = X, Y, W
    reference = _history(x, y, sample_weight=w, batch_size=2, validation_data=(x, y, w))
    batches = [(x[i : i + 2], y[i : i + 2], w[i : i + 2]) for i in range(0, 5, 2)]
    numpy = x.numpy(), y.numpy(), w.numpy()
    dataset = TensorDataset(x, y, w)
    loader = DataLoader(dataset, batch_size=2)
    runs = {
        "numpy": _history(*numpy[:2], sample_weight=numpy[2], batch_size=2, validation_data=numpy),
        "dataset": _history(dataset, batch_size=2, validation_data=dataset),
        "dataloader": _history(loader, validation_data=loader),
        "iterable": _history(batches, validation_data=batches),
    }
    assert "val_weighted_mae" in reference
    for name, history in runs.items():
        assert history.keys() == reference.keys(), name
        for key in reference:
            assert history[key] == pytest.approx(reference[key], rel=1e-6), (name, key)
    unweighted = _history(x, y, batch_size=2)
    assert unweighted["loss"] != pytest.approx(reference["loss"])


def test_weighted_validation_data_and_validation_split():
    model = fixed_model()  # lr=0: the weights stay as they are
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), loss="mse", device="cpu")
    history = trainer.fit(X[:2], Y[:2], validation_data=(X, Y, W), batch_size=5, verbose=0).history
    assert history["val_loss"] == [pytest.approx(6.1)]
    history = trainer.fit(
        torch.cat([X[:2], X]), torch.cat([Y[:2], Y]), sample_weight=torch.cat([W[:2], W]),
        validation_split=5 / 7, batch_size=5, verbose=0,
    ).history  # fmt: skip
    assert history["val_loss"] == [pytest.approx(6.1)]
    assert history["loss"] == [pytest.approx((1 * 1 + 2 * 1) / 2)]


def test_temporal_sample_weights_weigh_each_time_step():
    outputs = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = torch.zeros(2, 3)
    weights = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    trainer = Trainer(torch.nn.Identity(), loss="mae", device="cpu")
    assert trainer.test_on_batch(outputs, targets, sample_weight=weights) == pytest.approx(
        (1 * 1 + 0 * 2 + 2 * 3) / 6
    )


def test_torch_loss_modules_are_weighted_per_sample_keeping_their_reduction():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2, 2])
    weights = torch.tensor([0.5, 2.0, 1.0])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    mean_loss = torch.nn.CrossEntropyLoss()
    trainer = Trainer(torch.nn.Identity(), loss=mean_loss, device="cpu")
    result = trainer.test_on_batch(logits, labels, sample_weight=weights)
    assert result == pytest.approx(float((ce * weights).sum() / 3))
    assert mean_loss.reduction == "mean"  # given back after the weighted call
    trainer = Trainer(torch.nn.Identity(), loss=torch.nn.CrossEntropyLoss(reduction="sum"))
    result = trainer.test_on_batch(logits, labels, sample_weight=weights)
    assert result == pytest.approx(float((ce * weights).sum()))


def test_keras_loss_classes_follow_their_reduction():
    weights = W
    per_sample = SQUARED
    cases = {
        "sum_over_batch_size": float((per_sample * weights).sum() / 5),
        "sum": float((per_sample * weights).sum()),
        "mean_with_sample_weight": float((per_sample * weights).sum() / weights.sum()),
    }
    for reduction, expected in cases.items():
        loss = losses.MeanSquaredError(reduction=reduction)
        trainer = Trainer(fixed_model(), loss=loss, device="cpu")
        assert trainer.test_on_batch(X, Y, sample_weight=weights) == pytest.approx(expected)
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="average")


def test_keras_style_metric_objects_receive_the_weights():
    class WeightedMean:
        name = "weighted_error"

        def __init__(self):
            self.reset_state()

        def update_state(self, y_true, y_pred, sample_weight=None):
            error = (y_pred - y_true).abs().flatten()
            w = torch.ones_like(error) if sample_weight is None else sample_weight
            self.total += float((error * w).sum())
            self.count += float(w.sum())

        def result(self):
            return self.total / self.count

        def reset_state(self):
            self.total = self.count = 0.0

    trainer = Trainer(fixed_model(), loss="mse", weighted_metrics=[WeightedMean()], device="cpu")
    logs = trainer.evaluate(X, Y, sample_weight=W, batch_size=2, verbose=0, return_dict=True)
    assert logs["weighted_error"] == pytest.approx(12.5 / 6.5)


def test_weighting_errors_name_the_problem():
    loader = DataLoader(TensorDataset(X, Y), batch_size=2)
    trainer = Trainer(fixed_model(), "sgd", loss="mse", device="cpu")
    with pytest.raises(ValueError, match="sample_weight is only accepted with tensor"):
        trainer.fit(loader, sample_weight=W, verbose=0)
    with pytest.raises(ValueError, match="cannot be specified at the same time"):
        trainer.fit(X, Y, sample_weight=W, class_weight={0: 1.0}, verbose=0)
    weighted_loader = DataLoader(TensorDataset(X, Y, W), batch_size=2)
    with pytest.raises(ValueError, match="You cannot `class_weight` and `sample_weight`"):
        trainer.fit(weighted_loader, class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="integer keys"):
        trainer.fit(X, Y, class_weight={"cat": 2.0}, verbose=0)
    with pytest.raises(ValueError, match="same first dimension"):
        trainer.fit(X, Y, sample_weight=W[:3], verbose=0)
    with pytest.raises(ValueError, match="one array of weights"):
        trainer.fit(X, Y, sample_weight={"a": W}, verbose=0)
    with pytest.raises(ValueError, match="sample_weight needs targets"):
        trainer.evaluate(X, sample_weight=W, verbose=0)
    scalar_loss = Trainer(fixed_model(), "sgd", loss=lambda p, t: ((p - t) ** 2).mean())
    with pytest.raises(ValueError, match="one value per sample"):
        scalar_loss.fit(X, Y, sample_weight=W, verbose=0)


def test_torchmetrics_objects_cannot_be_weighted_metrics():
    import torchmetrics

    with pytest.raises(TypeError, match="cannot take sample weights"):
        Trainer(fixed_model(), loss="mse", weighted_metrics=[torchmetrics.MeanSquaredError()])


def test_unweighted_training_is_unchanged_by_weights_of_one():
    ones = _history(X, Y, sample_weight=torch.ones(5), batch_size=2)
    plain = _history(X, Y, batch_size=2)
    assert ones["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert ones["weighted_mae"] == pytest.approx(plain["mae"], rel=1e-6)


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="gloo is not available"
)
def test_weighted_logs_under_ddp_equal_a_single_process(tmp_path):
    """fit on arrays, a Dataset and with class_weight, and train_on_batch/test_on_batch."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_distributed import _run

    script = Path(__file__).parent / "ddp_scripts" / "weighted_ddp.py"
    for processes in (1, 2):
        out = tmp_path / str(processes)
        out.mkdir()
        done = _run(out, processes, script=script)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    single = json.loads((tmp_path / "1" / "result_rank0.json").read_text())
    for rank in (0, 1):
        ddp = json.loads((tmp_path / "2" / f"result_rank{rank}.json").read_text())
        for part, history in single.items():
            assert ddp[part].keys() == history.keys()
            for key, values in history.items():
                assert np.allclose(ddp[part][key], values, rtol=1e-5), (part, key)
    assert "val_weighted_accuracy" in single["arrays"]


class TwoHeads(torch.nn.Module):
    """Returns its two input columns as two named outputs."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": x[:, :1], "b": x[:, 1:]}


def test_one_sample_weight_weighs_every_output_of_a_multi_output_model():
    outputs = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    targets = {"a": torch.zeros(3, 1), "b": torch.zeros(3, 1)}
    weights = torch.tensor([1.0, 0.0, 2.0])
    trainer = Trainer(
        TwoHeads(),
        loss={"a": "mse", "b": "mae"},
        metrics={"a": ["mae"]},
        weighted_metrics={"a": ["mae"], "b": ["mse"]},
        device="cpu",
    )
    logs = trainer.test_on_batch(outputs, targets, sample_weight=weights, return_dict=True)
    a_loss, b_loss = (1 * 1 + 0 * 9 + 2 * 0) / 3, (1 * 2 + 0 * 0 + 2 * 1) / 3
    assert logs == pytest.approx(
        {
            "loss": a_loss + b_loss,
            "a_loss": a_loss,
            "b_loss": b_loss,
            "a_mae": 4 / 3,
            "a_weighted_mae": 1 / 3,
            "b_mse": (1 * 4 + 2 * 1) / 3,
        }
    )
    assert list(logs) == ["loss", "a_loss", "b_loss", "a_mae", "a_weighted_mae", "b_mse"]
