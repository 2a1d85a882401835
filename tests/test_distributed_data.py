"""Data and weights files under torchrun (2 CPU processes, gloo): ranks seeded differently
shuffle in rank 0's order and draw nothing from the global generator; `predict` over batches
of other lengths on each rank returns one row per example, padded to the longest with -100;
rank 0 alone writes ``.safetensors`` weights and ``save_pretrained`` folders. The worker is
``tests/ddp_scripts/data_ddp.py``."""

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

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available in this torch build",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("data_ddp")
    done = launch.run(SCRIPTS / "data_ddp.py", out, 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, [json.loads((out / f"result_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def results(run) -> list[dict]:
    return run[1]


def test_ranks_seeded_differently_shuffle_in_one_order_without_drawing(results):
    for name in ("tensors", "dataset"):
        rank0, rank1 = (r["shuffling"][name] for r in results)
        assert rank0["generator_untouched"] and rank1["generator_untouched"], name
        epochs = []
        for epoch in range(2):  # 20 samples, 10 per rank and epoch
            mine, theirs = (r["seen"][epoch * 10 : (epoch + 1) * 10] for r in (rank0, rank1))
            # Rank r takes every 2nd sample of the epoch's order from position r.
            order = [sample for pair in zip(mine, theirs) for sample in pair]
            assert sorted(order) == list(range(20)), name  # one permutation for both ranks
            epochs.append(order)
        assert epochs[0] != epochs[1], name


def test_predict_pads_every_ranks_ragged_batches_to_the_longest(results):
    rank0, rank1 = (r["ragged"] for r in results)
    assert rank0["predicted"] == rank1["predicted"]
    predicted, expected = rank0["predicted"], rank0["expected"]
    assert len(predicted) == 7  # one row per sample, the repeated sample once
    longest = max(len(row) for row in expected)  # rank 1's longest batch
    for row, own in zip(predicted, expected):
        assert len(row) == longest
        assert row[: len(own)] == own  # the rows the hand loop gave
        assert all(value == -100 for scores in row[len(own) :] for value in scores)
    assert min(len(row) for row in expected) < longest  # rank 0's batches were shorter


def test_rank_0_alone_writes_safetensors_weights_and_save_pretrained_folders(run):
    from safetensors.torch import load_file
    from transformers import BertForSequenceClassification

    out, results = run
    assert sorted(p.name for p in (out / "rank1").iterdir()) == []
    rank0 = out / "rank0"
    assert sorted(p.name for p in (rank0 / "ckpt").iterdir()) == [
        "01.safetensors",
        "02.safetensors",
    ]
    weights = results[0]["files"]["weights"]
    assert results[1]["files"]["weights"] == weights  # DDP keeps the replicas equal
    for path in (rank0 / "weights.safetensors", rank0 / "ckpt" / "02.safetensors"):
        stored = load_file(path)
        assert [stored["weight"].item(), stored["bias"].item()] == weights

    bert = BertForSequenceClassification.from_pretrained(rank0 / "bert")
    tokens = torch.randint(1, 32, (16, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = bert(input_ids=tokens).logits
    assert logits.tolist() == results[0]["files"]["logits"]
