"""torch.distributed glue: process group set-up under torchrun, DDP wrapping, reductions.

Everything here is a no-op in a single process, so the training loop calls it freely.
"""

from __future__ import annotations

import atexit
import gc
import os
import weakref
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# A rank that dies leaves the others blocked in a collective; torchrun ends them, and this
# bounds the wait when processes are started some other way.
_TIMEOUT = timedelta(seconds=float(os.environ.get("TORCHCALLBACKS_DIST_TIMEOUT", "300")))


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: torch.device | None) -> torch.device | None:
    """Initialise the process group under torchrun (``WORLD_SIZE > 1``); pick the device.

    Returns the device to use: ``cuda:LOCAL_RANK`` on GPU machines when none was given.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and dist.is_available() and not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=_TIMEOUT)
        atexit.register(_destroy_process_group)
    if is_active() and device is None and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device is not None and device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def release_at_exit(trainer: Any) -> None:
    """Drop the trainer's DDP wrapper before the interpreter exits: gloo aborts the process
    when a wrapper is still alive at exit. Runs before `_destroy_process_group` (atexit
    runs handlers in reverse order of registration)."""
    reference = weakref.ref(trainer)

    def release() -> None:
        owner = reference()
        if owner is not None:
            owner._module = owner.model
        gc.collect()

    atexit.register(release)


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module to run forward passes on: DDP-wrapped when distributed."""
    if not is_active() or isinstance(module, DistributedDataParallel):
        return module
    if not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if not is_active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics, ...)."""
    if not is_active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (agreed stopping)."""
    if not is_active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shared_seed(device: torch.device) -> int:
    """A seed drawn from the global torch RNG, the same on every rank (rank 0's)."""
    seed = torch.randint(0, 2**62, (1,))
    if is_active():
        seed = seed.to(device)
        dist.broadcast(seed, src=0)
    return int(seed.item())


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank tensor along dim 0 (ranks may hold different lengths)."""
    if not is_active():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])
