"""Draws docs/assets/history_plot.png: the curves ``History.plot`` gives after a real fit.

    python docs/scripts/history_plot.py

A small classifier on generated data (the quick-start example's), 20 epochs with
ReduceLROnPlateau, so the picture shows loss, accuracy and the learning rate, training
against validation. Needs the ``plot`` extra (matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from torchcallbacks import ReduceLROnPlateau, Trainer, seed_everything

OUT = Path(__file__).resolve().parents[1] / "assets" / "history_plot.png"


def main() -> None:
    seed_everything(0)
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=generator) * 0.5
    y = torch.randint(0, 3, (3000,), generator=generator)
    x = centres[y] + torch.randn(3000, 20, generator=generator)
    model = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 3))
    trainer = Trainer(model, optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    history = trainer.fit(
        x,
        y,
        epochs=20,
        batch_size=64,
        validation_split=0.2,
        callbacks=[ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=2)],
        verbose=0,
    )
    history.plot(OUT)
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
