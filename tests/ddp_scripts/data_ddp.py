"""Worker script of tests/test_distributed_data.py, run under torchrun (2 ranks, gloo):

    torchrun --nproc_per_node=2 tests/ddp_scripts/data_ddp.py --out DIR

- shuffling: the ranks are seeded differently; in-memory data and a Dataset are shuffled in
  rank 0's order on every rank (their shards interleave into one permutation), and `fit`
  draws nothing from the global generator;
- ragged predictions: each rank's batches are padded to their own lengths, and `predict`
  pads every rank's rows to the longest with -100;
- weights files: ``.safetensors`` weights and a BERT's ``save_pretrained`` folder, written by
  rank 0 alone (each rank works in ``DIR/rank<r>/``).

Results go to ``DIR/result_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from torchcallbacks import ModelCheckpoint, Trainer

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' shared helpers
from conftest import OrderRecorder, bert_config  # noqa: E402

SAMPLES = 20
SEQUENCES = 7
CLASSES = 3


def shuffling_part() -> dict:
    ids = torch.arange(SAMPLES, dtype=torch.float32)[:, None]
    result = {}
    for name, data in (("tensors", (ids, ids)), ("dataset", (TensorDataset(ids, ids),))):
        torch.manual_seed(0)
        model = OrderRecorder()  # the same initial weights on both ranks
        trainer = Trainer(model, "sgd", "mse", device="cpu")
        torch.manual_seed(100 + dist.get_rank())  # each rank its own seed
        before = torch.get_rng_state()
        trainer.fit(*data, batch_size=5, epochs=2, shuffle=True, verbose=0)
        result[name] = {
            "seen": model.seen,
            "generator_untouched": bool(torch.equal(torch.get_rng_state(), before)),
        }
    return result


class TokenTagger(torch.nn.Module):
    """Per-token class scores; each token's scores depend on that token only."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(50, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens)


def sequences() -> list[torch.Tensor]:
    """Rank 0's samples (even indices) are short, rank 1's long: the ranks' batches differ
    in length."""
    return [torch.arange(1, (3 if i % 2 == 0 else 6) + i % 3 + 1) for i in range(SEQUENCES)]


def collate(batch: list[torch.Tensor]) -> torch.Tensor:
    return pad_sequence(batch, batch_first=True)  # padded per batch, to its own longest


def ragged_part() -> dict:
    torch.manual_seed(0)
    model = TokenTagger()
    data = sequences()
    sampler = DistributedSampler(data, shuffle=False)  # 7 samples: rank 1 repeats sample 0
    loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=collate)
    predicted = Trainer(model, device="cpu").predict(loader, verbose=0)
    with torch.no_grad():  # the hand loop over this rank's batches
        rows = [row for batch in loader for row in model(batch).tolist()]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, list(zip(sampler, rows)))
    expected: dict[int, list] = {}
    for index, row in (pair for part in everyone for pair in part):
        expected.setdefault(index, row)  # a sample's own row, not the repeat that pads
    return {
        "predicted": predicted.tolist(),
        "expected": [expected[i] for i in range(SEQUENCES)],
    }


def files_part(out: str) -> dict:
    folder = os.path.join(out, f"rank{dist.get_rank()}")
    os.makedirs(folder)
    os.chdir(folder)  # relative paths: what rank 1 writes shows in its own folder
    ids = torch.arange(SAMPLES, dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    linear = torch.nn.Linear(1, 1)
    trainer = Trainer(linear, "sgd", "mse", device="cpu")
    checkpoint = ModelCheckpoint("ckpt/{epoch:02d}.safetensors", save_weights_only=True)
    trainer.fit(ids, ids, batch_size=5, epochs=2, callbacks=[checkpoint], verbose=0)
    trainer.save_weights("weights.safetensors")

    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    bert = BertForSequenceClassification(bert_config())
    tokens = torch.randint(1, 32, (16, 6), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": row, "labels": int(row[0] < 16)} for row in tokens]
    trainer = Trainer(bert, "adam", device="cpu")
    pretrained = ModelCheckpoint("bert", save_weights_only=True, save_pretrained=True)
    trainer.fit(DataLoader(rows, batch_size=4), epochs=1, callbacks=[pretrained], verbose=0)
    bert.eval()
    with torch.no_grad():
        logits = bert(input_ids=tokens).logits
    return {"weights": [p.item() for p in linear.parameters()], "logits": logits.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    out = os.path.abspath(args.out)
    result = {"shuffling": shuffling_part(), "ragged": ragged_part(), "files": files_part(out)}
    gc.collect()  # free the DDP wrappers before the process group
    dist.destroy_process_group()
    with open(os.path.join(out, f"result_rank{rank}.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
