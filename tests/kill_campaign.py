"""A kill -9 campaign: training runs killed at every save point and at random moments must
resume bit-identically with no missing best checkpoint.

Run as ``python tests/kill_campaign.py <work folder> <data: loader|tensors> <random kills>``;
prints one JSON report. This process imports torch once and forks one child per run (a
real process, killed with SIGKILL); a killed run is rerun, as a user reruns the script,
until it finishes. Each finished run's outcome (weights, History, CSV and JSON Lines bytes,
checkpoint files and ModelCheckpoint's best) is compared with an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time

import torch

torch.set_num_threads(1)  # before any op: the forked children then never use a thread pool

from torchcallbacks import (  # noqa: E402
    BackupAndRestore,
    CSVLogger,
    JSONLogger,
    ModelCheckpoint,
    Trainer,
    seed_everything,
)
from torchcallbacks.checkpoints.files import load_file  # noqa: E402

EPOCHS = 4
# Import what the first optimizer imports lazily (torch._dynamo) once, here, not per child.
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def seeded_run(samples: int) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    """A small model with dropout (its RNG state must be resumed too) and its data."""
    generator = seed_everything(0)
    x = torch.randn(samples, 6, generator=generator)
    y = (x[:, :2].sum(1, keepdim=True) > 0).float()
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1)
    )
    trainer = Trainer(model, optimizer="adam", loss="mse", metrics=["mae"], device="cpu")
    return trainer, x, y


def train(work: str, data: str, kill_at_save: tuple[int, str] | None) -> None:
    """One run of the user's script (in a forked child); ``kill_at_save=(n, phase)`` kills
    this process at the n-th file replaced, just ``before`` or ``after`` the rename."""
    target, phase = kill_at_save or (0, "")
    real_replace, count = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        count[0] += 1
        if count[0] == target and phase == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if count[0] == target and phase == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace  # this process only: a forked child
    trainer, x, y = seeded_run(40)
    model = trainer.model
    if data == "loader":  # the DataLoader with a seeded generator that the docs recommend
        dataset = torch.utils.data.TensorDataset(x[:32], y[:32])
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=8, shuffle=True, generator=seed_everything(42)
        )
        fit_data = {"x": loader, "validation_data": (x[32:], y[32:])}
        save_freq = "epoch"
    else:
        fit_data = {"x": x, "y": y, "batch_size": 8, "validation_split": 0.2}
        save_freq = 3
    best = ModelCheckpoint(
        os.path.join(work, "ckpt", "{epoch:02d}.pt"), monitor="val_loss", save_best_only=True
    )
    callbacks = [
        BackupAndRestore(os.path.join(work, "backup"), save_freq=save_freq),
        best,  # after the backup: the order that used to lose the best checkpoint
        CSVLogger(os.path.join(work, "log.csv")),
        # per batch too: a mid-epoch backup replays its batch end for the callbacks after it
        JSONLogger(os.path.join(work, "log.jsonl"), batch_level=data == "tensors"),
    ]
    history = trainer.fit(**fit_data, epochs=EPOCHS, callbacks=callbacks, verbose=0)
    result = {
        "weights": [t.flatten().tolist() for t in model.state_dict().values()],
        "history": history.history,
        "epochs": history.epoch,
        "best": [best.best, best.best_model_path],
        "files": sorted(os.listdir(os.path.join(work, "ckpt"))),
    }
    with open(os.path.join(work, "result.json"), "w") as file:
        json.dump(result, file)
    with open(os.path.join(work, "saves.txt"), "w") as file:
        file.write(str(count[0]))


def fork_run(function, *args, kill_after: float | None = None) -> int:
    """Run ``function(*args)`` in a forked child, SIGKILLed after ``kill_after`` seconds if
    given; return its wait status code (negative: killed by that signal)."""
    pid = os.fork()
    if pid == 0:
        os.dup2(2, 1)  # what the run prints ("Resuming from ...") goes to stderr, not the report
        code = 0
        try:
            function(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_child(work: str, data: str, kill_at_save=None, kill_after: float | None = None) -> int:
    """One run of `train`, forked (see `fork_run`)."""
    return fork_run(train, work, data, kill_at_save, kill_after=kill_after)


def outcome(work: str) -> dict:
    """What a user would compare; also whether every recorded best file exists."""
    with open(os.path.join(work, "result.json")) as file:
        result = json.load(file)
    best_path = result["best"][1]
    with open(os.path.join(work, "log.csv"), "rb") as file:
        csv_bytes = file.read()
    with open(os.path.join(work, "log.jsonl"), "rb") as file:
        json_bytes = file.read()
    best_weights = None
    if best_path is not None and os.path.exists(best_path):
        best_weights = [t.flatten().tolist() for t in load_file(best_path)["model"].values()]
    return {
        **result,
        "best": [result["best"][0], os.path.basename(best_path) if best_path else None],
        "best_exists": best_path is not None and os.path.exists(best_path),
        "best_weights": best_weights,
        "csv": csv_bytes.decode(),
        "jsonl": json_bytes.decode(),
        "leftover_tmp": [
            name for _, _, names in os.walk(work) for name in names if name.endswith(".tmp")
        ],
    }


def trial(work: str, data: str, **kill) -> dict:
    """A run interrupted once as ``kill`` says, then rerun until it finishes."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    first = run_child(work, data, **kill)
    reruns = 0
    code = first
    while code != 0:
        reruns += 1
        if reruns > 3 or code not in (-signal.SIGKILL,):
            return {"kill": kill, "error": f"exit code {code}"}
        code = run_child(work, data)
    return {"kill": kill, "first_exit": first, "outcome": outcome(work)}


def random_trial(work: str, data: str, rng: random.Random, duration: float) -> dict:
    """`trial` killed at a random moment of the run; a moment after the run ended (timing
    varies with the machine's load) is drawn again from a shorter span."""
    for _ in range(6):
        result = trial(work, data, kill_after=rng.uniform(0.0, duration))
        if result.get("first_exit") != 0:
            return result
        duration /= 2
    return result


def main() -> None:
    base, data, random_kills = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reference_dir = os.path.join(base, "reference")
    os.makedirs(reference_dir)
    started = time.monotonic()
    assert run_child(reference_dir, data) == 0
    duration = time.monotonic() - started
    reference = outcome(reference_dir)

    with open(os.path.join(reference_dir, "saves.txt")) as file:
        saves = int(file.read())  # the save points: every file the run renamed into place

    rng = random.Random(0)
    trials = [
        lambda work, save=save, phase=phase: trial(work, data, kill_at_save=(save, phase))
        for save in range(1, saves + 1)
        for phase in ("before", "after")
    ]
    trials += [lambda work: random_trial(work, data, rng, duration)] * random_kills
    report = {"saves": saves, "reference_seconds": duration, "trials": [], "reference": reference}
    for index, run_trial in enumerate(trials):
        result = run_trial(os.path.join(base, f"trial{index}"))
        result["identical"] = result.get("outcome") == reference
        if result["identical"]:
            result.pop("outcome")
        report["trials"].append(result)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
