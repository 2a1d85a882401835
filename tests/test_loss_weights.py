"""Keras's ``loss_weights``: the loss trained and logged is the weighted sum of the outputs'
losses (sample weights applied inside each), the per-output losses are logged unweighted, as
Keras 3 does. The expected numbers are Keras's formulas computed by hand."""

import pytest
import torch
import torch.nn.functional as F

from torchcallbacks import Trainer


class TwoHeads(torch.nn.Module):
    """A regression head ``a`` and a 3-class head ``b`` on a shared layer."""

    def __init__(self, as_dict=True):
        super().__init__()
        torch.manual_seed(0)
        self.shared = torch.nn.Linear(4, 8)
        self.a, self.b = torch.nn.Linear(8, 1), torch.nn.Linear(8, 3)
        self.as_dict = as_dict

    def forward(self, x):
        hidden = torch.tanh(self.shared(x))
        a, b = self.a(hidden), self.b(hidden)
        return {"a": a, "b": b} if self.as_dict else (a, b)


def _data(n=32):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=generator)
    return x, x[:, :1] * 2, (x[:, 1] > 0).long() + (x[:, 2] > 0).long()


def _hand_losses(model, x, ya, yb, sample_weight=None):
    """Keras's per-output losses: ``sum(loss_i * w_i) / n`` with sample weights."""
    with torch.no_grad():
        out = model(x)
    a, b = (out["a"], out["b"]) if isinstance(out, dict) else out
    mse = F.mse_loss(a, ya, reduction="none").mean(-1)
    ce = F.cross_entropy(b, yb, reduction="none")
    if sample_weight is None:
        return mse.mean().item(), ce.mean().item()
    return (mse * sample_weight).mean().item(), (ce * sample_weight).mean().item()


def test_the_loss_is_the_weighted_sum_and_per_output_losses_are_unweighted():
    x, ya, yb = _data()
    model = TwoHeads()
    trainer = Trainer(
        model, "sgd", {"a": "mse", "b": "cross_entropy"}, loss_weights={"a": 0.5, "b": 2.0}
    )
    logs = trainer.evaluate(x, {"a": ya, "b": yb}, batch_size=32, verbose=0, return_dict=True)
    mse, ce = _hand_losses(model, x, ya, yb)
    assert list(logs) == ["loss", "a_loss", "b_loss"]
    assert logs["a_loss"] == pytest.approx(mse, rel=1e-6)
    assert logs["b_loss"] == pytest.approx(ce, rel=1e-6)
    assert logs["loss"] == pytest.approx(0.5 * mse + 2.0 * ce, rel=1e-6)


def test_training_follows_the_weighted_sum():
    """One SGD step of the Trainer is the step of a hand loop on ``0.5 * mse + 2 * ce``;
    the epoch logs hold the unweighted per-output losses."""
    x, ya, yb = _data()
    model, hand = TwoHeads(), TwoHeads()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        {"a": "mse", "b": "cross_entropy"},
        loss_weights={"a": 0.5, "b": 2.0},
    )
    mse, ce = _hand_losses(hand, x, ya, yb)
    history = trainer.fit(x, {"a": ya, "b": yb}, batch_size=32, epochs=1, verbose=0)
    optimizer = torch.optim.SGD(hand.parameters(), lr=0.1)
    out = hand(x)
    (0.5 * F.mse_loss(out["a"], ya) + 2.0 * F.cross_entropy(out["b"], yb)).backward()
    optimizer.step()
    for ours, theirs in zip(model.parameters(), hand.parameters()):
        torch.testing.assert_close(ours, theirs)
    assert history.history["a_loss"] == [pytest.approx(mse, rel=1e-6)]
    assert history.history["b_loss"] == [pytest.approx(ce, rel=1e-6)]
    assert history.history["loss"] == [pytest.approx(0.5 * mse + 2.0 * ce, rel=1e-6)]


def test_a_list_in_the_order_of_the_outputs_and_a_zero_weight():
    """A weight of 0 leaves the parameters only that output's loss reaches untouched."""
    x, ya, yb = _data()
    model = TwoHeads(as_dict=False)
    before = model.b.weight.detach().clone()
    trainer = Trainer(model, "sgd", ["mse", "cross_entropy"], loss_weights=[1.0, 0.0])
    history = trainer.fit(x, (ya, yb), batch_size=8, epochs=2, verbose=0)
    assert torch.equal(model.b.weight, before)
    assert history.history["output_2_loss"][-1] > 0.1  # logged unweighted
    logs = trainer.evaluate(x, (ya, yb), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["output_1_loss"], rel=1e-6)


def test_sample_weights_apply_inside_each_output_loss():
    x, ya, yb = _data()
    weights = torch.linspace(0.0, 2.0, 32)
    model = TwoHeads()
    trainer = Trainer(
        model, "sgd", {"a": "mse", "b": "cross_entropy"}, loss_weights={"a": 0.5, "b": 2.0}
    )
    logs = trainer.evaluate(
        x, {"a": ya, "b": yb}, batch_size=32, verbose=0, return_dict=True, sample_weight=weights
    )
    mse, ce = _hand_losses(model, x, ya, yb, weights)
    assert logs["a_loss"] == pytest.approx(mse, rel=1e-6)
    assert logs["b_loss"] == pytest.approx(ce, rel=1e-6)
    assert logs["loss"] == pytest.approx(0.5 * mse + 2.0 * ce, rel=1e-6)


@pytest.mark.parametrize("loss_weights", [0.25, [0.25]])
def test_a_single_output_logs_its_weighted_loss(loss_weights):
    x, ya, _ = _data()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    trainer = Trainer(model, "sgd", "mse", loss_weights=loss_weights)
    loss = trainer.evaluate(x, ya, verbose=0)
    with torch.no_grad():
        assert loss == pytest.approx(0.25 * F.mse_loss(model(x), ya).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("loss", "loss_weights", "message"),
    [
        (["mse", "cross_entropy"], [1.0, 2.0, 3.0], r"got 2 losses \(for the outputs 'a', 'b'\)"),
        (["mse", "cross_entropy"], {"a": 1.0, "c": 1.0}, r"\['c'\].*outputs with a loss are 'a'"),
        ({"a": "mse", "b": "cross_entropy"}, {"a": 1.0}, r"no weight for \['b'\]"),
        ({"a": "mse", "b": "cross_entropy"}, [1.0, 2.0], "loss is a dict, so loss_weights"),
        ({"a": "mse", "b": "cross_entropy"}, {"a": "high", "b": 1.0}, "must be a number"),
        ("mse", {"a": 1.0}, "single output"),
    ],
)
def test_loss_weights_that_do_not_fit_the_outputs_are_refused(loss, loss_weights, message):
    x, ya, yb = _data()
    with pytest.raises(ValueError, match=message):
        model = TwoHeads() if loss != "mse" else torch.nn.Linear(4, 1)
        trainer = Trainer(model, "sgd", loss, loss_weights=loss_weights)
        trainer.fit(x, {"a": ya, "b": yb} if loss != "mse" else ya, epochs=1, verbose=0)


def test_loss_weights_without_a_loss_are_refused():
    """A module computing its own loss (HuggingFace style) has no outputs to weight."""

    class OwnLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            return {"loss": self.fc(x).mean()}

    with pytest.raises(ValueError, match="loss_weights weights the losses given in loss="):
        Trainer(OwnLoss(), "sgd", loss_weights=[1.0])
