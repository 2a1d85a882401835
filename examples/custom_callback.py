"""A custom callback: Keras's LossHistory, recording the loss after every batch.

    python examples/custom_callback.py [--device cuda] [--epochs 3] [--out runs/loss_history]

Writes ``batch_losses.csv`` and, when matplotlib is installed, one ``loss_epoch_N.png`` per
epoch under ``--out``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import arguments, installed
from torch import nn

from torchcallbacks import Callback, Trainer, seed_everything


class LossHistory(Callback):
    """Collects ``logs["loss"]`` after each training batch; plots each epoch's curve.

    As in Keras, the batch logs hold running means over the epoch so far. Overriding a
    batch hook is what makes the trainer build batch logs: callbacks that only use epoch
    hooks cost nothing per batch.
    """

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_train_begin(self, logs=None):
        self.losses: list[float] = []
        self.epoch_start = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = len(self.losses)

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        losses = self.losses[self.epoch_start :]
        print(
            f"LossHistory: {len(losses)} batches, running loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        )
        if installed("matplotlib"):
            from matplotlib.figure import Figure

            figure = Figure(figsize=(5, 3), layout="constrained")
            axes = figure.add_subplot()
            axes.plot(range(1, len(losses) + 1), losses)
            axes.set(title=f"epoch {epoch + 1}", xlabel="batch", ylabel="running mean loss")
            figure.savefig(self.out / f"loss_epoch_{epoch + 1}.png")

    def on_train_end(self, logs=None):
        lines = ["batch,loss"] + [f"{i},{loss!r}" for i, loss in enumerate(self.losses)]
        (self.out / "batch_losses.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="loss_history", epochs=3)
    out = Path(args.out)
    seed_everything(0)
    samples = 512 if args.small else 8192
    x = torch.randn(samples, 8)
    y = (x[:, :4].sum(1, keepdim=True) - x[:, 4:].prod(1, keepdim=True)).tanh()
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    trainer = Trainer(model, optimizer="rmsprop", loss="mse", device=args.device)
    history = LossHistory(out)
    trainer.fit(x, y, batch_size=64, epochs=args.epochs, callbacks=[history], verbose=2)
    print(f"{len(history.losses)} batch losses in {out / 'batch_losses.csv'}")


if __name__ == "__main__":
    main()
