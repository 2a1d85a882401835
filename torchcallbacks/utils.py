"""Small helpers shared across modules."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import an optional dependency, or raise an ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        what = feature or "this feature"
        raise ImportError(
            f"{what} needs the optional package '{module}', which is not installed. "
            f'Install it with: pip install "torchcallbacks[{extra}]"'
        ) from error
