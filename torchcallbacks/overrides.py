"""Which methods a user's class defines, as opposed to the stubs of library base classes
(torch's ``nn.Module``, Lightning's ``LightningModule``/``LightningDataModule``/``Callback``,
this package's own mixins)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

_LIGHTNING_BASES = {
    "lightning.pytorch.core.module.LightningModule",
    "lightning.pytorch.core.datamodule.LightningDataModule",
    "pytorch_lightning.core.module.LightningModule",
    "pytorch_lightning.core.datamodule.LightningDataModule",
    "lightning.pytorch.callbacks.callback.Callback",
    "pytorch_lightning.callbacks.callback.Callback",
}


def is_lightning_base(cls: type) -> bool:
    """Lightning's own ``LightningModule``/``LightningDataModule``/``Callback``: by identity
    when Lightning is loaded (a subclass of it can only exist then), else by qualified name."""
    for package in ("lightning.pytorch", "pytorch_lightning"):
        loaded = sys.modules.get(package)
        names = ("LightningModule", "LightningDataModule", "Callback")
        if loaded is not None and any(cls is getattr(loaded, name, None) for name in names):
            return True
    return f"{cls.__module__}.{cls.__qualname__}" in _LIGHTNING_BASES


@functools.lru_cache(maxsize=256)
def _library_classes(owner: type) -> frozenset[type]:
    """The classes of ``owner``'s MRO whose methods are library stubs, not the user's: torch's
    ``nn.Module``, this package's mixins (`LoggingMixin`), and Lightning's base classes with
    everything they inherit. Every other class counts as the user's, whatever package it
    comes from (Lightning's demo modules included)."""
    library: set[type] = {object, *torch.nn.Module.__mro__}
    for cls in owner.__mro__:
        if is_lightning_base(cls):
            library.update(cls.__mro__)
        elif cls.__module__.startswith("torchcallbacks."):
            library.add(cls)
    return frozenset(library)


def is_lightning_module(module: Any) -> bool:
    """Whether ``module`` is a ``lightning`` / ``pytorch_lightning`` LightningModule."""
    classes = type(module).__mro__
    return any(cls.__name__ == "LightningModule" and is_lightning_base(cls) for cls in classes)


def is_lightning_callback(callback: Any) -> bool:
    """Whether ``callback`` is a ``lightning.pytorch.callbacks.Callback`` (or
    ``pytorch_lightning``'s)."""
    classes = type(callback).__mro__
    return any(cls.__name__ == "Callback" and is_lightning_base(cls) for cls in classes)


def user_method(obj: Any, name: str) -> Callable[..., Any] | None:
    """``obj.<name>`` when its class or a user-level ancestor defines it; None when only
    Lightning's or torch's base classes do (their stubs do nothing or raise)."""
    owner = type(obj)
    library = _library_classes(owner)
    for cls in owner.__mro__:
        if name in vars(cls):
            # a stub copied into a user's class (test_step = LightningModule.test_step) is
            # still the stub, as Lightning's is_overridden finds
            stub = any(vars(base).get(name) is vars(cls)[name] for base in library)
            return None if cls in library or stub else getattr(obj, name)
    return None
