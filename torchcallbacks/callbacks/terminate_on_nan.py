"""`TerminateOnNaN`: stop training when the loss becomes NaN or infinite."""

from __future__ import annotations

import math

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.distributed import process_group as distributed


class TerminateOnNaN(Callback):
    """Stops training at the first training batch whose loss is NaN or inf::

        trainer.fit(x, y, epochs=10, callbacks=[TerminateOnNaN()])
        # Batch 7: Invalid loss, terminating training

    Training stops after that batch; validation, ``on_epoch_end`` and ``on_train_end`` still
    run (Keras behaviour). With ``raise_error=True`` it raises a RuntimeError instead, so no
    ``on_train_end`` runs (a BackupAndRestore backup is kept). Only ``loss`` is checked.

    Under torchrun each rank checks the loss of its own batches: when any rank sees an
    invalid loss, every rank stops after that batch and rank 0 prints the line once.
    With ``raise_error=True`` the rank that saw it raises, and torchrun ends the others.
    """

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or not (math.isnan(loss) or math.isinf(loss)):
            return
        if self.raise_error:
            raise RuntimeError(
                f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                "Terminating training immediately."
            )
        # Under torchrun each rank checks its own loss; rank 0 prints the line whichever
        # rank saw it, and every rank stops after this batch (agreed by the trainer).
        distributed.announce(f"Batch {batch}: Invalid loss, terminating training")
        if self.trainer is not None:
            self.trainer.stop_training = True
