"""Data-parallel training with torchrun: one script for 1 process, 2 CPU processes or N GPUs.

    torchrun --nproc_per_node=2 examples/ddp.py        # 2 processes: gloo on CPU, nccl on GPUs
    torchrun --nproc_per_node=2 examples/ddp.py --epochs 5 --out runs/ddp_try
    python examples/ddp.py                             # the same script in one process

Nothing here is distributed-specific: under torchrun the `Trainer` sees ``WORLD_SIZE``,
initialises the process group, wraps the module in ``DistributedDataParallel``, gives each
process its shard of the tensors (``--batch-size`` is per process), and all-reduces the
epoch logs, so every process sees the same numbers and EarlyStopping stops all of them at
the same epoch. Only rank 0 prints and writes ``best.pt`` (weights of the best epoch, no
``module.`` prefix), ``last.pt`` (a full checkpoint) and ``log.csv`` under ``--out``
(default ``runs/ddp``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import arguments, print_best
from torch import nn

from torchcallbacks import CSVLogger, EarlyStopping, ModelCheckpoint, Trainer, seed_everything


def make_data(samples: int, features: int = 20, classes: int = 3):
    """Three classes around random centres in 20 dimensions, the same on every process."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, features, generator=generator) * 0.5
    labels = torch.randint(0, classes, (samples,), generator=generator)
    return centres[labels] + torch.randn(samples, features, generator=generator), labels


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="ddp", epochs=20, batch_size=64)
    out = Path(args.out)
    seed_everything(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    x, y = make_data(800 if args.small else 16_000)

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    trainer = Trainer(
        model, optimizer="adam", loss="cross_entropy", metrics=["accuracy"], device=args.device
    )
    if trainer.is_main_process:
        print(
            f"{trainer.world_size} process(es) on {trainer.device}, global batch "
            f"{args.batch_size * trainer.world_size}"
        )
    callbacks = [
        EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True, verbose=1),
        ModelCheckpoint(out / "best.pt", save_best_only=True, save_weights_only=True),
        ModelCheckpoint(out / "last.pt"),
        CSVLogger(out / "log.csv"),
    ]
    history = trainer.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=0.2,
        callbacks=callbacks,
    )  # the default verbose="auto": the progress bar, drawn by rank 0

    x_val, y_val = x[int(len(x) * 0.8) :], y[int(len(y) * 0.8) :]
    results = trainer.evaluate(x_val, y_val, verbose=0, return_dict=True)  # over every shard
    if trainer.is_main_process:
        print(f"Validation (restored best weights): {results}; files in {out}/")
        print_best(history)


if __name__ == "__main__":
    main()
