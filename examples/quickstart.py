"""Quick start: train a small classifier the Keras way, with the usual callbacks.

    python examples/quickstart.py                  # CPU or CUDA, about 10 s on 2 CPU cores
    python examples/quickstart.py --device cpu --epochs 5 --out runs/try

Writes under ``--out`` (default ``runs/quickstart``): ``best.pt`` (weights of the best
epoch), ``log.csv``, ``tensorboard/`` (when tensorboard is installed) and ``curves.png``
(when matplotlib is installed). Then: ``tensorboard --logdir runs/quickstart/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import arguments, installed, print_best, save_plot
from torch import nn

from torchcallbacks import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    TensorBoard,
    Trainer,
    load_checkpoint,
    seed_everything,
)


def make_data(samples: int, features: int = 20, classes: int = 3):
    """Three classes around random centres in 20 dimensions, with overlap."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, features, generator=generator) * 0.5
    labels = torch.randint(0, classes, (samples,), generator=generator)
    x = centres[labels] + torch.randn(samples, features, generator=generator)
    return x, labels


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="quickstart", epochs=20)
    out = Path(args.out)
    seed_everything(0)
    x, y = make_data(600 if args.small else 12_000)

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))  # logits
    trainer = Trainer(
        model, optimizer="adam", loss="cross_entropy", metrics=["accuracy"], device=args.device
    )
    callbacks = [
        EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True, verbose=1),
        ModelCheckpoint(
            out / "best.pt", monitor="val_loss", save_best_only=True, save_weights_only=True
        ),
        CSVLogger(out / "log.csv"),
    ]
    if installed("tensorboard"):
        callbacks.append(TensorBoard(log_dir=out / "tensorboard"))
    history = trainer.fit(
        x, y, batch_size=64, epochs=args.epochs, validation_split=0.2, callbacks=callbacks
    )

    # The checkpoint reloads into a fresh copy of the model.
    fresh = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    load_checkpoint(out / "best.pt", model=fresh)
    x_val, y_val = x[int(len(x) * 0.8) :], y[int(len(y) * 0.8) :]
    loss, accuracy = Trainer(
        fresh, loss="cross_entropy", metrics=["accuracy"], device=args.device
    ).evaluate(x_val, y_val, verbose=0)
    print(f"Best checkpoint: val_loss {loss:.4f}, val_accuracy {accuracy:.4f}")
    probabilities = trainer.predict(x_val[:5], verbose=0).softmax(-1)
    print("Class probabilities of 5 validation samples:\n", probabilities.numpy().round(3))
    print_best(history)
    save_plot(history, out / "curves.png")


if __name__ == "__main__":
    main()
