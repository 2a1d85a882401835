"""BackupAndRestore: a run that is interrupted continues where it stopped when run again.

    python examples/resume.py                     # crashes on purpose, then reruns and resumes
    python examples/resume.py --small             # the same with tiny data, in a few seconds
    python examples/resume.py --crash-at-batch 0  # no simulated crash: press Ctrl-C (or send
                                                  # SIGTERM) during training, then run it again

The backup (``--out``/backup/latest.pt, every ``--save-freq`` training batches) holds the
model, optimizer, RNG states, the position inside the epoch and every callback's state, so
the rerun continues at the next batch, and ``log.csv`` and the final weights
(``final.pt``) end up exactly as an uninterrupted run's. By default the crash comes in the
middle of the run, a few batches after a backup taken inside an epoch. The backup is
deleted once ``fit`` finishes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from _common import arguments, print_best
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
    """Raises after global training batch ``at_batch`` (0: never), as a power cut or a
    preempted job would, and records where each run started training."""

    def __init__(self, at_batch: int) -> None:
        super().__init__()
        self.at_batch = at_batch
        self.started_at: tuple[int, int] | None = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.started_at is None:
            self.started_at = (self.trainer.current_epoch, batch)

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_train_batch == self.at_batch:
            raise SimulatedCrashError(f"simulated crash after training batch {self.at_batch}")

    def needs_batch_logs(self, mode: str) -> bool:
        return False  # it only counts batches: no per-step host sync for logs


def default_crash(steps_per_epoch: int, epochs: int, save_freq: int) -> int:
    """The first global batch past the middle of the run that comes a few batches after a
    backup taken inside an epoch (not at its end), so that the rerun resumes mid-epoch."""
    total = steps_per_epoch * epochs
    for batch in range(max(save_freq, total // 2) + 1, total):
        backup = batch // save_freq * save_freq
        if batch % save_freq and backup % steps_per_epoch:
            return batch
    return 0  # too short a run to crash after a backup


SAMPLES, SMALL_SAMPLES, BATCH_SIZE, VALIDATION = 4096, 512, 64, 0.25


def train(args, out: Path, crash: SimulatedCrash):
    seed_everything(0)  # a rerun of the script starts from the same seed, like this one
    x = torch.randn(SMALL_SAMPLES if args.small else SAMPLES, 16)
    y = x.view(-1, 4, 4).sum(-1).argmax(-1)  # which group of four features sums highest
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = Trainer(
        model, optimizer, loss="cross_entropy", metrics=["accuracy"], device=args.device
    )
    callbacks = [
        BackupAndRestore(out / "backup", save_freq=args.save_freq),
        EarlyStopping(monitor="val_loss", patience=3),  # its counters are restored too
        CSVLogger(out / "log.csv"),
        crash,  # the same callbacks, in the same order, in every run
    ]
    history = trainer.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=args.epochs,
        validation_split=VALIDATION,
        callbacks=callbacks,
        verbose=2,
    )
    trainer.save_weights(out / "final.pt")
    return history


def main() -> None:
    args = arguments(
        __doc__.splitlines()[0], out="resume", epochs=6, crash_at_batch=-1, save_freq=4
    )
    out = Path(args.out)
    training_samples = int((SMALL_SAMPLES if args.small else SAMPLES) * (1 - VALIDATION))
    steps_per_epoch = math.ceil(training_samples / BATCH_SIZE)
    crash_at = args.crash_at_batch
    if crash_at < 0:
        crash_at = default_crash(steps_per_epoch, args.epochs, args.save_freq)
    print(
        f"{steps_per_epoch} batches per epoch, {args.epochs} epochs, a backup every "
        f"{args.save_freq} batches, a crash after batch {crash_at or 'never'}\n"
    )
    try:
        history = train(args, out, SimulatedCrash(crash_at))
    except SimulatedCrashError as interruption:
        backup = out / "backup" / "latest.pt"
        position = torch.load(backup, weights_only=True)["training"]
        print(f"\nInterrupted: {interruption}. Backup: {backup}")
        print(
            f"The backup goes on with epoch {position['epoch'] + 1} after its first "
            f"{position['batch']} batch(es), {position['global_train_batch']} batches in all."
        )
        print("Running the same fit again (as a new process would) ...\n")
        rerun = SimulatedCrash(at_batch=0)
        history = train(args, out, rerun)
        epoch, batch = rerun.started_at
        print(
            f"\nThe rerun started training in epoch {epoch + 1} after its first {batch} batch(es)."
        )
    print(
        f"The last fit trained epochs {[e + 1 for e in history.epoch]}; backup "
        f"deleted: {not (out / 'backup' / 'latest.pt').exists()}; weights: {out / 'final.pt'}"
    )
    rows = (out / "log.csv").read_text().splitlines()
    print(f"{out / 'log.csv'}: {len(rows) - 1} epoch rows, each epoch once:")
    print("\n".join(rows))
    print_best(history)


if __name__ == "__main__":
    main()
