"""kill -9 at the moments that matter to an MLflow run, then a rerun: the run must hold every
step once, with an uninterrupted run's values.

Run as ``python tests/mlflow_kill_run.py <work folder> <tracking URI>``; prints one JSON
report. This process imports torch and MLflow once and forks one child per run (a real
process, killed with SIGKILL); a killed run is rerun, as a user reruns the script, until it
finishes. The parent opens the store only after every child has finished.

Each trial kills its first run at one point; BackupAndRestore backs up every 3 batches
(mid-epoch: an epoch has 4 batches), and MLflowLogger logs batch values every 2 batches:

- ``backup@6``: just after the mid-epoch backup of batch 6, before MLflow stored batch 6's
  values when BackupAndRestore is listed first (the rerun's replay stores them);
- ``log@batch_loss:6``: just after MLflow stored the batch values of batch 6, before the
  backup of that batch when MLflowLogger is listed first (the rerun computes them again);
- ``log@loss:1``: just after MLflow stored the values of epoch 1, which ends at batch 8,
  after the last backup at batch 6;
- ``batch@11``: at the end of batch 11, where nothing is saved or logged.

The first two are tried in both orders of the callbacks; at the last two no backup is
made, so the order makes no difference there.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (imported once, not per child)
from kill_campaign import fork_run, seeded_run  # sets one thread before any op: the children fork
from mlflow.tracking import MlflowClient

from torchcallbacks import BackupAndRestore, LambdaCallback
from torchcallbacks.integrations import MLflowLogger

EPOCHS = 3
ORDERS = ["logger_first", "backup_first"]
KILLS = [(order, kill) for kill in ("backup@6", "log@batch_loss:6") for order in ORDERS]
KILLS += [("logger_first", "log@loss:1"), ("backup_first", "batch@11")]


def train(work: str, uri: str, experiment: str, order: str, kill: str | None) -> None:
    """One run of the user's script (in a forked child), killed at ``kill`` if given."""
    kind, _, at = (kill or "none@").partition("@")
    if kind == "backup":
        real_replace, count = os.replace, [0]

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            count[0] += os.path.basename(dst) == "latest.pt"
            if count[0] * 3 == int(at):
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace  # this process only: a forked child
    if kind == "log":
        key, step = at.split(":")
        real_log_batch = MlflowClient.log_batch

        def log_batch(client, run_id, metrics=(), *args, **kwargs):
            result = real_log_batch(client, run_id, metrics, *args, **kwargs)
            if any(m.key == key and m.step == int(step) for m in metrics):
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        MlflowClient.log_batch = log_batch

    def kill_at_batch(batch, logs):
        if kind == "batch" and trainer.global_train_batch == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    trainer, x, y = seeded_run(20)
    logger = MLflowLogger(
        experiment_name=experiment, tracking_uri=uri, log_every_n_steps=2, params={"seed": 0}
    )
    backup = BackupAndRestore(os.path.join(work, "backup"), save_freq=3)
    callbacks = [logger, backup] if order == "logger_first" else [backup, logger]
    callbacks.append(LambdaCallback(on_train_batch_end=kill_at_batch))
    trainer.fit(
        x, y, batch_size=4, epochs=EPOCHS, validation_split=0.2, callbacks=callbacks, verbose=0
    )


def trial(base: str, uri: str, order: str, kill: str | None) -> dict:
    """A run killed once at ``kill``, then rerun until it finishes."""
    name = f"{order}-{kill or 'uninterrupted'}"
    work = os.path.join(base, name)
    os.makedirs(work)
    exits = [fork_run(train, work, uri, name, order, kill)]
    while exits[-1] != 0 and len(exits) < 3 and exits[-1] == -signal.SIGKILL:
        exits.append(fork_run(train, work, uri, name, order, None))
    return {"experiment": name, "exits": exits}


def read_back(uri: str, experiment: str) -> dict:
    """What the store holds for an experiment: its runs and each metric's (step, value)s."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    result = {"runs": len(runs), "statuses": [run.info.status for run in runs]}
    if runs:
        run = runs[0]
        result["params"] = run.data.params
        result["metrics"] = {
            key: sorted([m.step, m.value] for m in client.get_metric_history(run.info.run_id, key))
            for key in sorted(run.data.metrics)
        }
    return result


def main() -> None:
    base, uri = sys.argv[1], sys.argv[2]
    trials = [trial(base, uri, ORDERS[0], None)]
    trials += [trial(base, uri, order, kill) for order, kill in KILLS]
    for entry in trials:  # every child has ended: now the store may be opened here
        entry.update(read_back(uri, entry["experiment"]))
    print(json.dumps(trials))


if __name__ == "__main__":
    main()
