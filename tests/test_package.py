"""The package surface: exports, version, and optional extras loaded only when needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

import torchcallbacks
from torchcallbacks import callbacks

SPEC_CALLBACKS = [
    "History", "BaseLogger", "ProgbarLogger", "EarlyStopping", "LearningRateScheduler",
    "ReduceLROnPlateau", "ModelCheckpoint", "TensorBoard", "LambdaCallback", "TerminateOnNaN",
    "RemoteMonitor", "CSVLogger", "JSONLogger", "BackupAndRestore", "SwapEMAWeights",
]  # fmt: skip


def test_top_level_and_callbacks_exports():
    functions = ["Trainer", "Callback", "CallbackList", "load_checkpoint", "plot_model"]
    for name in [*functions, *SPEC_CALLBACKS]:
        assert hasattr(torchcallbacks, name), name
    for name in SPEC_CALLBACKS:
        assert getattr(callbacks, name) is getattr(torchcallbacks, name)
    assert isinstance(torchcallbacks.__version__, str) and torchcallbacks.__version__


def test_import_loads_no_optional_extra():
    code = (
        "import sys, torchcallbacks, torchcallbacks.integrations\n"
        "print(sorted(m for m in ('h5py', 'tensorboard', 'requests', 'torchvision', "
        "'matplotlib', 'torchinfo', 'torchview', 'graphviz', 'mlflow', 'optuna') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[]"


def test_remote_monitor_without_requests_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "requests", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[remote\]"'):
        torchcallbacks.RemoteMonitor()
