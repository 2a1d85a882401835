"""Shared fixtures: tiny deterministic data and models (also imported by the worker scripts
in ``ddp_scripts``)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

# MLflow reports usage over the network unless told not to: the tests reach only loopback.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def regression_data():
    """20 samples, 3 features, a linear target (N, 1)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1
    return x, y


@pytest.fixture
def classification_data():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(64, 4, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def linear_model(inputs: int = 3, outputs: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(inputs, outputs)


def bert_config(**changes: Any) -> Any:
    """A tiny BERT configuration (random weights are built from it: nothing is downloaded)."""
    from transformers import BertConfig

    settings = {
        "vocab_size": 64,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 16,
        "num_labels": 2,
    }
    return BertConfig(**{**settings, **changes})


class OrderRecorder(torch.nn.Module):
    """A linear model that records the sample ids (its first input column) it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen += x[:, 0].long().tolist()
        return self.linear(x)


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
