"""LightningModules, and modules written the Lightning way: ``training_step``,
``configure_optimizers`` and ``self.log``.

A module that defines ``training_step(batch, batch_idx)`` is trained by `Trainer` without a
``loss`` or ``optimizer``: the trainer calls its step methods, takes the optimizer (and
learning-rate schedulers) from ``configure_optimizers``, and turns what the module logs with
``self.log`` into the callbacks' logs. Plain modules get ``self.log`` from `LoggingMixin`;
a real ``lightning.LightningModule`` works as it is (Lightning is never imported here).

The parts: `kind` (the kind of model: one batch), `hooks` (the module's epoch-level hooks),
`self_log` and `tracker` (what the module logs), `trainer_view` (``self.trainer``),
`optimizers` (``configure_optimizers``) and `ddp` (what several processes run).
"""

from torchcallbacks.models.lightning.kind import LightningKind
from torchcallbacks.models.lightning.self_log import LoggingMixin
from torchcallbacks.models.lightning.trainer_view import LightningTrainerView

__all__ = ["LightningKind", "LightningTrainerView", "LoggingMixin"]
