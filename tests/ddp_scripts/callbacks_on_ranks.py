"""Worker script of tests/test_distributed_callbacks.py.

    torchrun --nproc_per_node=2 tests/ddp_scripts/callbacks_on_ranks.py --out DIR --case CASE

``rank0_checkpoint``: a ModelCheckpoint given to rank 0 only (the Horovod idiom), which would
hang the first collective save; every rank must raise the same clear error instead.
``fsdp_over_file``: a sharded full checkpoint saved twice under a path that already holds a
single-file checkpoint (written before by one process).
``misuse``: a plain DataLoader for training (each rank would see all of it: a warning), and
``resume_from`` a single-file checkpoint into an FSDP2-sharded module (a clear error).
``decisions``: choices every rank must make alike although each sees its own values, under
FSDP2 (where a save is a collective): best-only saves every 2 batches (each rank's running
loss differs), a best file deleted before a resume, and a LightningModule's torchmetrics
object whose running value a rank-0-only reader asks for mid-epoch (as the progress bar does
on a terminal); and output folders that cannot be written (rank 0 checks them, every rank
must raise the same error).
Each rank writes ``DIR/result_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import warnings

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import BackupAndRestore, LambdaCallback, ModelCheckpoint, Trainer


def decisions(module, x, y, out, rank) -> dict:
    def sharded():
        return Trainer(copy.deepcopy(module), "sgd", "mse", device="cpu", strategy="fsdp")

    batch_best = ModelCheckpoint(
        os.path.join(out, "b-{batch}-{loss:.4f}.pt"),
        monitor="loss", save_best_only=True, save_weights_only=True, save_freq=2,
    )  # fmt: skip
    sharded().fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[batch_best])

    def resumable():
        best = ModelCheckpoint(
            os.path.join(out, "best-{epoch}.pt"),
            monitor="loss", mode="max", save_best_only=True, save_weights_only=True,
        )  # fmt: skip
        return best, [best, ModelCheckpoint(os.path.join(out, "all.pt"))]

    trainer = sharded()
    best, callbacks = resumable()
    trainer.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    dist.barrier()
    if rank == 0:
        os.remove(best.best_model_path)
    dist.barrier()
    best, callbacks = resumable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the forgotten file, named by rank 0
        trainer.fit(
            x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks,
            resume_from=os.path.join(out, "all.pt"),
        )  # fmt: skip
    history = lightning_with_a_metric(rank)
    blocked = os.path.join(out, "a-file")  # a file where a folder should be
    if rank == 0:
        open(blocked, "w").close()
    dist.barrier()
    errors = []
    for callback in (
        ModelCheckpoint(os.path.join(blocked, "m.pt")),
        BackupAndRestore(os.path.join(blocked, "backup")),
    ):
        try:
            sharded().fit(x, y, epochs=1, verbose=0, callbacks=[callback])
        except OSError as error:
            errors.append(f"{type(error).__name__}: {error}")
    return {
        "batch_best": os.path.basename(batch_best.best_model_path),
        "resumed_best": os.path.basename(best.best_model_path),
        "lightning_history": history,
        "unwritable": errors,
    }


def lightning_with_a_metric(rank: int) -> dict:
    import lightning as L
    import torch.nn.functional as F
    from torchmetrics.classification import MulticlassAccuracy

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 3)
            self.accuracy = MulticlassAccuracy(num_classes=3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.layer(x)
            self.accuracy(logits, y)
            self.log("train_acc", self.accuracy, on_step=True, on_epoch=True)
            return F.cross_entropy(logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = Trainer(Classifier(), device="cpu")
    # What the progress bar does on a terminal: rank 0 alone reads the running values.
    reader = LambdaCallback(on_train_batch_end=lambda batch, logs: trainer.running_logs())
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    callbacks = [reader] if rank == 0 else []
    return trainer.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=callbacks).history


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--case", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    rank = int(os.environ.get("RANK", "0"))
    result: dict = {}
    path = os.path.join(args.out, "last.pt")
    if args.case == "rank0_checkpoint":
        trainer = Trainer(module, "sgd", "mse", device="cpu")
        callbacks = [ModelCheckpoint(path, monitor="loss")] if rank == 0 else []
        try:
            trainer.fit(x, y, epochs=2, batch_size=8, callbacks=callbacks)
        except ValueError as error:
            result["error"] = str(error)
    elif args.case == "misuse":
        trainer = Trainer(module, "sgd", "mse", device="cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, verbose=0)
        result["warnings"] = [str(w.message) for w in caught]
        sharded = Trainer(copy.deepcopy(module), "sgd", "mse", device="cpu", strategy="fsdp")
        before = [p.full_tensor().clone() for p in sharded.model.parameters()]
        try:
            sharded.fit(x, y, epochs=2, verbose=0, resume_from=os.path.join(args.out, "one.pt"))
        except ValueError as error:
            result["error"] = str(error)
        after = [p.full_tensor() for p in sharded.model.parameters()]
        result["untouched"] = all(torch.equal(a, b) for a, b in zip(before, after))
        del sharded
    elif args.case == "decisions":
        result.update(decisions(module, x, y, args.out, rank))
        trainer = None
    else:
        trainer = Trainer(module, "sgd", "mse", device="cpu", strategy="fsdp")
        trainer.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(path)])
        result["saved_as_directory"] = os.path.isdir(path)
        result["leftovers"] = sorted(n for n in os.listdir(args.out) if n.startswith("last.pt."))
    with open(os.path.join(args.out, f"result_rank{rank}.json"), "w") as file:
        json.dump(result, file)
    if dist.is_initialized():
        del trainer
        gc.collect()  # free the wrappers before the process group
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
