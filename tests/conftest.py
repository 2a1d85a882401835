"""Shared fixtures: tiny deterministic data and models."""

from __future__ import annotations

import os

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
