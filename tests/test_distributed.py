"""Two CPU processes under torchrun (gloo) against a single-process run of the same script.

The worker is ``tests/ddp_scripts/train_ddp.py``: 256 samples, a global batch of 16 split
over the ranks (8 each) and ``shuffle=False``, so DDP's global batch k is the single
process's batch k and the epoch logs must agree to float rounding. Each rank works in its
own folder, which shows what rank 1 wrote (nothing).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPTS = Path(__file__).parent / "ddp_scripts"
sys.path.insert(0, str(SCRIPTS))
import launch  # noqa: E402
import train_ddp  # noqa: E402  (the worker script: its model and constants)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available in this torch build",
)


def _run(
    out: Path,
    processes: int,
    *args: str,
    script: Path = SCRIPTS / "train_ddp.py",
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    return launch.run(script, out, processes, *args, timeout=timeout)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single-process reference and the 2-rank run: (folders, results by name)."""
    single, ddp = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    for out, processes in ((single, 1), (ddp, 2)):
        done = _run(out, processes)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {
        "single": json.loads((single / "result_rank0.json").read_text()),
        "rank0": json.loads((ddp / "result_rank0.json").read_text()),
        "rank1": json.loads((ddp / "result_rank1.json").read_text()),
    }
    return {"single": single, "ddp": ddp}, results


def test_epoch_logs_equal_a_single_process_run_on_the_same_global_batches(runs):
    _, results = runs
    expected = results["single"]["main"]["history"]
    rank0, rank1 = results["rank0"]["main"], results["rank1"]["main"]
    assert rank0["history"] == rank1["history"]  # all-reduced: identical on every rank
    assert sorted(rank0["history"]) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for key, values in expected.items():
        assert rank0["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
    assert rank0["weights"] == rank1["weights"]
    assert rank0["weights"] == pytest.approx(results["single"]["main"]["weights"], abs=1e-5)
    evaluated = results["single"]["main"]["evaluate"]
    assert rank0["evaluate"] == pytest.approx(evaluated, rel=1e-5)
    assert rank1["evaluate"] == rank0["evaluate"]
    # 49 samples over 2 ranks: unpadded shards (25 + 24), so none counts twice.
    evaluated = results["single"]["main"]["evaluate_of_49"]
    assert rank0["evaluate_of_49"] == pytest.approx(evaluated, rel=1e-5)
    assert rank1["evaluate_of_49"] == rank0["evaluate_of_49"]
    # Fewer samples than processes: no rank is left with an empty shard (which would hang).
    single = results["single"]["main"]
    assert rank0["evaluate_of_1"] == rank1["evaluate_of_1"]
    assert rank0["evaluate_of_1"] == pytest.approx(single["evaluate_of_1"], rel=1e-5)
    assert rank0["predict_of_1"] == rank1["predict_of_1"]
    assert rank0["predict_of_1"][0] == pytest.approx(single["predict_of_1"][0], rel=1e-5)


def test_only_rank_0_writes_files_and_they_match_the_single_process_files(runs):
    folders, results = runs
    single, ddp = folders["single"] / "rank0", folders["ddp"]
    epochs = results["single"]["main"]["epochs_run"]
    expected = sorted(
        ["logs/train.csv", "logs/train.jsonl", "ckpt/weights.pt"]
        + [f"ckpt/epoch{epoch:02d}.pt" for epoch in range(1, epochs + 1)]
    )
    assert _files(single) == expected
    assert _files(ddp / "rank0") == sorted(expected + ["uneven/weights.pt", "wrapped/weights.pt"])
    assert _files(ddp / "rank1") == []

    with (
        open(single / "logs/train.csv", newline="") as a,
        open(ddp / "rank0/logs/train.csv", newline="") as b,
    ):
        rows_single, rows_ddp = list(csv.reader(a)), list(csv.reader(b))
    assert (
        rows_ddp[0] == rows_single[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    )
    assert len(rows_ddp) == len(rows_single) == epochs + 1
    for row_ddp, row_single in zip(rows_ddp[1:], rows_single[1:]):
        assert [float(v) for v in row_ddp] == pytest.approx(
            [float(v) for v in row_single], rel=1e-5
        )
    records = (ddp / "rank0/logs/train.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in records] == list(range(epochs))

    # Checkpoints hold the plain module's keys and load into a fresh module.
    weights = torch.load(ddp / "rank0/ckpt/weights.pt", weights_only=True)
    fresh = train_ddp.model()
    assert list(weights) == list(fresh.state_dict())
    fresh.load_state_dict(weights)
    assert train_ddp.flat_weights(fresh) == pytest.approx(results["rank0"]["main"]["weights"])
    full = torch.load(ddp / f"rank0/ckpt/epoch{epochs:02d}.pt", weights_only=True)
    assert list(full["model"]) == list(fresh.state_dict())


def test_early_stopping_and_a_stop_on_one_rank_stop_both_ranks_together(runs):
    _, results = runs
    single = results["single"]["main"]
    assert 0 < single["stopped_epoch"] < train_ddp.EPOCHS - 1  # it really stopped early
    for rank in ("rank0", "rank1"):
        assert results[rank]["main"]["stopped_epoch"] == single["stopped_epoch"]
        assert results[rank]["main"]["epochs_run"] == single["epochs_run"]
        # Only rank 1 set stop_training, after global batch 20: the 4th batch of epoch 2
        # (8 batches of 8 per rank and epoch); both ranks stopped right there.
        assert results[rank]["stop"] == {"epochs_run": 3, "global_train_batch": 20}


def test_a_module_wrapped_in_ddp_by_the_user_is_used_as_is(runs):
    folders, results = runs
    rank0, rank1 = results["rank0"]["wrapped"], results["rank1"]["wrapped"]
    assert rank0["model_is_inner_module"] and rank1["model_is_inner_module"]
    assert rank0["weights"] == rank1["weights"]  # gradients were all-reduced by the user's DDP
    weights = torch.load(folders["ddp"] / "rank0/wrapped/weights.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in weights)
    fresh = train_ddp.model()
    fresh.load_state_dict(weights)
    assert train_ddp.flat_weights(fresh) == pytest.approx(rank0["weights"])


def test_predict_gathers_every_rank_in_input_order(runs):
    _, results = runs
    single = results["single"]["main"]
    for rank in ("rank0", "rank1"):
        main = results[rank]["main"]
        assert main["predict_rows_of_49"] == single["predict_rows_of_49"] == 49
        assert main["predict_rows_of_loader"] == single["predict_rows_of_loader"] == 64
        torch.testing.assert_close(
            torch.tensor(main["predict"]), torch.tensor(single["predict"]), atol=1e-4, rtol=0
        )


def test_uneven_validation_and_batchnorm_score_rank_0s_saved_model(runs):
    """The last validation, evaluate and predict of the 2-rank run equal a single process
    scoring rank 0's saved weights on the same 49 samples."""
    folders, results = runs
    saved = train_ddp.batchnorm_model()
    saved.load_state_dict(torch.load(folders["ddp"] / "rank0/uneven/weights.pt", weights_only=True))
    x_val, y_val = train_ddp.data(49, seed=7)
    reference = train_ddp.trainer_for(saved)
    expected = reference.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True)
    predicted = reference.predict(x_val, batch_size=8, verbose=0)
    for rank in ("rank0", "rank1"):
        uneven = results[rank]["uneven"]
        assert uneven["history"]["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-5)
        assert uneven["history"]["val_accuracy"][-1] == pytest.approx(expected["accuracy"])
        assert uneven["evaluate_dataset"] == pytest.approx(expected, rel=1e-5)
        torch.testing.assert_close(
            torch.tensor(uneven["predict_dataset"]), predicted, atol=1e-5, rtol=0
        )


def test_a_self_synchronising_metric_is_read_by_every_rank_together(runs):
    """Running logs read on rank 0 alone leave out the torchmetrics-style object (its
    compute() is a collective); the epoch logs hold its global value on both ranks."""
    _, results = runs
    rank0, rank1 = results["rank0"]["synced_metric"], results["rank1"]["synced_metric"]
    assert rank0["running_keys"] == ["loss"]
    assert rank0["history"] == rank1["history"]
    assert len(rank0["history"]["synced_mean_prediction"]) == 2


def test_a_metric_collection_is_logged_under_its_keys_with_torchmetrics_values(runs):
    """torchmetrics synchronises the collection in compute(): read by every rank at epoch
    ends, its keys hold the values over every rank's samples."""
    _, results = runs
    rank0, rank1 = results["rank0"]["collection"], results["rank1"]["collection"]
    assert rank0["history"] == rank1["history"]
    assert rank0["running_keys"] == ["loss"]
    assert sorted(rank0["history"]) == ["acc", "f1", "loss", "val_acc", "val_f1", "val_loss"]
    for key in ("acc", "f1"):
        assert rank0["history"][f"val_{key}"][-1] == pytest.approx(rank0["expected"][key])
        assert rank0["evaluate"][key] == pytest.approx(rank0["expected"][key])
    assert list(rank0["evaluate"]) == ["loss", "acc", "f1"]


def test_a_rank_that_raises_ends_the_run_without_hanging(tmp_path):
    start = time.monotonic()
    done = _run(tmp_path, 2, "--part", "raise", timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert "rank 1 fails on purpose at epoch 1" in done.stdout + done.stderr
    assert elapsed < 60, f"the surviving rank was ended only after {elapsed:.0f} s"


def test_the_ddp_example_runs_under_torchrun(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "ddp.py"
    out = tmp_path / "run"
    args = ("--script", str(example), "--small", "--epochs", "2", "--device", "cpu")
    done = _run(out, 2, *args, script=SCRIPTS / "exit_threads.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("Epoch 1/2") == 1  # printed by rank 0 only
    assert "2 process(es) on cpu, global batch 128" in done.stdout
    assert _files(out) == ["best.pt", "last.pt", "log.csv"]
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header + 2 epochs
    # The process group was freed before interpreter shutdown, which it could abort.
    assert [(tmp_path / f"run.exit-threads-{rank}").read_text() for rank in (0, 1)] == ["0", "0"]
    weights = torch.load(out / "best.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in weights)
