"""Worker script of tests/test_distributed.py: run under torchrun (2 ranks, gloo) or alone.

    torchrun --nproc_per_node=2 tests/ddp_scripts/train_ddp.py --out DIR [--part raise]
    python tests/ddp_scripts/train_ddp.py --out DIR          # the single-process reference

Each rank works inside ``DIR/rank<r>/`` (relative callback paths), so what rank 1 writes
there shows; results go to ``DIR/result_rank<r>.json``. The global batch (16) is split
between the ranks and ``shuffle=False``: under DDP, global batch k holds the same 16
samples as the single-process batch k, so the epoch logs must agree.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Callback, CSVLogger, EarlyStopping, JSONLogger, Trainer
from torchcallbacks.callbacks.model_checkpoint import ModelCheckpoint

GLOBAL_BATCH = 16
EPOCHS = 12


def data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 8, generator=generator)
    y = (x[:, 0] - x[:, 1] + 0.5 * x[:, 2] > 0).long() + (x[:, 3] > 1).long()
    return x, y


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def batchnorm_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    )


def flat_weights(module: torch.nn.Module) -> list[float]:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).tolist()


class StopOnRank(Callback):
    """Sets ``stop_training`` on one rank only, after a given global batch."""

    def __init__(self, rank: int, global_batch: int) -> None:
        super().__init__()
        self.rank, self.global_batch = rank, global_batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.trainer.rank == self.rank and self.trainer.global_train_batch == self.global_batch:
            self.trainer.stop_training = True


class RaiseOnRank(Callback):
    def __init__(self, rank: int, epoch: int) -> None:
        super().__init__()
        self.rank, self.epoch = rank, epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.trainer.rank == self.rank and epoch == self.epoch:
            raise RuntimeError(f"rank {self.rank} fails on purpose at epoch {epoch}")


class SyncedMeanPrediction:
    """A torchmetrics-style metric whose compute() all-reduces, as torchmetrics does."""

    def __init__(self) -> None:
        self.reset()

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.state += torch.stack([preds.sum(), torch.tensor(float(preds.numel()))])

    def compute(self) -> torch.Tensor:
        state = self.state.clone()
        if dist.is_initialized():
            dist.all_reduce(state)
        return state[0] / state[1]

    def reset(self) -> None:
        self.state = torch.zeros(2)


class ReadRunningLogsOnRank0(Callback):
    """Reads the running logs on rank 0 only, as the progress bar does when it redraws."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.trainer.is_main_process:
            self.seen.append(self.trainer.running_logs())


def trainer_for(module: torch.nn.Module) -> Trainer:
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2)
    return Trainer(module, optimizer, loss="cross_entropy", metrics=["accuracy"], device="cpu")


def main_part(world_size: int) -> dict:
    """Callbacks that write files and EarlyStopping; the reference runs this part alone."""
    x, y = data(256, seed=1)
    x_val, y_val = data(64, seed=2)
    trainer = trainer_for(model())
    stopper = EarlyStopping(monitor="val_loss", min_delta=0.03, patience=1)
    callbacks = [
        stopper,
        CSVLogger("logs/train.csv"),
        JSONLogger("logs/train.jsonl"),
        ModelCheckpoint("ckpt/epoch{epoch:02d}.pt"),
        ModelCheckpoint("ckpt/weights.pt", save_weights_only=True),
    ]
    history = trainer.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH // world_size,
        epochs=EPOCHS,
        shuffle=False,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=0,
    )
    return {
        "history": history.history,
        "epochs_run": len(history.epoch),
        "stopped_epoch": stopper.stopped_epoch,
        "weights": flat_weights(trainer.model),
        "evaluate": trainer.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True),
        "evaluate_of_49": trainer.evaluate(
            x_val[:49], y_val[:49], batch_size=8, verbose=0, return_dict=True
        ),
        "evaluate_of_1": trainer.evaluate(x_val[:1], y_val[:1], verbose=0, return_dict=True),
        "predict_of_1": trainer.predict(TensorDataset(x_val[:1]), verbose=0).tolist(),
        "predict": trainer.predict(x_val[:50], batch_size=8, verbose=0).tolist(),
        "predict_rows_of_49": len(trainer.predict(x_val[:49], batch_size=8, verbose=0)),
        "predict_rows_of_loader": len(trainer.predict(DataLoader(x_val, batch_size=8), verbose=0)),
    }


def stop_part() -> dict:
    """Rank 1 alone asks to stop after global batch 20 (epoch 2, batch 3 of 8 per epoch)."""
    x, y = data(128, seed=3)
    trainer = trainer_for(model())
    history = trainer.fit(x, y, batch_size=8, epochs=5, callbacks=[StopOnRank(1, 20)], verbose=0)
    return {"epochs_run": len(history.epoch), "global_train_batch": trainer.global_train_batch}


def wrapped_part() -> dict:
    """A module the user wrapped in DDP: used as is, saved without the ``module.`` prefix."""
    wrapped = DistributedDataParallel(model())
    x, y = data(128, seed=4)
    trainer = trainer_for(wrapped)
    trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        callbacks=[ModelCheckpoint("wrapped/weights.pt", save_weights_only=True)],
        verbose=0,
    )
    return {
        "model_is_inner_module": trainer.model is wrapped.module,
        "weights": flat_weights(wrapped.module),
    }


def uneven_part() -> dict:
    """49 validation samples (not divisible by 2 ranks) and BatchNorm statistics, which
    differ between ranks after training: scores must be those of rank 0's saved model."""
    x, y = data(128, seed=6)
    x_val, y_val = data(49, seed=7)
    trainer = trainer_for(batchnorm_model())
    history = trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        validation_data=(x_val, y_val),
        callbacks=[ModelCheckpoint("uneven/weights.pt", save_weights_only=True)],
        verbose=0,
    )
    dataset = TensorDataset(x_val, y_val)
    return {
        "history": history.history,
        "evaluate_dataset": trainer.evaluate(dataset, batch_size=8, verbose=0, return_dict=True),
        "predict_dataset": trainer.predict(dataset, batch_size=8, verbose=0).tolist(),
    }


def synced_metric_part() -> dict:
    """A self-synchronising metric object with running logs read on rank 0 alone: no
    collective may run on one rank only (that would hang)."""
    x, y = data(128, seed=8)
    module = model()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2)
    metric = SyncedMeanPrediction()
    trainer = Trainer(module, optimizer, loss="cross_entropy", metrics=[metric], device="cpu")
    reader = ReadRunningLogsOnRank0()
    history = trainer.fit(x, y, batch_size=8, epochs=2, callbacks=[reader], verbose=0)
    return {"history": history.history, "running_keys": sorted({k for s in reader.seen for k in s})}


def collection_part() -> dict:
    """A torchmetrics MetricCollection: logged under its keys, synchronised by torchmetrics in
    compute() at epoch ends (running logs read on rank 0 alone leave it out)."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    def collection(**options: bool) -> MetricCollection:
        metrics = {"acc": MulticlassAccuracy(3, **options), "f1": MulticlassF1Score(3, **options)}
        return MetricCollection(metrics)

    x, y = data(128, seed=9)
    x_val, y_val = data(64, seed=10)
    module = model()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2)
    trainer = Trainer(module, optimizer, "cross_entropy", metrics=[collection()], device="cpu")
    reader = ReadRunningLogsOnRank0()
    history = trainer.fit(
        x, y, batch_size=8, epochs=2, validation_data=(x_val, y_val), callbacks=[reader],
        verbose=0,
    )  # fmt: skip
    reference = collection(sync_on_compute=False)  # over every rank's rows, gathered
    reference.update(trainer.predict(x_val, batch_size=8, verbose=0), y_val)
    return {
        "history": history.history,
        "running_keys": sorted({k for s in reader.seen for k in s}),
        "evaluate": trainer.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True),
        "expected": {key: float(value) for key, value in reference.compute().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--part", choices=["all", "raise"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, f"rank{rank}"), exist_ok=True)
    os.chdir(os.path.join(out, f"rank{rank}"))

    if args.part == "raise":
        x, y = data(128, seed=5)
        trainer_for(model()).fit(
            x, y, batch_size=8, epochs=4, callbacks=[RaiseOnRank(1, 1)], verbose=0
        )
        return
    result = {"main": main_part(world_size)}
    if world_size > 1:
        result["stop"] = stop_part()
        result["wrapped"] = wrapped_part()
        result["uneven"] = uneven_part()
        result["synced_metric"] = synced_metric_part()
        result["collection"] = collection_part()
        # Free the DDP wrappers before the process group: a DDP reducer still alive at
        # interpreter exit makes gloo abort the process now and then (SIGABRT).
        gc.collect()
        dist.destroy_process_group()
    with open(os.path.join(out, f"result_rank{rank}.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
