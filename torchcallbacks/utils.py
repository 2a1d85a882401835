"""Small helpers shared across modules."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import torch


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


@contextlib.contextmanager
def expected_sync() -> Iterator[None]:
    """Mark a host-device sync the loop makes on purpose (once per fit or epoch: moving the
    data, reading epoch logs) so ``torch.cuda.set_sync_debug_mode`` reports only the
    per-step syncs that would be defects."""
    if not torch.cuda.is_available():
        yield
        return
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


@contextlib.contextmanager
def preserved_modes(module: torch.nn.Module) -> Iterator[None]:
    """Give every submodule back its own train/eval mode on exit: ``module.train()`` would
    also switch parts the user froze with ``.eval()`` (BatchNorm statistics of a backbone)."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def original_module(module: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside ``torch.compile``'s wrapper (an ``OptimizedModule``, whose
    ``state_dict`` keys start with ``_orig_mod.``), else ``module`` itself."""
    # No OptimizedModule exists before torch._dynamo is imported: nothing to import here.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    while eval_frame is not None and isinstance(module, eval_frame.OptimizedModule):
        module = module._orig_mod
    return module
