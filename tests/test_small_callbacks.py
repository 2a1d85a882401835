"""TerminateOnNaN and BaseLogger outcomes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import linear_model

from torchcallbacks import BaseLogger, Callback, LambdaCallback, TerminateOnNaN, Trainer
from torchcallbacks.checks import NonFiniteInputWarning


def _data_with_inf_at_batch_2():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(5))
    y = torch.zeros(20, 1)
    y[12] = float("inf")  # batch 2 of size 5
    return x, y


def test_terminate_on_nan_stops_after_the_bad_batch(capsys):
    x, y = _data_with_inf_at_batch_2()
    batches = []
    spy = LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    with pytest.warns(NonFiniteInputWarning, match="y holds NaN or infinite values"):
        history = Trainer(linear_model(), "sgd", "mse").fit(
            x, y, batch_size=5, epochs=3, shuffle=False, verbose=0,
            callbacks=[TerminateOnNaN(), spy],
        )  # fmt: skip
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    assert batches == [0, 1, 2]
    assert history.epoch == [0] and history.history["loss"] == [math.inf]


def test_terminate_on_nan_raise_error_skips_train_end():
    x, y = _data_with_inf_at_batch_2()
    ended = []
    spy = LambdaCallback(on_train_end=lambda logs: ended.append(True))
    with (
        pytest.raises(
            RuntimeError, match=r"NaN or Inf loss encountered at batch 2\. Loss value: inf"
        ),
        pytest.warns(NonFiniteInputWarning),
    ):
        Trainer(linear_model(), "sgd", "mse").fit(
            x, y, batch_size=5, shuffle=False, verbose=0,
            callbacks=[TerminateOnNaN(raise_error=True), spy],
        )  # fmt: skip
    assert ended == []


def test_base_logger_averages_per_batch_values_and_keeps_running_means():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(6))
    y = torch.randn(20, 1, generator=torch.Generator().manual_seed(7))

    class TokensPerBatch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            logs["tokens"] = [1.0, 3.0, 5.0, 7.0][batch]  # a per-batch value

    history = Trainer(linear_model(), "sgd", "mse").fit(
        x, y, batch_size=5, shuffle=False, verbose=0, callbacks=[TokensPerBatch(), BaseLogger()]
    )
    reference = Trainer(linear_model(), "sgd", "mse").fit(
        x, y, batch_size=5, shuffle=False, verbose=0
    )
    assert history.history["tokens"] == [4.0]  # (1 + 3 + 5 + 7) * 5 / 20
    assert history.history["loss"] == reference.history["loss"]  # running mean kept as is
