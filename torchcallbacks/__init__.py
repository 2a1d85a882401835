"""torchcallbacks: the Keras training loop and callbacks for any PyTorch module."""

__version__ = "0.1.0"

from torchcallbacks.callbacks import (  # noqa: E402
    BackupAndRestore,
    BaseLogger,
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    JSONLogger,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    RemoteMonitor,
    SwapEMAWeights,
    TensorBoard,
    TerminateOnNaN,
)
from torchcallbacks.checkpoint_io import load_checkpoint, seed_everything  # noqa: E402
from torchcallbacks.summary import plot_model  # noqa: E402
from torchcallbacks.trainer import Trainer  # noqa: E402

__all__ = [
    "BackupAndRestore",
    "BaseLogger",
    "Callback",
    "CallbackList",
    "CSVLogger",
    "EarlyStopping",
    "History",
    "JSONLogger",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "RemoteMonitor",
    "SwapEMAWeights",
    "TensorBoard",
    "TerminateOnNaN",
    "Trainer",
    "__version__",
    "load_checkpoint",
    "plot_model",
    "seed_everything",
]
