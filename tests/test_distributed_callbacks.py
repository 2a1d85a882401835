"""Callbacks under torchrun as users arrange them: a checkpoint on rank 0 only, and a sharded
checkpoint saved where a single-file one was before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent / "ddp_scripts"))
import launch  # noqa: E402

from torchcallbacks import ModelCheckpoint, Trainer, load_checkpoint  # noqa: E402

SCRIPT = Path(__file__).parent / "ddp_scripts" / "callbacks_on_ranks.py"

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="gloo is not available"
)


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"result_rank{r}.json").read_text()) for r in (0, 1)]


def test_a_checkpoint_given_to_rank_0_only_fails_on_every_rank_before_training(tmp_path):
    done = launch.run(SCRIPT, tmp_path, 2, "--case", "rank0_checkpoint", timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for result in _results(tmp_path):
        assert "rank 0: ['ModelCheckpoint']; rank 1: none" in result["error"]
        assert "Pass them to fit on every process" in result["error"]
    assert not (tmp_path / "last.pt").exists()
    assert "Epoch 1/2" not in done.stdout  # no training started


def test_a_sharded_checkpoint_replaces_a_single_file_one(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    Trainer(module, "sgd", "mse", device="cpu").fit(
        torch.randn(32, 4), torch.randn(32, 1), epochs=1, verbose=0,
        callbacks=[ModelCheckpoint(str(tmp_path / "last.pt"))],
    )  # fmt: skip
    assert (tmp_path / "last.pt").is_file()
    done = launch.run(SCRIPT, tmp_path, 2, "--case", "fsdp_over_file", timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for result in _results(tmp_path):
        assert result == {"saved_as_directory": True, "leftovers": []}
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    state = load_checkpoint(str(tmp_path / "last.pt"), model=fresh)
    assert state["epoch"] == 1


def test_misuses_under_torchrun_are_named(tmp_path):
    """A training DataLoader that every rank would read whole warns; a single-file checkpoint
    cannot be resumed into an FSDP2-sharded module, and the module is left as it was."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    trainer = Trainer(module, "sgd", "mse", device="cpu")
    trainer.fit(torch.randn(32, 4), torch.randn(32, 1), epochs=1, verbose=0)
    trainer.save(str(tmp_path / "one.pt"))
    done = launch.run(SCRIPT, tmp_path, 2, "--case", "misuse", timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for result in _results(tmp_path):
        assert any("iterates this whole DataLoader" in w for w in result["warnings"])
        assert "single-file checkpoint" in result["error"] and "strategy='ddp'" in result["error"]
        assert result["untouched"]


def test_ranks_decide_alike_on_saves_resumes_and_running_metrics(tmp_path):
    """Each rank sees its own batch values; under FSDP2 a save is a collective, so a choice
    made apart would hang the group. Best-only saves every 2 batches, a best file deleted
    before a resume (forgotten on every rank, saved again at epoch 3) and a LightningModule's
    torchmetrics value read mid-epoch by rank 0 only all complete, alike on both ranks; an
    output folder that cannot be written stops both ranks with rank 0's clear error."""
    done = launch.run(SCRIPT, tmp_path, 2, "--case", "decisions", timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    first, second = _results(tmp_path)
    assert first == second
    assert first["resumed_best"] == "best-3.pt"
    assert (tmp_path / "best-3.pt").is_file()
    saved = torch.load(tmp_path / first["batch_best"], weights_only=True)
    assert saved["0.weight"].shape == (8, 4)  # whole weights, gathered from both shards
    assert len(first["lightning_history"]["train_acc"]) == 2
    checkpoint_error, backup_error = first["unwritable"]
    assert "NotADirectoryError: [Errno 20] ModelCheckpoint cannot write" in checkpoint_error
    assert "NotADirectoryError: [Errno 20] BackupAndRestore cannot write" in backup_error
