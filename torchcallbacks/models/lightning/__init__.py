"""LightningModules, and modules written the Lightning way: ``training_step``,
``configure_optimizers`` and ``self.log``.

A module that defines ``training_step(batch, batch_idx)`` is trained by `Trainer` without a
``loss`` or ``optimizer``: the trainer calls its step methods, takes the optimizer (and
learning-rate schedulers) from ``configure_optimizers``, and turns what the module logs with
``self.log`` into the callbacks' logs. Plain modules get ``self.log`` from `LoggingMixin`;
a real ``lightning.LightningModule`` works as it is (Lightning is never imported here).

Every hook Lightning 2.x calls on the module (and on the user's own Lightning callbacks) is
called, in Lightning's order; ``automatic_optimization = False`` gets manual optimization.

The parts: `kind` (the kind of model: the step methods, evaluation and prediction batches),
`automatic` (a training batch under automatic optimization), `manual` (the kind for manual
optimization), `stages` (around the batches: setup, evaluation runs, checkpoints), `calls`
(which hooks exist and who defines them), `callbacks` (Lightning callbacks), `hooks` (the
fit-level hooks as a callback), `strategy` (the backward pass and optimizer step),
`optimizers` (``configure_optimizers``, ``self.optimizers()``), `self_log` and `tracker`
(what the module logs), `trainer_view` (``self.trainer``), `batches` (batches and outputs as
the steps get them) and `ddp` (what several processes run).
"""

from torchcallbacks.models.lightning.kind import LightningKind
from torchcallbacks.models.lightning.manual import ManualLightningKind
from torchcallbacks.models.lightning.self_log import LoggingMixin
from torchcallbacks.models.lightning.trainer_view import LightningTrainerView

__all__ = ["LightningKind", "LightningTrainerView", "LoggingMixin", "ManualLightningKind"]
