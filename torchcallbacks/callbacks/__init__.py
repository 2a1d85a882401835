"""Keras-style callbacks, one module each."""

from torchcallbacks.callbacks.backup_and_restore import BackupAndRestore
from torchcallbacks.callbacks.base import Callback
from torchcallbacks.callbacks.base_logger import BaseLogger
from torchcallbacks.callbacks.callback_list import CallbackList
from torchcallbacks.callbacks.csv_logger import CSVLogger
from torchcallbacks.callbacks.early_stopping import EarlyStopping
from torchcallbacks.callbacks.history import History
from torchcallbacks.callbacks.json_logger import JSONLogger
from torchcallbacks.callbacks.lambda_callback import LambdaCallback
from torchcallbacks.callbacks.learning_rate_scheduler import LearningRateScheduler
from torchcallbacks.callbacks.model_checkpoint import ModelCheckpoint
from torchcallbacks.callbacks.progbar_logger import ProgbarLogger
from torchcallbacks.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from torchcallbacks.callbacks.remote_monitor import RemoteMonitor
from torchcallbacks.callbacks.swap_ema_weights import SwapEMAWeights
from torchcallbacks.callbacks.tensorboard import TensorBoard
from torchcallbacks.callbacks.terminate_on_nan import TerminateOnNaN

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
]
