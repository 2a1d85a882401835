"""Worker script of tests/test_distributed_scale.py: default verbosity, agreed stops, FSDP2,
backups and elastic restarts, under torchrun (2 ranks, gloo, CPU) or in one process.

    torchrun --nproc_per_node=2 tests/ddp_scripts/scale.py --out DIR --launch parts
    torchrun --nproc_per_node=2 --max-restarts=2 scale.py --out DIR --launch elastic
    python tests/ddp_scripts/scale.py --out DIR --launch single   # resumes 2-rank backups

Backups live in ``DIR/shared`` (one folder every rank sees); ``DIR/rank<r>`` is each rank's
own folder (a node-local disk). Results go to ``DIR/<launch>_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import warnings

import torch
import torch.distributed as dist

from torchcallbacks import (
    BackupAndRestore,
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    TerminateOnNaN,
    Trainer,
)

FEATURES, CLASSES = 8, 3


def data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, FEATURES, generator=generator)
    y = (x[:, 0] - x[:, 1] + 0.5 * x[:, 2] > 0).long() + (x[:, 3] > 1).long()
    return x, y


def model(dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16),
        torch.nn.Tanh(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(16, CLASSES),  # 3 rows: uneven shards over 2 ranks
    )


def trainer_for(module: torch.nn.Module, strategy: str | None = "auto", **kwargs) -> Trainer:
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)  # built before sharding
    return Trainer(
        module,
        optimizer,
        loss="cross_entropy",
        metrics=["accuracy"],
        device="cpu",
        strategy=strategy,
        **kwargs,
    )


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


class StopAt(Callback):
    """Sets stop_training after a global batch; on the ranks that hold it only."""

    def __init__(self, global_batch: int) -> None:
        super().__init__()
        self.global_batch = global_batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.trainer.global_train_batch == self.global_batch:
            self.trainer.stop_training = True


class RaiseAt(Callback):
    """Raises after a global batch on every rank (a crash after a backup)."""

    def __init__(self, global_batch: int) -> None:
        super().__init__()
        self.global_batch = global_batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.trainer.global_train_batch == self.global_batch:
            raise KeyboardInterrupt(f"stopped on purpose at global batch {self.global_batch}")


class DieOnce(Callback):
    """Rank 1 dies (no cleanup) after a global batch, in one elastic attempt only."""

    def __init__(self, global_batch: int, attempt: int) -> None:
        super().__init__()
        self.global_batch, self.attempt = global_batch, attempt

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if (
            restart == self.attempt
            and self.trainer.rank == 1
            and self.trainer.global_train_batch == self.global_batch
        ):
            os._exit(3)


class SigtermOnRank1(Callback):
    """Rank 1 alone receives SIGTERM after a global batch (a scheduler's signal that
    reaches the ranks at different batches)."""

    def __init__(self, global_batch: int) -> None:
        super().__init__()
        self.global_batch = global_batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.trainer.rank == 1 and self.trainer.global_train_batch == self.global_batch:
            os.kill(os.getpid(), signal.SIGTERM)


class BatchesSeen(Callback):
    """Samples each epoch's batches covered in this run."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: dict[int, int] = {}

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        epoch = self.trainer.current_epoch
        self.samples[epoch] = self.samples.get(epoch, 0) + self.trainer.last_batch_size


# -- launch "parts" ---------------------------------------------------------------------------
def default_verbose_part() -> dict:
    """What a new user runs: no verbose argument anywhere."""
    x, y = data(128, seed=1)
    trainer = trainer_for(model())
    history = trainer.fit(
        x, y, batch_size=8, epochs=3, validation_split=0.25, callbacks=[EarlyStopping()]
    )
    return {
        "history": history.history,
        "evaluate": trainer.evaluate(x, y, batch_size=8, return_dict=True),
        "predict_rows": len(trainer.predict(x[:49], batch_size=8)),
    }


def nan_part() -> dict:
    """Sample 13 is NaN: with shuffle=False and 4 samples per rank and batch, it is in rank
    1's batch 1 only (rank r takes samples r, r+2, ...)."""
    x, y = data(64, seed=2)
    x[13] = float("nan")
    trainer = trainer_for(model())
    history = trainer.fit(
        x, y, batch_size=4, epochs=2, shuffle=False, callbacks=[TerminateOnNaN()], verbose=0
    )
    return {"epochs": len(history.epoch), "global_train_batch": trainer.global_train_batch}


def asymmetric_part() -> dict:
    """Rank 0 alone holds a callback with batch hooks, which stops training."""
    x, y = data(64, seed=3)
    trainer = trainer_for(model())
    callbacks = [StopAt(6)] if rank() == 0 else []
    history = trainer.fit(x, y, batch_size=4, epochs=3, callbacks=callbacks, verbose=2)
    return {"epochs": len(history.epoch), "global_train_batch": trainer.global_train_batch}


def fsdp_and_ddp_part(strategy: str) -> dict:
    """The same run under DDP and FSDP2: 49 validation samples (uneven shards). FSDP2
    writes its full checkpoints in the background (async_save)."""
    x, y = data(128, seed=4)
    x_val, y_val = data(49, seed=5)
    module = model()
    trainer = trainer_for(module, strategy, async_save=strategy == "fsdp")
    callbacks = [
        # Copies the (sharded) state_dict each epoch and loads the best one back at the end.
        EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        ModelCheckpoint(f"../shared/{strategy}/weights.pt", save_weights_only=True),
        ModelCheckpoint(f"../shared/{strategy}/full.pt"),
    ]
    history = trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=0,
    )
    trainer.save_weights(f"../shared/{strategy}/save_weights.pt")
    evaluated = trainer.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True)
    trainer.load_weights(f"../shared/{strategy}/weights.pt")  # full weights, resharded
    return {
        "evaluate_after_load_weights": [
            evaluated,
            trainer.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True),
        ],
        "history": history.history,
        "evaluate": trainer.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True),
        "evaluate_of_1": trainer.evaluate(x_val[:1], y_val[:1], verbose=0, return_dict=True),
        "predict": trainer.predict(x_val, batch_size=8, verbose=0).tolist(),
        "sharded": type(trainer.model).__name__,
        "optimizer_on_module": all(
            any(p is q for q in module.parameters())
            for g in trainer.optimizer.param_groups
            for p in g["params"]
        ),
    }


def accumulation_part(strategy: str) -> dict:
    """7 batches per epoch and rank, a step every 2: the epoch's last batch (a step of its
    own after the loop) must have its gradients synchronised too."""
    x, y = data(56, seed=9)
    trainer = trainer_for(model(), strategy, accumulate_grad_batches=2)
    trainer.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    trainer.save_weights(f"../shared/accumulated_{strategy}.pt")
    if strategy == "fsdp":  # each rank holds its shards: compared through the saved file
        return {}
    return {"local_weights": [value.tolist() for value in trainer.model.state_dict().values()]}


def user_sharded_part() -> dict:
    """A module the user sharded with fully_shard, and its optimizer built afterwards:
    strategy=None uses both as they are."""
    from torch.distributed.fsdp import fully_shard

    x, y = data(128, seed=4)
    module = fully_shard(model())
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    trainer = Trainer(
        module, optimizer, loss="cross_entropy", metrics=["accuracy"], device="cpu", strategy=None
    )
    history = trainer.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return {"history": history.history, "same_module": trainer._module is module}


def local_backup_part() -> dict:
    """A backup folder that is each rank's own (a node-local disk): rank 0 writes a backup,
    rank 1 sees none; the rerun must fail on both ranks with one clear error."""
    x, y = data(64, seed=6)
    trainer = trainer_for(model())
    backup = BackupAndRestore("local_backup", save_freq=2)
    try:
        trainer.fit(x, y, batch_size=4, epochs=2, callbacks=[backup, RaiseAt(3)], verbose=0)
    except KeyboardInterrupt:
        pass
    try:
        trainer.fit(x, y, batch_size=4, epochs=2, callbacks=[backup], verbose=0)
    except RuntimeError as error:
        return {"error": str(error)}
    return {"error": None}


def elastic_run(strategy: str, die: DieOnce | None) -> dict:
    """Per-rank dropout, shuffled data, backups every 3 batches (of 8 per epoch). The final
    weights go to ../shared/<name>.pt. A part finished before a restart is not run again."""
    name = f"{'elastic' if die else 'reference'}_{strategy}"
    done = f"{name}_done_rank{rank()}.json"
    if os.path.exists(done):
        with open(done) as file:
            return json.load(file)
    x, y = data(128, seed=7)
    module = model(dropout=0.3)
    torch.manual_seed(1000 + rank())  # every rank its own dropout masks
    trainer = trainer_for(module, strategy)
    callbacks = [BackupAndRestore(f"../shared/backup_{name}", save_freq=3)]
    history = trainer.fit(
        x, y, batch_size=8, epochs=3, callbacks=callbacks + ([die] if die else []), verbose=0
    )
    trainer.save_weights(f"../shared/{name}.pt")
    result = {"history": history.history}
    with open(done, "w") as file:
        json.dump(result, file)
    return result


def left_backup_part(name: str, strategy: str) -> dict:
    """A run that stops after global batch 7 with its backup of global batch 6 kept in
    ../shared/left_<name>, for a run with another number of processes. On 2 ranks (4
    batches per epoch) that is mid-epoch 1; in one process (8 per epoch) mid-epoch 0."""
    x, y = data(64, seed=8)
    trainer = trainer_for(model(), strategy)
    backup = BackupAndRestore(f"../shared/left_{name}", save_freq=2)
    try:
        trainer.fit(x, y, batch_size=8, epochs=2, callbacks=[backup, RaiseAt(7)], verbose=0)
    except KeyboardInterrupt:
        pass
    return {}


def resume_part(name: str, strategy: str) -> dict:
    x, y = data(64, seed=8)
    trainer = trainer_for(model(), strategy)
    seen = BatchesSeen()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            callbacks=[BackupAndRestore(f"../shared/left_{name}", save_freq=2), seen],
            verbose=0,
        )
    return {
        "history": history.history,
        "samples": seen.samples,
        "warnings": [str(w.message) for w in caught],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--launch", choices=["parts", "elastic", "single", "sigterm"], required=True
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "shared"), exist_ok=True)
    os.makedirs(os.path.join(out, f"rank{rank()}"), exist_ok=True)
    os.chdir(os.path.join(out, f"rank{rank()}"))
    result: dict = {}
    if args.launch == "parts":
        result["default_verbose"] = default_verbose_part()
        result["nan"] = nan_part()
        result["asymmetric"] = asymmetric_part()
        result["ddp"] = fsdp_and_ddp_part("ddp")
        result["fsdp"] = fsdp_and_ddp_part("fsdp")
        result["user_sharded"] = user_sharded_part()
        result["accumulated_ddp"] = accumulation_part("ddp")
        result["accumulated_fsdp"] = accumulation_part("fsdp")
        result["local_backup"] = local_backup_part()
        result["reference_ddp"] = elastic_run("ddp", None)
        result["reference_fsdp"] = elastic_run("fsdp", None)
        left_backup_part("ddp", "ddp")
        left_backup_part("fsdp", "fsdp")
    elif args.launch == "sigterm":  # both ranks back up at one boundary, then terminate
        x, y = data(64, seed=10)
        trainer = trainer_for(model())
        callbacks = [BackupAndRestore("../shared/sigterm"), SigtermOnRank1(3)]
        trainer.fit(x, y, batch_size=4, epochs=2, callbacks=callbacks, verbose=0)
    elif args.launch == "elastic":
        result["elastic_ddp"] = elastic_run("ddp", DieOnce(5, attempt=0))
        result["elastic_fsdp"] = elastic_run("fsdp", DieOnce(11, attempt=1))
        result["restarts"] = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        result["resumed_single"] = resume_part("single", "ddp")
    else:
        result["ddp"] = resume_part("ddp", "ddp")
        result["fsdp"] = resume_part("fsdp", "fsdp")
        left_backup_part("single", "ddp")
    with open(os.path.join(out, f"{args.launch}_rank{rank()}.json"), "w") as file:
        json.dump(result, file)
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
