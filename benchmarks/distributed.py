"""What sharding costs and what asynchronous checkpoints save, on 2 CPU processes (gloo).

    python benchmarks/distributed.py            # the figures in docs/distributed.md
    python benchmarks/distributed.py --quick    # fewer epochs and a smaller step model

Two figures, each measured in 2 processes started here (1 torch thread each):

- step time: one epoch of ``Trainer.fit`` on an MLP under ``strategy="fsdp"`` (FSDP2
  ``fully_shard`` per layer) against ``strategy="ddp"``, median over the epochs, printed as
  the ratio FSDP2 / DDP;
- checkpoint save time of a sharded model of 100 MB of weights (plus Adam's two states):
  ``trainer.save`` (synchronous ``torch.distributed.checkpoint.save``) against the time
  training is blocked by an asynchronous save (``async_save=True``), and the time the
  background write takes to finish.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist

from torchcallbacks import Trainer, distributed_checkpoint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mlp(width: int, depth: int, features: int = 256, classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(features, width), torch.nn.ReLU()]
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, classes))


def _step_times(strategy: str, width: int, epochs: int) -> float:
    """Median seconds per training step of one epoch under ``strategy``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 256, generator=generator)
    y = torch.randint(0, 10, (4096,), generator=generator)
    model = _mlp(width, depth=3)
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        loss="cross_entropy",
        device="cpu",
        strategy=strategy,
    )
    trainer.fit(x, y, batch_size=64, epochs=1, verbose=0)  # warm-up
    times = []
    for _ in range(epochs):
        dist.barrier()
        start = time.perf_counter()
        trainer.fit(x, y, batch_size=64, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    steps = 4096 // 2 // 64
    return statistics.median(times) / steps


def _save_times(folder: str, rounds: int) -> dict[str, float]:
    """Seconds: synchronous save; blocked by an asynchronous save; its background write."""
    model = _mlp(2048, depth=6)  # 25.2 M parameters: 100.7 MB of float32 weights
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        loss="cross_entropy",
        device="cpu",
        strategy="fsdp",
    )
    trainer.fit(torch.randn(128, 256), torch.randint(0, 10, (128,)), batch_size=64, verbose=0)
    figures: dict[str, list[float]] = {"sync": [], "async_blocked": [], "async_total": []}
    for index in range(rounds):
        path = os.path.join(folder, f"sync{index}")
        dist.barrier()
        start = time.perf_counter()
        trainer.save(path)
        figures["sync"].append(time.perf_counter() - start)
        trainer.async_save = True
        path = os.path.join(folder, f"async{index}")
        dist.barrier()
        start = time.perf_counter()
        distributed_checkpoint.save_full(trainer, path)
        figures["async_blocked"].append(time.perf_counter() - start)
        distributed_checkpoint.finish_saves()
        figures["async_total"].append(time.perf_counter() - start)
        trainer.async_save = False
    return {key: statistics.median(values) for key, values in figures.items()}


def _worker(rank: int, port: int, folder: str, quick: bool, queue: Any) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    width, epochs = (256, 2) if quick else (1024, 5)
    result = {
        "width": width,
        "ddp": _step_times("ddp", width, epochs),
        "fsdp": _step_times("fsdp", width, epochs),
        **_save_times(folder, 1 if quick else 3),
    }
    if rank == 0:
        queue.put(result)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, a smaller MLP")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        "2 processes (gloo), 1 torch thread each"
    )
    folder = tempfile.mkdtemp(prefix="torchcallbacks-bench-")
    try:
        context = torch.multiprocessing.get_context("spawn")
        queue = context.SimpleQueue()
        torch.multiprocessing.spawn(
            _worker, args=(_free_port(), folder, args.quick, queue), nprocs=2
        )
        result = queue.get()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    width = result["width"]
    print(
        f"Step time, MLP 256→{width}→{width}→{width}→10, batch 64 per process, Adam: "
        f"DDP {result['ddp'] * 1e3:.2f} ms, FSDP2 {result['fsdp'] * 1e3:.2f} ms: "
        f"FSDP2 / DDP = {result['fsdp'] / result['ddp']:.2f}×"
    )
    print(
        "Full checkpoint of a sharded 100.7 MB model (+ Adam states, 302 MB in all): "
        f"synchronous save {result['sync']:.2f} s; asynchronous save blocks training "
        f"{result['async_blocked']:.2f} s "
        f"({result['sync'] / result['async_blocked']:.1f}× less), its background write "
        f"ends after {result['async_total']:.2f} s"
    )


if __name__ == "__main__":
    main()
