"""torchcallbacks: the Keras training loop and callbacks for any PyTorch module."""

from torchcallbacks._version import __version__
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
from torchcallbacks.checkpoints.files import CheckpointFileError, UnsafeCheckpointError  # noqa: E402
from torchcallbacks.distributed.checkpoint import load_checkpoint  # noqa: E402
from torchcallbacks.models.lightning import LoggingMixin  # noqa: E402
from torchcallbacks.rng import seed_everything  # noqa: E402
from torchcallbacks.summary import plot_model  # noqa: E402
from torchcallbacks.trainer import Trainer  # noqa: E402

__all__ = [
    "BackupAndRestore",
    "BaseLogger",
    "Callback",
    "CallbackList",
    "CheckpointFileError",
    "CSVLogger",
    "EarlyStopping",
    "History",
    "JSONLogger",
    "LambdaCallback",
    "LearningRateScheduler",
    "LoggingMixin",
    "ModelCheckpoint",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "RemoteMonitor",
    "SwapEMAWeights",
    "TensorBoard",
    "TerminateOnNaN",
    "UnsafeCheckpointError",
    "Trainer",
    "__version__",
    "load_checkpoint",
    "plot_model",
    "seed_everything",
]
