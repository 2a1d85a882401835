"""Distributed runs as users start them: torchrun with 2 CPU processes (gloo).

The worker is ``tests/ddp_scripts/scale.py``, started three times for the whole module:
``parts`` (default verbosity, agreed stops, FSDP2 against DDP, a node-local backup folder,
uninterrupted references, and backups left by a crash), ``elastic`` (torchrun restarts
the group after rank 1 dies mid-epoch, once under DDP and once under FSDP2) and
``single`` (one process resumes the 2-rank backups, and leaves a backup of its own that
the ``elastic`` launch resumes on 2 ranks).

gloo on CPU runs every collective used here (all-reduce, all-gather, reduce-scatter,
object gathers); what it cannot show is NCCL's speed or GPU memory savings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPTS = Path(__file__).parent / "ddp_scripts"
sys.path.insert(0, str(SCRIPTS))
import launch  # noqa: E402
import scale  # noqa: E402  (the worker script: its model and data)

from torchcallbacks import Trainer, load_checkpoint  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available in this torch build",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    parts = launch.run(SCRIPTS / "scale.py", out, 2, "--launch", "parts", timeout=240)
    assert parts.returncode == 0, parts.stdout[-3000:] + parts.stderr[-3000:]
    single = launch.run(SCRIPTS / "scale.py", out, 1, "--launch", "single", timeout=120)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    elastic = launch.run(
        SCRIPTS / "scale.py", out, 2, "--launch", "elastic", restarts=2, timeout=240
    )
    assert elastic.returncode == 0, elastic.stdout[-3000:] + elastic.stderr[-5000:]
    results = {
        f"{name}{rank}": json.loads((out / f"{name}_rank{rank}.json").read_text())
        for name in ("parts", "elastic")
        for rank in (0, 1)
    }
    results["single"] = json.loads((out / "single_rank0.json").read_text())
    results["elastic_stdout"] = elastic.stdout
    return out, parts.stdout, results


def test_the_default_verbosity_trains_evaluates_and_predicts_under_torchrun(runs):
    _, stdout, results = runs
    rank0, rank1 = results["parts0"]["default_verbose"], results["parts1"]["default_verbose"]
    assert rank0 == rank1
    epochs = len(rank0["history"]["loss"])
    assert epochs >= 1
    # The bar is drawn by rank 0 only: one final line per epoch, evaluation and prediction.
    assert stdout.count("6/6 [") == epochs
    assert stdout.count("8/8 [") == 1  # evaluate: 64 samples per rank, batch 8
    assert stdout.count("4/4 [") == 1  # predict: 25 of 49 samples on rank 0, batch 8
    assert rank0["predict_rows"] == 49


def test_a_nan_seen_by_rank_1_alone_stops_both_and_rank_0_prints_it_once(runs):
    _, stdout, results = runs
    for rank in ("parts0", "parts1"):
        assert results[rank]["nan"] == {"epochs": 1, "global_train_batch": 2}
    assert stdout.count("Batch 1: Invalid loss, terminating training") == 1


def test_a_stopping_callback_held_by_rank_0_alone_stops_every_rank(runs):
    _, _, results = runs
    for rank in ("parts0", "parts1"):
        assert results[rank]["asymmetric"] == {"epochs": 1, "global_train_batch": 6}


def test_fsdp2_fit_evaluate_and_predict_match_ddp(runs):
    _, _, results = runs
    for rank in ("parts0", "parts1"):
        ddp, fsdp = results[rank]["ddp"], results[rank]["fsdp"]
        assert fsdp["sharded"].startswith("FSDP")  # fully_shard's class, on the user's module
        assert fsdp["optimizer_on_module"]  # Adam rebuilt on the sharded parameters
        for key, values in ddp["history"].items():
            assert fsdp["history"][key] == pytest.approx(values, rel=1e-5), key
        # 49 validation samples: 25 + 24 (4 and 3 batches), padded with a masked forward.
        assert fsdp["evaluate"] == pytest.approx(ddp["evaluate"], rel=1e-5)
        assert fsdp["evaluate_of_1"] == pytest.approx(ddp["evaluate_of_1"], rel=1e-5)
        torch.testing.assert_close(
            torch.tensor(fsdp["predict"]), torch.tensor(ddp["predict"]), atol=1e-5, rtol=0
        )
    assert results["parts0"]["fsdp"] == results["parts1"]["fsdp"]
    before, after = results["parts0"]["fsdp"]["evaluate_after_load_weights"]
    assert after == pytest.approx(before, rel=1e-6)  # load_weights of a full weights file


def test_gradient_accumulation_keeps_the_ranks_in_step_at_a_partial_last_step(runs):
    out, _, results = runs
    rank0 = results["parts0"]["accumulated_ddp"]["local_weights"]
    assert rank0 == results["parts1"]["accumulated_ddp"]["local_weights"]
    ddp = torch.load(out / "shared/accumulated_ddp.pt", weights_only=True)
    fsdp = torch.load(out / "shared/accumulated_fsdp.pt", weights_only=True)
    for key, value in ddp.items():
        torch.testing.assert_close(fsdp[key], value, atol=1e-5, rtol=1e-5)


def test_a_module_the_user_sharded_is_used_as_it_is_with_strategy_none(runs):
    _, _, results = runs
    user = results["parts0"]["user_sharded"]
    assert user["same_module"]
    for key, values in results["parts0"]["ddp"]["history"].items():
        if not key.startswith("val_"):
            assert user["history"][key] == pytest.approx(values, rel=1e-5), key


def test_fsdp2_checkpoints_load_into_a_plain_module_in_one_process(runs):
    out, _, results = runs
    folder = out / "shared" / "fsdp"
    x_val, _ = scale.data(49, seed=5)
    expected = torch.tensor(results["parts0"]["fsdp"]["predict"])
    ddp_weights = torch.load(out / "shared/ddp/weights.pt", weights_only=True)
    for name in ("weights.pt", "save_weights.pt"):  # full weights, gathered by rank 0
        weights = torch.load(folder / name, weights_only=True)
        fresh = scale.model()
        fresh.load_state_dict(weights)
        torch.testing.assert_close(fresh(x_val).detach(), expected, atol=1e-5, rtol=0)
        for key, value in ddp_weights.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=1e-5)

    # The full checkpoint is a directory of shards written by both ranks (in the background).
    full = folder / "full.pt"
    assert sorted(p.name for p in full.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "state.pt",
    ]
    fresh = scale.model()
    optimizer = torch.optim.Adam(fresh.parameters(), lr=0.01)
    state = load_checkpoint(full, fresh, optimizer)
    assert state["epoch"] == 1 and sorted(state["logs"]) == sorted(
        results["parts0"]["fsdp"]["history"]
    )
    torch.testing.assert_close(fresh(x_val).detach(), expected, atol=1e-5, rtol=0)
    assert int(optimizer.state_dict()["state"][0]["step"]) == 16  # 2 epochs of 8 steps
    trainer = Trainer(scale.model(), device="cpu", loss="cross_entropy")
    trainer.load_weights(str(full))
    torch.testing.assert_close(trainer.predict(x_val, verbose=0), expected, atol=1e-5, rtol=0)


def test_a_backup_folder_that_only_rank_0_sees_fails_on_every_rank_with_one_error(runs):
    _, _, results = runs
    errors = [results[rank]["local_backup"]["error"] for rank in ("parts0", "parts1")]
    assert errors[0] == errors[1]
    assert "'local_backup'" in errors[0]
    assert "rank 0: a backup at epoch 0, batch 2" in errors[0]
    assert "rank 1: no backup" in errors[0]
    assert "shared filesystem" in errors[0]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_an_elastic_restart_after_a_rank_dies_equals_an_uninterrupted_run(runs, strategy):
    """Per-rank dropout, shuffled data; rank 1 dies mid-epoch (os._exit) and torchrun
    restarts both ranks, which resume from the last backup."""
    out, _, results = runs
    assert results["elastic0"]["restarts"] == 2  # one death under DDP, one under FSDP2
    reference = results["parts0"][f"reference_{strategy}"]["history"]
    for rank in ("elastic0", "elastic1"):
        assert results[rank][f"elastic_{strategy}"]["history"] == reference
    expected = torch.load(out / f"shared/reference_{strategy}.pt", weights_only=True)
    resumed = torch.load(out / f"shared/elastic_{strategy}.pt", weights_only=True)
    assert list(resumed) == list(expected)
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_2_rank_backup_resumes_in_one_process(runs, strategy):
    """Saved after 2 batches of 8 per rank in epoch 1 (32 of its 64 samples); one process
    with batches of 8 continues at its batch 4 and sees the other 32 samples."""
    _, _, results = runs
    resumed = results["single"][strategy]
    assert resumed["samples"] == {"1": 32}
    assert len(resumed["history"]["loss"]) == 2
    assert any("written by 2" in message for message in resumed["warnings"])


def test_strategy_and_timeout_are_checked_when_the_trainer_is_built():
    with pytest.raises(ValueError, match="Unknown strategy 'deepspeed'"):
        Trainer(scale.model(), device="cpu", strategy="deepspeed")
    with pytest.raises(ValueError, match="distributed_timeout must be positive"):
        Trainer(scale.model(), device="cpu", distributed_timeout=0)
    with pytest.raises(TypeError, match="number of seconds or a datetime.timedelta"):
        Trainer(scale.model(), device="cpu", distributed_timeout="10")
    # In one process every strategy trains the module as it is.
    trainer = Trainer(scale.model(), "sgd", "cross_entropy", device="cpu", strategy="fsdp")
    x, y = scale.data(16, seed=0)
    assert len(trainer.fit(x, y, epochs=1, verbose=0).history["loss"]) == 1


def test_the_fsdp_example_runs_under_torchrun_with_the_default_verbosity(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "fsdp.py"
    out = tmp_path / "run"
    done = launch.run(
        SCRIPTS / "exit_threads.py", out, 2,
        "--script", str(example), "--small", "--epochs", "2", "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 process(es) on cpu, strategy fsdp" in done.stdout
    assert done.stdout.count("Epoch 2/2") == 1  # the progress bar, on rank 0 only
    assert "last.pt (epoch 2) loads into a plain model" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "log.csv"]
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header + 2 epochs
    # The process group was freed before interpreter shutdown, which it could abort.
    assert [(tmp_path / f"run.exit-threads-{rank}").read_text() for rank in (0, 1)] == ["0", "0"]
    weights = torch.load(out / "best.pt", weights_only=True)
    assert weights["head.weight"].shape == (4, 32)  # gathered, not a shard


def test_a_1_process_backup_resumes_on_2_ranks(runs):
    """Saved after batch 6 of 8 in epoch 0 (48 of 64 samples); each of 2 ranks (4 batches
    of 8 per epoch) continues at its batch 3: 8 samples each, the 16 not seen yet."""
    _, _, results = runs
    for rank in ("elastic0", "elastic1"):
        resumed = results[rank]["resumed_single"]
        assert resumed["samples"] == {"0": 8, "1": 32}
        assert len(resumed["history"]["loss"]) == 2
    assert (
        results["elastic0"]["resumed_single"]["history"]
        == (results["elastic1"]["resumed_single"]["history"])
    )
    warned = results["elastic0"]["resumed_single"]["warnings"]
    assert any("written by 1" in message for message in warned)


def test_only_rank_0_says_where_a_run_resumes(runs):
    """The elastic launch resumes three backups on 2 ranks (one after each restart, and one
    written by a single process): one line each, from rank 0."""
    _, _, results = runs
    lines = [
        line for line in results["elastic_stdout"].splitlines() if "Resuming from epoch" in line
    ]
    assert len(lines) == 3 and len(set(lines)) == 3, lines
    assert all("(backup '../shared/" in line for line in lines), lines


def test_a_sigterm_that_reaches_one_rank_makes_every_rank_back_up_at_one_boundary(tmp_path):
    """Rank 1 alone gets SIGTERM after global batch 3; the ranks agree on it at that batch's
    end and both back up after batch 4 (a collective), then terminate."""
    done = launch.run(SCRIPTS / "scale.py", tmp_path, 2, "--launch", "sigterm", timeout=120)
    assert done.returncode != 0  # terminated by the signal, as without the callback
    assert "collective mismatch" not in done.stderr
    state = torch.load(tmp_path / "shared/sigterm/latest.pt", weights_only=True)
    assert state["training"]["global_train_batch"] == 4
    assert len(state["ranks"]) == 2
    # One line, from rank 0 only: what the backup holds and how to resume.
    told = "terminated (SIGTERM). The backup '../shared/sigterm/latest.pt' holds epoch 1, batch 4"
    assert done.stdout.count(told) == 1, done.stdout
