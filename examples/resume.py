"""BackupAndRestore: a run that is interrupted continues where it stopped when run again.

    python examples/resume.py                     # crashes on purpose, then reruns and resumes
    python examples/resume.py --crash-at-batch 0  # no simulated crash: press Ctrl-C (or send
                                                  # SIGTERM) during training, then run it again

The backup (``--out``/backup/latest.pt, every ``--save-freq`` training batches) holds the
model, optimizer, RNG states, the position inside the epoch and every callback's state, so
the rerun continues at the next batch and ``log.csv`` ends up exactly as an uninterrupted
run's. The backup is deleted once ``fit`` finishes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import arguments
from torch import nn

from torchcallbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    EarlyStopping,
    Trainer,
    seed_everything,
)


class SimulatedCrashError(RuntimeError):
    pass


class SimulatedCrash(Callback):
    """Raises in the middle of training, as a power cut or a preempted job would."""

    def __init__(self, at_batch: int) -> None:
        super().__init__()
        self.at_batch = at_batch

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_train_batch == self.at_batch:
            raise SimulatedCrashError(f"simulated crash after training batch {self.at_batch}")

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # it only counts batches: no per-step host sync for logs


def train(args, out: Path, crash_at_batch: int):
    seed_everything(0)  # a rerun of the script starts from the same seed, like this one
    x = torch.randn(4096 if not args.small else 512, 16)
    y = (x[:, :8].sum(1) > x[:, 8:].sum(1)).long()
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2))
    trainer = Trainer(
        model, optimizer="sgd", loss="cross_entropy", metrics=["accuracy"], device=args.device
    )
    callbacks = [
        BackupAndRestore(out / "backup", save_freq=args.save_freq),
        EarlyStopping(monitor="val_loss", patience=3),  # its counters are restored too
        CSVLogger(out / "log.csv"),
    ]
    if crash_at_batch:
        callbacks.append(SimulatedCrash(crash_at_batch))
    return trainer.fit(
        x,
        y,
        batch_size=64,
        epochs=args.epochs,
        validation_split=0.25,
        callbacks=callbacks,
        verbose=2,
    )


def main() -> None:
    args = arguments(
        __doc__.splitlines()[0], out="resume", epochs=6, crash_at_batch=130, save_freq=20
    )
    out = Path(args.out)
    try:
        history = train(args, out, args.crash_at_batch)
    except SimulatedCrashError as interruption:
        print(f"\nInterrupted: {interruption}. Backup: {out / 'backup' / 'latest.pt'}")
        print("Running the same fit again (as a new process would) ...\n")
        history = train(args, out, crash_at_batch=0)
    print(
        f"\nThe last fit trained epochs {[e + 1 for e in history.epoch]}; backup "
        f"deleted: {not (out / 'backup' / 'latest.pt').exists()}"
    )
    rows = (out / "log.csv").read_text().splitlines()
    print(f"{out / 'log.csv'}: {len(rows) - 1} epoch rows, each epoch once:")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
