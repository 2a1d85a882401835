"""torch.distributed glue: process group set-up under torchrun, DDP wrapping, reductions.

Everything here is a no-op in a single process, so the training loop calls it freely.

Every collective in this module is called by the loop at a point every rank reaches in the
same order (never from code that runs on one rank only: printing, writing files). Stop
decisions and messages that one rank alone can see go through `agree_stop`, which every
rank runs at the same batch or epoch boundary.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# A rank that dies leaves the others blocked in a collective; torchrun ends them, and this
# bounds the wait when processes are started some other way. Trainer(distributed_timeout=)
# overrides it; the variable lets a launcher set it without touching the script.
DEFAULT_TIMEOUT = timedelta(seconds=float(os.environ.get("TORCHCALLBACKS_DIST_TIMEOUT", "300")))
STRATEGIES = ("auto", "ddp", "fsdp", None)

# Messages a callback left for rank 0 to print (`announce`), sent at the next `agree_stop`.
_messages: list[str] = []
# Events that every rank must act on at the same boundary although some ranks see them
# first (a SIGTERM): `request`ed locally, `agreed` by the next `agree_stop`.
FLAGS = ("terminating",)
_requested: set[str] = set()
_agreed: set[str] = set()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def as_timeout(value: float | timedelta | None) -> timedelta:
    """``Trainer(distributed_timeout=)`` as a timedelta (seconds, a timedelta, or None for
    the default: 300 s, or ``TORCHCALLBACKS_DIST_TIMEOUT`` seconds)."""
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"distributed_timeout must be a number of seconds or a datetime.timedelta, got "
            f"{type(value).__name__}"
        )
    if not seconds > 0:
        raise ValueError(f"distributed_timeout must be positive, got {value!r}")
    return timedelta(seconds=seconds)


def check_strategy(strategy: str | None) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}; use 'auto' (DDP when several processes run), "
            "'ddp', 'fsdp' (FSDP2 fully_shard) or None (the module is used as it is)."
        )


def setup(device: torch.device | None, timeout: timedelta = DEFAULT_TIMEOUT) -> torch.device | None:
    """Initialise the process group under torchrun (``WORLD_SIZE > 1``); pick the device.

    Returns the device to use: ``cuda:LOCAL_RANK`` on GPU machines when none was given.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and dist.is_available() and not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
        # Loaded before the group exists (and only in runs of several processes, so that
        # `import torchcallbacks` stays light): otherwise, as seen with torch 2.13 and gloo, a
        # group that DDP used stays referenced after destroy_process_group, its threads run
        # into interpreter shutdown, and the process can abort once training is over.
        importlib.import_module("torch.distributed.fsdp")
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        atexit.register(_destroy_process_group)
    if is_active() and device is None and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device is not None and device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def _destroy_process_group() -> None:
    """Destroy the group this module created, and free it now: gloo's threads must stop
    while the interpreter is whole (a group freed during interpreter shutdown can abort the
    process). The collection frees a group that only reference cycles still hold."""
    if dist.is_initialized():  # not when the script destroyed it itself
        dist.destroy_process_group()
    gc.collect()


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


@contextlib.contextmanager
def no_gradient_sync(module: torch.nn.Module) -> Iterator[None]:
    """Accumulate gradients locally (DDP's ``no_sync``, FSDP2's
    ``set_requires_gradient_sync(False)``); other modules are left as they are."""
    if isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
        return
    if not callable(getattr(module, "set_requires_gradient_sync", None)):
        yield
        return
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if not is_active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the ``.grad`` of ``parameters`` (those that require one) over the ranks, as
    DDP's backward does: for backward passes DDP's reducer cannot follow (several per step,
    over changing sets of parameters). A parameter that no rank has a gradient for keeps
    None; one that only some ranks have a gradient for counts as zero on the others."""
    if not is_active():
        return
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        return
    device = parameters[0].device
    present = torch.tensor([p.grad is not None for p in parameters], device=device).float()
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    used = [p for p, flag in zip(parameters, present.tolist()) if flag]
    for parameter in used:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for parameter in used:
        by_dtype.setdefault(parameter.grad.dtype, []).append(parameter.grad)
    for grads in by_dtype.values():  # one collective per dtype
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= world_size()
        for grad, averaged in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(averaged)


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


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of every rank's ``value``, on every rank."""
    if not is_active():
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank, for decisions every rank must
    make alike: whether a checkpoint is written is a collective under sharded strategies."""
    if not is_active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def check_on_rank0(check: Callable[[], None]) -> None:
    """Run ``check`` (which raises on a problem) on rank 0 only, the process that writes,
    and raise its error on every rank: each one then stops with the same clear message
    rather than at its next collective."""
    if not is_active():
        check()
        return
    error = None
    if rank() == 0:
        try:
            check()
        except (OSError, ValueError) as caught:
            error = caught
    error = from_rank0(error)
    if error is not None:
        raise error


def announce(message: str) -> None:
    """Have rank 0 print ``message``, whichever rank calls this.

    In one process it prints at once. Distributed, the message waits for the next
    `agree_stop` (the end of the batch or epoch), where every rank sends rank 0 what it
    has: a rank that alone sees a problem (a NaN loss) still gets its line printed once.
    """
    if not is_active():
        print(message)
    else:
        _messages.append(message)


def request(flag: str) -> None:
    """Raise ``flag`` (one of `FLAGS`) on this rank; every rank sees it as `agreed` after the
    next `agree_stop` (at once in a single process)."""
    (_requested if is_active() else _agreed).add(flag)


def agreed(flag: str) -> bool:
    return flag in _agreed


def clear(flag: str) -> None:
    _requested.discard(flag)
    _agreed.discard(flag)


def agree_stop(flag: bool, device: torch.device) -> bool:
    """Whether any rank stops, on every rank; rank 0 prints what any rank `announce`d.

    Every rank calls it at the same boundaries: one all-reduce, and a gather of the
    messages only when some rank has one (every rank learns that from the all-reduce).
    """
    if not is_active():
        return flag
    flags = [flag, bool(_messages), *(name in _requested for name in FLAGS)]
    value = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    stop, any_messages, *raised = (bool(v) for v in value.tolist())
    _agreed.update(name for name, up in zip(FLAGS, raised) if up)
    if any_messages:
        gathered: list[list[str] | None] = [None] * world_size()
        dist.all_gather_object(gathered, list(_messages))
        _messages.clear()
        if rank() == 0:  # the same line from several ranks is printed once
            for message in dict.fromkeys(m for messages in gathered for m in messages or []):
                print(message)
    return stop


def checks_stop_each_batch(callbacks: Any, device: torch.device) -> bool:
    """Whether the ranks agree on stopping after every batch, decided once per fit.

    True when a callback on any rank implements training batch hooks that may set
    ``stop_training`` (display-only callbacks such as the progress bar declare
    ``stops_training = False``). Every rank computes it from the all-reduced answer, so the
    per-batch collective runs on all of them or on none, whichever callbacks each holds.
    """
    local = any(
        callback.implements_batch_hooks("train") and getattr(callback, "stops_training", True)
        for callback in callbacks
    )
    return any_rank(local, device)


def check_same_callbacks(callbacks: Any) -> None:
    """Raise the same error on every rank when the ranks were given different callbacks of
    the kinds that save, restore or change training (``on_every_process``): those run
    collectives or change the weights or learning rate, so a rank-0-only one hangs the
    group or lets the replicas drift apart."""
    if not is_active():
        return
    local = [type(c).__name__ for c in callbacks if getattr(c, "on_every_process", False)]
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, local)
    if any(names != everyone[0] for names in everyone):
        held = "; ".join(f"rank {r}: {names or 'none'}" for r, names in enumerate(everyone))
        raise ValueError(
            "Under torchrun every process must be given the same callbacks that save, restore "
            "or change training (ModelCheckpoint, BackupAndRestore, EarlyStopping with "
            "restore_best_weights, the learning-rate callbacks, SwapEMAWeights), in the same "
            f"order; got {held}. Pass them to fit on every process: only rank 0 writes files."
        )


def shared_seed(device: torch.device) -> int:
    """Rank 0's ``torch.initial_seed()`` on every rank (modulo 2**63). Nothing is drawn from
    the global generator: the random numbers of a run are the same as in a hand-written loop."""
    seed = torch.tensor([torch.initial_seed() % 2**63])
    if is_active():
        seed = seed.to(device)
        dist.broadcast(seed, src=0)
    return int(seed.item())


def gather(
    local: torch.Tensor | list[torch.Tensor], pad_value: float = 0
) -> torch.Tensor | list[torch.Tensor]:
    """Every rank's rows, rank after rank: ``local`` is a tensor (its rows along dim 0) or a
    list of rows. Ranks may hold different lengths along every dimension: the tensors are
    padded at the end of each dimension after the first with ``pad_value``. When the ranks'
    tensors differ in their number of dimensions (or one holds a list), the rows come back
    as a list of CPU tensors."""
    if not is_active():
        return local
    shape = tuple(local.shape) if isinstance(local, torch.Tensor) and local.ndim else None
    shapes: list[Any] = [None] * world_size()
    dist.all_gather_object(shapes, shape)  # small objects, once per output of a predict
    if shape is None or any(s is None or len(s) != len(shape) for s in shapes):
        if isinstance(local, torch.Tensor):
            local = list(local.unbind(0)) if local.ndim else [local]
        rows = [row.cpu() for row in local]
        everyone: list[Any] = [None] * world_size()
        dist.all_gather_object(everyone, rows)
        return [row for part in everyone for row in part]
    longest = [max(sizes) for sizes in zip(*shapes)]
    padded = local.new_full(longest, pad_value)
    padded[tuple(slice(0, size) for size in shape)] = local
    parts = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(parts, padded)
    return torch.cat([part[: size[0]] for part, size in zip(parts, shapes)])
