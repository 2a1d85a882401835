"""Worker script of tests/test_sample_weights.py: sample and class weights under torchrun.

    torchrun --nproc_per_node=2 tests/ddp_scripts/weighted_ddp.py --out DIR
    python tests/ddp_scripts/weighted_ddp.py --out DIR          # the single-process reference

A global batch of 8 split between the ranks, ``shuffle=False``: the epoch logs (weighted
loss, unweighted and weighted accuracy, weighted validation) and the results of
``train_on_batch``/``test_on_batch`` must equal one process's.
Results go to ``DIR/result_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from torchcallbacks import Trainer

GLOBAL_BATCH = 8


def data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 4, generator=generator)
    y = (x[:, 0] - x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
    weights = torch.rand(samples, generator=generator) * 2
    return x, y, weights


def trainer() -> Trainer:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return Trainer(
        module,
        torch.optim.SGD(module.parameters(), lr=0.5),
        loss="cross_entropy",
        metrics=["accuracy"],
        weighted_metrics=["accuracy"],
        device="cpu",
    )


def on_batch(rank: int, world_size: int, train: tuple, validation: tuple) -> dict:
    """train_on_batch on three global batches of 8 (each rank passes its share), then
    test_on_batch: the results, by key, over the calls."""
    results: dict[str, list[float]] = {}
    model = trainer()
    for start in range(0, 24, GLOBAL_BATCH):
        x, y, w = (t[start : start + GLOBAL_BATCH][rank::world_size] for t in train)
        for key, value in model.train_on_batch(x, y, sample_weight=w, return_dict=True).items():
            results.setdefault(key, []).append(value)
    x, y, w = (t[rank::world_size] for t in validation)
    for key, value in model.test_on_batch(x, y, sample_weight=w, return_dict=True).items():
        results[f"test_{key}"] = [value]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    x, y, weights = data(32, seed=1)
    x_val, y_val, w_val = data(16, seed=2)
    batch_size = GLOBAL_BATCH // world_size
    result = {
        "arrays": trainer()
        .fit(
            x, y, sample_weight=weights, batch_size=batch_size, epochs=3, shuffle=False,
            validation_data=(x_val, y_val, w_val), verbose=0,
        )
        .history,
        "dataset": trainer()
        .fit(
            TensorDataset(x, y, weights), batch_size=batch_size, epochs=3, shuffle=False,
            verbose=0,
        )
        .history,
        "class_weight": trainer()
        .fit(
            x, y, class_weight={0: 0.5, 2: 3.0}, batch_size=batch_size, epochs=3,
            shuffle=False, verbose=0,
        )
        .history,
        "on_batch": on_batch(rank, world_size, (x, y, weights), (x_val, y_val, w_val)),
    }  # fmt: skip
    if world_size > 1:
        gc.collect()  # free the DDP wrappers before the process group
        dist.destroy_process_group()
    with open(os.path.join(args.out, f"result_rank{rank}.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
