"""What forward passes run on: the module on its device, DDP or FSDP2 around it under
torchrun, ``torch.compile`` of it when asked, and the module evaluation and prediction run on."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks.distributed import fsdp
from torchcallbacks.distributed.process_group import (
    broadcast_buffers,
    check_strategy,
    is_active,
    setup,
)
from torchcallbacks.utils import original_module


def place(
    model: torch.nn.Module,
    optimizer: Any,
    device: str | torch.device | None,
    strategy: str | None,
    timeout: timedelta,
    distributed_module: Callable[[torch.nn.Module], torch.nn.Module],
    sharded_methods: Callable[[torch.nn.Module], Sequence[str]],
) -> tuple[torch.nn.Module, torch.device, torch.nn.Module, Any]:
    """Put the trainer's ``model`` on its device: ``(module, device, running, optimizer)``.

    ``module`` is the plain module (the inner one of a DDP wrapper given by the user, the
    original one of a ``torch.compile`` wrapper), on ``device`` (the one given, else
    ``cuda:LOCAL_RANK`` or CUDA when available, else the CPU); ``running`` is what forward
    passes run on: a user's DDP wrapper as it is, else `prepare`'s choice (on the user's
    compiled wrapper, when given one), with the optimizer to use with it. The process group
    is started under torchrun.
    """
    chosen = torch.device(device) if device is not None else None
    if isinstance(model, DistributedDataParallel):  # the user's: used as it is
        chosen = chosen or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return original_module(model.module), chosen, model, optimizer
    chosen = setup(chosen, timeout) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = original_module(model)
    module.to(chosen)
    running, optimizer = prepare(
        module, optimizer, chosen, strategy, distributed_module, sharded_methods(module),
        compiled=model if model is not module else None,
    )  # fmt: skip
    return module, chosen, running, optimizer


def prepare(
    module: torch.nn.Module,
    optimizer: Any,
    device: torch.device,
    strategy: str | None,
    distributed_module: Callable[[torch.nn.Module], torch.nn.Module] = lambda module: module,
    sharded_methods: Sequence[str] = (),
    compiled: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, Any]:
    """The module to run forward passes on, and the optimizer to use with it.

    ``"auto"``: a module already sharded with ``fully_shard`` is used as it is, others are
    wrapped in DDP when distributed; ``"ddp"``: DDP around ``distributed_module(module)``
    (what a training batch runs as its forward); ``"fsdp"``: FSDP2 (`fsdp.shard`, which also
    gathers the parameters around ``sharded_methods``, and an optimizer instance rebuilt on
    the sharded parameters); None: the module as it is. In a single process the module is
    used as it is, whatever the strategy. ``compiled``: the user's ``torch.compile`` of
    ``module``, which forward passes then run through (the module is sharded in place).
    """
    check_strategy(strategy)
    forward = module if compiled is None else compiled
    if not is_active() or strategy is None or isinstance(module, DistributedDataParallel):
        return forward, optimizer
    if strategy == "fsdp" or (strategy == "auto" and fsdp.is_sharded(module)):
        names = fsdp.parameter_names(module)
        fsdp.shard(module, device)
        fsdp.register_forward_methods(module, list(sharded_methods))
        return forward, fsdp.rebuild_optimizer(optimizer, names, module)
    if not any(p.requires_grad for p in module.parameters()):
        return forward, optimizer
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(distributed_module(forward), device_ids=ids), optimizer


def evaluation_module(running: torch.nn.Module, model: torch.nn.Module) -> torch.nn.Module:
    """The module evaluation and prediction run on: ``model`` itself rather than its DDP
    wrapper, since evaluation shards may differ in length between ranks and no forward may
    hold a collective. Buffers (BatchNorm statistics) are first taken from rank 0, as DDP's
    next forward would, so every rank scores with the saved model; FSDP2 leaves buffers
    unsynchronised, so a sharded module gets rank 0's too."""
    inner = getattr(running, "_orig_mod", running)  # under torch.compile
    if isinstance(inner, DistributedDataParallel):
        if inner.broadcast_buffers:
            broadcast_buffers(inner.module)
        return model  # (DDP may hold a training_step wrapper of it)
    if is_active() and fsdp.is_sharded(inner):
        broadcast_buffers(inner)
    return running


def compiled_module(module: torch.nn.Module) -> torch.nn.Module | None:
    """``torch.compile(module)``, or None with a warning where torch cannot compile."""
    try:
        return torch.compile(module)
    except Exception as error:  # unsupported platform or Python version
        warnings.warn(
            f"torch.compile is not available here ({error}); training without it.", stacklevel=4
        )
        return None
