"""FSDP2 glue: sharding a module with ``fully_shard``, its optimizer, and lockstep forwards.

Under ``Trainer(strategy="fsdp")`` every block of the module (each child of an
``nn.ModuleList`` or ``nn.Sequential`` that holds parameters) and then the module itself
go through PyTorch's ``torch.distributed.fsdp.fully_shard``: parameters, gradients and
optimizer states are sharded over the ranks, and each forward gathers a block's
parameters just before it runs. A forward is therefore a collective: every rank must run
the same number of them, which `Lockstep` ensures for evaluation and prediction.
"""

from __future__ import annotations

import atexit
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from torchcallbacks.distributed import process_group as distributed
from torchcallbacks.utils import expected_sync


def _fsdp() -> Any:
    """torch's FSDP2 package, imported on first use (``import torchcallbacks`` stays light);
    None before torch 2.6, which the rest of the package supports."""
    try:
        import torch.distributed.fsdp as fsdp
    except ImportError:  # pragma: no cover - depends on the torch version
        return None
    return fsdp if hasattr(fsdp, "fully_shard") else None


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module`` or one of its submodules went through ``fully_shard``. Without
    torch's FSDP package loaded, nothing can have been sharded: it is not imported for this."""
    loaded = sys.modules.get("torch.distributed.fsdp")
    fsdp_module = getattr(loaded, "FSDPModule", None)
    if fsdp_module is None:
        return False
    return any(isinstance(submodule, fsdp_module) for submodule in module.modules())


def _blocks(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The children of the module's containers (ModuleList, Sequential) that hold parameters,
    innermost first (``fully_shard`` goes from the leaves to the root)."""
    for submodule in reversed(list(module.modules())):
        if isinstance(submodule, torch.nn.ModuleList | torch.nn.Sequential):
            for child in submodule.children():
                if child is not module and any(True for _ in child.parameters()):
                    yield child


def shard(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Apply ``fully_shard`` to the module's blocks and to the module (in place)."""
    fsdp = _fsdp()
    if fsdp is None:
        raise ImportError(
            f"strategy='fsdp' needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6); "
            f"this is torch {torch.__version__}. Upgrade torch, or use strategy='ddp'."
        )
    if is_sharded(module):
        return module
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (distributed.world_size(),))
    _release_groups_at_exit(mesh)
    for block in _blocks(module):
        if not isinstance(block, fsdp.FSDPModule):
            fsdp.fully_shard(block, mesh=mesh)
    fsdp.fully_shard(module, mesh=mesh)
    return module


def _release_groups_at_exit(mesh: Any) -> None:
    """Drop the mesh's references to its process groups before the process group is destroyed
    at exit. DTensor's caches keep the mesh alive, and the mesh keeps its groups: a gloo group
    freed only during interpreter shutdown can abort the process ("terminate called without
    an active exception") once training is over. Handlers run in reverse order of
    registration, so this runs before `distributed.setup`'s."""
    registry = getattr(mesh, "_pg_registry", None)  # a lookup cache of torch >= 2.10
    if isinstance(registry, dict):
        atexit.register(registry.clear)


def register_forward_methods(module: torch.nn.Module, names: list[str]) -> None:
    """Have FSDP2 gather the sharded root's parameters around ``module.<name>()`` as around
    its forward: a ``training_step`` that calls ``self.layer(x)`` rather than ``self(x)``
    then sees whole parameters (a nested ``self(x)`` finds them gathered already)."""
    for name in names:
        _fsdp().register_fsdp_forward_method(module, name)


def parameter_names(module: torch.nn.Module) -> dict[int, str]:
    """``id(parameter) -> name``, taken before sharding replaces the parameters."""
    return {id(parameter): name for name, parameter in module.named_parameters()}


def rebuild_optimizer(
    optimizer: Any, names: dict[int, str], module: torch.nn.Module
) -> torch.optim.Optimizer | Any:
    """The optimizer on the module's current (sharded) parameters, with the same class,
    hyper-parameters and param groups; returned unchanged when its parameters are current
    or it is not an optimizer instance (a name such as "adam" is resolved later)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    current = dict(module.named_parameters())
    groups = optimizer.param_groups
    if all(current.get(names.get(id(p), "")) is p for g in groups for p in g["params"]):
        return optimizer
    rebuilt_groups = []
    for group in groups:
        missing = [p for p in group["params"] if id(p) not in names]
        if missing:
            raise ValueError(
                "The optimizer holds parameters that are not the module's, so it cannot be "
                "rebuilt on the sharded module: build it on model.parameters(), or pass it "
                'by name (optimizer="adam").'
            )
        rebuilt = {key: value for key, value in group.items() if key != "params"}
        rebuilt["params"] = [current[names[id(p)]] for p in group["params"]]
        rebuilt_groups.append(rebuilt)
    if optimizer.state:
        warnings.warn(
            "The optimizer already had state (it has stepped); the copy rebuilt on the "
            "sharded parameters starts without it.",
            stacklevel=3,
        )
    # Each group carries its hyper-parameters; the constructor gets the defaults it takes
    # (AdamW's defaults hold a key its constructor does not accept).
    accepted = inspect.signature(type(optimizer)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    defaults = {k: v for k, v in optimizer.defaults.items() if takes_any or k in accepted}
    return type(optimizer)(rebuilt_groups, **defaults)


class Lockstep:
    """Makes every rank run as many evaluation or prediction forwards as the busiest one.

    Evaluation shards are not padded with repeated samples (none may count twice), so a
    rank may have one batch fewer than another. When a forward is a collective (a sharded
    module), the ranks with fewer batches run the step again on their last batch and drop
    the result: padding batches whose outputs are masked out entirely. Elsewhere it does
    nothing. Usage::

        lockstep = Lockstep(trainer, batches, steps)
        step = lockstep.counted(step)
        for ...: step(batch, index)
        lockstep.finish()
    """

    def __init__(self, trainer: Any, batches: Any, steps: int | None) -> None:
        self.active = distributed.is_active() and is_sharded(trainer.model)
        self.done = 0
        self.last: Any = None
        self.total = 0
        self._step: Callable[[Any, int], Any] | None = None
        if not self.active:
            return
        try:
            count = len(batches)
        except TypeError:
            if steps is None:
                raise ValueError(
                    "Under a sharded module (strategy='fsdp') every rank runs the same number "
                    "of forward passes, so evaluation and prediction data need a length: pass "
                    "a DataLoader over a Dataset, tensors, or steps=N."
                ) from None
            count = steps
        if steps is not None:
            count = min(count, steps)
        with expected_sync():  # once per evaluate or predict
            self.total = distributed.max_over_ranks(count, trainer.device)

    def counted(self, step: Callable[[Any, int], Any]) -> Callable[[Any, int], Any]:
        if not self.active:
            return step
        self._step = step

        def run(batch: Any, index: int) -> Any:
            self.done += 1
            self.last = batch
            return step(batch, index)

        return run

    def finish(self) -> None:
        """Run the padding forwards (the same count on every rank afterwards)."""
        if not self.active or self.done >= self.total:
            return
        if self.last is None:
            raise RuntimeError(
                "This rank has no evaluation batch while others have some; a sharded forward "
                "needs an input on every rank. Give every rank at least one batch."
            )
        for index in range(self.done, self.total):
            self._step(self.last, index)  # type: ignore[misc]
