"""Worker script of tests/test_integrations_tracking.py: MLflow and Optuna under torchrun.

    torchrun --nproc_per_node=2 tests/ddp_scripts/tracking_ddp.py --out DIR --uri URI \
        --storage URL

1. ``fit`` with an MLflowLogger given to rank 0 only (it runs no collective), logging batch
   values too.
2. ``fit`` with an MLflowLogger and an OptunaPruning on every rank: rank 0 holds a trial of a
   study whose two earlier trials reported 0.0 at every epoch, so the MedianPruner prunes it
   at epoch 1 (after one warm-up epoch); the other rank has no trial and must stop too.
3. ``fit`` of an FSDP-sharded module with ``MLflowLogger(log_model=True)``: refused.

Each rank writes ``DIR/result_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import optuna
import torch
import torch.distributed as dist

from torchcallbacks import Trainer
from torchcallbacks.integrations import MLflowLogger, OptunaPruning


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--storage", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    trainer = Trainer(torch.nn.Linear(3, 1), optimizer="sgd", loss="mse", device="cpu")
    rank = int(os.environ["RANK"])
    result: dict = {}

    logger = [MLflowLogger("ddp", tracking_uri=args.uri, log_every_n_steps=1)] if rank == 0 else []
    history = trainer.fit(
        x, y, batch_size=4, epochs=2, validation_split=0.25, verbose=0, callbacks=logger
    )
    result["epochs"] = history.epoch

    trial = None
    if rank == 0:
        study = optuna.create_study(
            study_name="ddp",
            storage=args.storage,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
        zeros = dict.fromkeys(range(4), 0.0)
        done = optuna.trial.create_trial(value=0.0, intermediate_values=zeros)
        for _ in range(2):
            study.add_trial(done)
        trial = study.ask()
    callbacks = [MLflowLogger("ddp", tracking_uri=args.uri), OptunaPruning(trial, "val_loss")]
    try:
        trainer.fit(
            x, y, batch_size=4, epochs=4, validation_split=0.25, verbose=0, callbacks=callbacks
        )
    except optuna.TrialPruned as error:
        result["pruned"] = str(error)
        if rank == 0:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    sharded = Trainer(torch.nn.Linear(3, 1), optimizer="sgd", loss="mse", strategy="fsdp")
    try:  # rank 0 does not hold an FSDP module's weights: refused on every rank, at once
        sharded.fit(x, y, verbose=0, callbacks=[MLflowLogger("ddp", args.uri, log_model=True)])
    except ValueError as error:
        result["fsdp_log_model"] = str(error)
    with open(os.path.join(args.out, f"result_rank{rank}.json"), "w") as file:
        json.dump(result, file)
    dist.barrier()


if __name__ == "__main__":
    main()
