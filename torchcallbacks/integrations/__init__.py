"""Callbacks for third-party tools, each with its own extra; importing this package imports
none of those tools (a callback imports its package when it is made).

- `MLflowLogger` (``pip install "torchcallbacks[mlflow]"``): a fit in an MLflow run.
- `OptunaPruning` (``pip install "torchcallbacks[optuna]"``): prune an Optuna trial.
"""

from torchcallbacks.integrations.mlflow import MLflowLogger
from torchcallbacks.integrations.optuna import OptunaPruning

__all__ = ["MLflowLogger", "OptunaPruning"]
