"""Keras-style callbacks, one module each."""

from torchcallbacks.callbacks.base import Callback, CallbackList
from torchcallbacks.callbacks.base_logger import BaseLogger
from torchcallbacks.callbacks.history import History
from torchcallbacks.callbacks.lambda_callback import LambdaCallback
from torchcallbacks.callbacks.progbar_logger import ProgbarLogger
from torchcallbacks.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "BaseLogger",
    "Callback",
    "CallbackList",
    "History",
    "LambdaCallback",
    "ProgbarLogger",
    "TerminateOnNaN",
]
