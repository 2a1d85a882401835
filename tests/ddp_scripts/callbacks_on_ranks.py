"""Worker script of tests/test_distributed_callbacks.py.

    torchrun --nproc_per_node=2 tests/ddp_scripts/callbacks_on_ranks.py --out DIR --case CASE

``rank0_checkpoint``: a ModelCheckpoint given to rank 0 only (the Horovod idiom), which would
hang the first collective save; every rank must raise the same clear error instead.
``fsdp_over_file``: a sharded full checkpoint saved twice under a path that already holds a
single-file checkpoint (written before by one process).
``misuse``: a plain DataLoader for training (each rank would see all of it: a warning), and
``resume_from`` a single-file checkpoint into an FSDP2-sharded module (a clear error).
Each rank writes ``DIR/result_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import warnings

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import ModelCheckpoint, Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--case", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    rank = int(os.environ.get("RANK", "0"))
    result: dict = {}
    path = os.path.join(args.out, "last.pt")
    if args.case == "rank0_checkpoint":
        trainer = Trainer(module, "sgd", "mse", device="cpu")
        callbacks = [ModelCheckpoint(path, monitor="loss")] if rank == 0 else []
        try:
            trainer.fit(x, y, epochs=2, batch_size=8, callbacks=callbacks)
        except ValueError as error:
            result["error"] = str(error)
    elif args.case == "misuse":
        trainer = Trainer(module, "sgd", "mse", device="cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, verbose=0)
        result["warnings"] = [str(w.message) for w in caught]
        sharded = Trainer(copy.deepcopy(module), "sgd", "mse", device="cpu", strategy="fsdp")
        before = [p.full_tensor().clone() for p in sharded.model.parameters()]
        try:
            sharded.fit(x, y, epochs=2, verbose=0, resume_from=os.path.join(args.out, "one.pt"))
        except ValueError as error:
            result["error"] = str(error)
        after = [p.full_tensor() for p in sharded.model.parameters()]
        result["untouched"] = all(torch.equal(a, b) for a, b in zip(before, after))
        del sharded
    else:
        trainer = Trainer(module, "sgd", "mse", device="cpu", strategy="fsdp")
        trainer.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(path)])
        result["saved_as_directory"] = os.path.isdir(path)
        result["leftovers"] = sorted(n for n in os.listdir(args.out) if n.startswith("last.pt."))
    with open(os.path.join(args.out, f"result_rank{rank}.json"), "w") as file:
        json.dump(result, file)
    if dist.is_initialized():
        del trainer
        gc.collect()  # free the wrappers before the process group
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
