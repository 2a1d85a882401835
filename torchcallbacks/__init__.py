"""torchcallbacks: the Keras training loop and callbacks for any PyTorch module."""

__version__ = "0.1.0"

from torchcallbacks.callbacks import (  # noqa: E402
    BaseLogger,
    Callback,
    CallbackList,
    History,
    LambdaCallback,
    ProgbarLogger,
    TerminateOnNaN,
)
from torchcallbacks.trainer import Trainer  # noqa: E402

__all__ = [
    "BaseLogger",
    "Callback",
    "CallbackList",
    "History",
    "LambdaCallback",
    "ProgbarLogger",
    "TerminateOnNaN",
    "Trainer",
    "__version__",
]
