"""What `Trainer` costs on top of a hand-written PyTorch loop.

The same model is trained by a plain loop and by `Trainer` in one process, interleaved
(the order alternates every round), and the medians over the rounds are compared. The
Python function calls per training step are counted with cProfile over one epoch: unlike
times, that count does not move on a busy machine.

    python benchmarks/overhead.py            # the figures in the README (about 2 minutes)
    python benchmarks/overhead.py --quick    # fewer rounds and a smaller CNN run
    python benchmarks/overhead.py --profile  # also list where Trainer's extra calls go
    python benchmarks/overhead.py --amp-device cpu   # AMP/compile variants without CUDA

Variants (targets from issues 2 and 6):
- tiny MLP 32→64→10, 20,000 samples, batch 32, accuracy, validation each epoch, 1 thread:
  DataLoader input with verbose=0 (≤ 1.05× and ≤ raw + 100 calls/step), verbose=1 with
  stdout going to a file (≤ 1.10×), tensor input ``fit(x, y)`` against the raw DataLoader
  loop (< 1.0×);
- a small CNN on 1×16×16 images, DataLoader input, verbose=0;
- CUDA only: bf16 and fp16 autocast (with a GradScaler), and ``torch.compile``;
- DDP scaling: one epoch with 2 gloo processes (1 thread each) against 1 process, for
  ``Trainer`` and for a hand-written DDP loop.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import platform
import pstats
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Trainer

TRAIN_SAMPLES = 20_000
VAL_SAMPLES = 2_000
BATCH = 32


# -- models and data ---------------------------------------------------------------------------
def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )


def make_data(kind: str, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten learnable classes, generated offline: for the MLP the labels of a fixed random
    linear teacher, for the CNN noisy images of ten fixed random patterns."""
    generator = torch.Generator().manual_seed(seed)
    fixed = torch.Generator().manual_seed(1234)
    if kind == "mlp":
        x = torch.randn(samples, 32, generator=generator)
        return x, (x @ torch.randn(32, 10, generator=fixed)).argmax(1)
    patterns = torch.randn(10, 1, 16, 16, generator=fixed)
    y = torch.randint(0, 10, (samples,), generator=generator)
    return 0.4 * patterns[y] + torch.randn(samples, 1, 16, 16, generator=generator), y


class Case:
    """One model + data set, trained twice from the same initial weights: raw and Trainer."""

    def __init__(self, kind: str, train_samples: int, device: torch.device) -> None:
        self.kind, self.device = kind, device
        self.x, self.y = make_data(kind, train_samples, seed=0)
        self.x_val, self.y_val = make_data(kind, VAL_SAMPLES, seed=1)
        pin = device.type == "cuda"
        self.loader = DataLoader(
            TensorDataset(self.x, self.y), batch_size=BATCH, shuffle=True, pin_memory=pin
        )
        self.val_loader = DataLoader(
            TensorDataset(self.x_val, self.y_val), batch_size=BATCH, pin_memory=pin
        )
        self.steps = len(self.loader)

    def models(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(0)
        model = mlp() if self.kind == "mlp" else cnn()
        twin = mlp() if self.kind == "mlp" else cnn()
        twin.load_state_dict(model.state_dict())
        return model.to(self.device), twin.to(self.device)


# -- the hand-written loop ---------------------------------------------------------------------
class RawLoop:
    """The loop a careful user writes: device-side sums, one ``.item()`` per epoch."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.module = torch.compile(model) if compile else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        self.device, self.dtype = device, dtype
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        self.logs: dict[str, float] = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.module(x)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.module(x)

    def train_epoch(self, loader: DataLoader) -> dict[str, float]:
        model, optimizer, device, scaler = self.module, self.optimizer, self.device, self.scaler
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            out = self._forward(x)
            loss = F.cross_entropy(out.float(), y)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
        return {"loss": (loss_sum / seen).item(), "accuracy": (correct / seen).item()}

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        model, device = self.module, self.device
        model.eval()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = self._forward(x)
                loss_sum += F.cross_entropy(out.float(), y) * len(y)
                correct += (out.argmax(1) == y).sum()
                seen += len(y)
        model.train()
        return {"val_loss": (loss_sum / seen).item(), "val_accuracy": (correct / seen).item()}

    def fit(self, loader: DataLoader, val_loader: DataLoader) -> dict[str, float]:
        self.logs = self.train_epoch(loader)
        self.logs.update(self.evaluate(val_loader))
        return self.logs


def make_trainer(model: torch.nn.Module, device: torch.device, **options: Any) -> Trainer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return Trainer(
        model, optimizer, loss="cross_entropy", metrics=["accuracy"], device=device, **options
    )


# -- measuring ---------------------------------------------------------------------------------
class Row:
    def __init__(self, name: str, raw: list[float], trainer: list[float], target: str) -> None:
        self.name, self.target = name, target
        self.raw_ms = statistics.median(raw) * 1e3
        self.trainer_ms = statistics.median(trainer) * 1e3
        self.ratio = statistics.median(t / r for t, r in zip(trainer, raw))
        self.spread = (
            min(t / r for t, r in zip(trainer, raw)),
            max(t / r for t, r in zip(trainer, raw)),
        )

    def met(self) -> str:
        limit = float(self.target.lstrip("≤<"))
        ok = self.ratio < limit if self.target.startswith("<") else self.ratio <= limit
        return "yes" if ok else "NO"


def interleave(
    name: str,
    raw: Callable[[], Any],
    trainer: Callable[[], Any],
    rounds: int,
    target: str = "",
) -> Row:
    """Time ``raw`` and ``trainer`` alternately (after one warm-up each); medians per round."""
    raw()
    trainer()
    raw_times: list[float] = []
    trainer_times: list[float] = []
    for index in range(rounds):
        order = [(raw, raw_times), (trainer, trainer_times)]
        for fn, times in order if index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    row = Row(name, raw_times, trainer_times, target)
    print(
        f"  {name:<44} raw {row.raw_ms:8.1f} ms  Trainer {row.trainer_ms:8.1f} ms  "
        f"ratio {row.ratio:5.3f} (range {row.spread[0]:.3f}-{row.spread[1]:.3f})",
        flush=True,
    )
    return row


def count_calls(fn: Callable[[], Any]) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    return pstats.Stats(profiler)


def print_extra_calls(stats: pstats.Stats, steps: int) -> None:
    """Where Trainer's calls and own time go: torchcallbacks functions, per training step."""
    print("    Trainer's functions called every step, by own time per step (µs, with cProfile):")
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():
        if "torchcallbacks" in filename and calls >= steps:
            short = filename[filename.rindex("torchcallbacks") :]
            rows.append(
                (
                    calls / steps,
                    own / steps * 1e6,
                    cumulative / steps * 1e6,
                    f"{short}:{line} {function}",
                )
            )
    for calls, own, cumulative, where in sorted(rows, key=lambda row: -row[1])[:20]:
        print(f"    {calls:7.2f} calls {own:7.1f} µs own {cumulative:8.1f} µs cum  {where}")


# -- the benchmark -----------------------------------------------------------------------------
def cpu_rows(rounds: int, cnn_samples: int, profile: bool) -> tuple[list[Row], float]:
    """The CPU timings, and Trainer's extra calls per step (DataLoader input, verbose=0)."""
    device = torch.device("cpu")
    rows: list[Row] = []
    case = Case("mlp", TRAIN_SAMPLES, device)
    print(
        f"Tiny MLP 32→64→10, {TRAIN_SAMPLES} samples, batch {BATCH}, accuracy, validation on "
        f"{VAL_SAMPLES} samples each epoch ({case.steps} steps); one epoch per round, "
        f"{rounds} rounds, medians:"
    )
    raw_model, trainer_model = case.models()
    raw = RawLoop(raw_model, device)
    trainer = make_trainer(trainer_model, device)
    same = same_work(case, raw, trainer)
    print(f"  the raw loop and Trainer give identical logs on one unshuffled epoch: {same}")

    def raw_fit() -> None:
        raw.fit(case.loader, case.val_loader)

    def fit_loader(verbose: int = 0) -> None:
        trainer.fit(case.loader, validation_data=case.val_loader, verbose=verbose)

    def fit_tensors() -> None:
        trainer.fit(
            case.x, case.y, batch_size=BATCH, validation_data=(case.x_val, case.y_val), verbose=0
        )

    with tempfile.TemporaryDirectory() as folder:
        log_path = os.path.join(folder, "progress.log")

        def fit_verbose_to_file() -> None:
            _to_file(log_path, lambda: fit_loader(verbose=1))

        rows.append(interleave("DataLoader, verbose=0", raw_fit, fit_loader, rounds, "≤1.05"))
        rows.append(
            interleave(
                "DataLoader, verbose=1 to a file", raw_fit, fit_verbose_to_file, rounds, "≤1.10"
            )
        )
        rows.append(
            interleave(
                "fit(x, y) tensors vs raw DataLoader loop", raw_fit, fit_tensors, rounds, "<1.00"
            )
        )

        print(
            f"Python function calls per training step (cProfile, one epoch of {case.steps} "
            "steps, no validation):"
        )
        raw_calls = count_calls(lambda: raw.train_epoch(case.loader)).total_calls / case.steps
        variants = {
            "DataLoader, verbose=0": lambda: trainer.fit(case.loader, verbose=0),
            "DataLoader, verbose=1 to a file": lambda: _to_file(
                log_path, lambda: trainer.fit(case.loader, verbose=1)
            ),
            "fit(x, y) tensors": lambda: trainer.fit(case.x, case.y, batch_size=BATCH, verbose=0),
        }
        print(f"  raw loop (DataLoader)                        {raw_calls:7.1f}")
        for name, fn in variants.items():
            stats = count_calls(fn)
            calls = stats.total_calls / case.steps
            target = "  (target ≤ raw + 100)" if name == "DataLoader, verbose=0" else ""
            print(f"  Trainer, {name:<35} {calls:7.1f}  ({calls - raw_calls:+.1f}){target}")
            if name == "DataLoader, verbose=0":
                extra_calls = calls - raw_calls
            if profile:
                print_extra_calls(stats, case.steps)

    cnn_case = Case("cnn", cnn_samples, device)
    print(
        f"Small CNN (2 conv + linear) on 1×16×16, {cnn_samples} samples, batch {BATCH}, "
        f"validation each epoch ({cnn_case.steps} steps):"
    )
    raw_model, trainer_model = cnn_case.models()
    cnn_raw = RawLoop(raw_model, device)
    cnn_trainer = make_trainer(trainer_model, device)
    rows.append(
        interleave(
            "CNN, DataLoader, verbose=0",
            lambda: cnn_raw.fit(cnn_case.loader, cnn_case.val_loader),
            lambda: cnn_trainer.fit(
                cnn_case.loader, validation_data=cnn_case.val_loader, verbose=0
            ),
            rounds,
            "≤1.05",
        )
    )
    return rows, extra_calls


def same_work(case: Case, raw: RawLoop, trainer: Trainer) -> bool:
    """Whether both loops compute the same thing: one epoch in the same batch order."""
    ordered = DataLoader(TensorDataset(case.x, case.y), batch_size=BATCH)
    raw_logs = raw.fit(ordered, case.val_loader)
    history = trainer.fit(ordered, validation_data=case.val_loader, verbose=0).history
    return raw_logs == {key: values[-1] for key, values in history.items()}


def _to_file(path: str, fn: Callable[[], Any]) -> Any:
    with open(path, "a") as log, contextlib.redirect_stdout(log):
        return fn()


def amp_compile_rows(rounds: int, device_name: str | None) -> None:
    """bf16 / fp16 autocast and torch.compile, raw against Trainer (CUDA unless asked)."""
    print("AMP and torch.compile (CNN, DataLoader input, verbose=0):")
    if device_name is None and not torch.cuda.is_available():
        print("  skipped: no CUDA")
        return
    device = torch.device(device_name or "cuda")
    case = Case("cnn", TRAIN_SAMPLES, device)
    if device.type == "cuda":
        print(f"  on {torch.cuda.get_device_name(device)}")
    variants = [
        ("32", None, False),
        ("bf16-mixed", torch.bfloat16, False),
        ("16-mixed", torch.float16, False),
        ("32 + torch.compile", None, True),
    ]
    for precision, dtype, compile in variants:
        raw_model, trainer_model = case.models()
        raw = RawLoop(raw_model, device, dtype, compile)
        trainer = make_trainer(
            trainer_model, device, precision=precision.split(" ")[0], compile=compile
        )

        def run_raw(raw: RawLoop = raw) -> None:
            raw.fit(case.loader, case.val_loader)
            _synchronize(device)

        def run_trainer(trainer: Trainer = trainer) -> None:
            trainer.fit(case.loader, validation_data=case.val_loader, verbose=0)
            _synchronize(device)

        interleave(f"precision {precision}", run_raw, run_trainer, rounds)
        print(
            f"    val_accuracy after {rounds + 1} epochs: raw {raw.logs['val_accuracy']:.3f}, "
            f"Trainer {trainer.history.history['val_accuracy'][-1]:.3f}"
        )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- DDP scaling ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raw_tensor_epoch(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
) -> float:
    """A hand-written epoch over this process's shard (every world_size-th shuffled sample)."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    order = torch.randperm(len(x), generator=generator)[rank::world_size]
    loss_sum, correct = torch.zeros(()), torch.zeros(())
    for start in range(0, len(order), BATCH):
        index = order[start : start + BATCH]
        xb, yb = x.index_select(0, index), y.index_select(0, index)
        optimizer.zero_grad(set_to_none=True)
        out = module(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(yb)
        correct += (out.argmax(1) == yb).sum()
    sums = torch.stack([loss_sum, correct])
    if world_size > 1:
        dist.all_reduce(sums)
    return float(sums[0]) / len(x)


def _epoch_function(kind: str, impl: str, world_size: int) -> Callable[[], Any]:
    """One training epoch on this process's shard, by Trainer or by a hand-written DDP loop."""
    x, y = make_data(kind, TRAIN_SAMPLES, seed=0)
    torch.manual_seed(0)
    model = mlp() if kind == "mlp" else cnn()
    if impl == "trainer":  # Trainer sets up the process group and DDP from the environment
        trainer = make_trainer(model, torch.device("cpu"))
        return lambda: trainer.fit(x, y, batch_size=BATCH, verbose=0)
    module = model
    if world_size > 1:
        dist.init_process_group("gloo")
        module = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    return lambda: _raw_tensor_epoch(module, optimizer, x, y, generator)


def _ddp_worker(
    rank: int, world_size: int, port: int, kind: str, impl: str, epochs: int, queue: Any
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    epoch = _epoch_function(kind, impl, world_size)
    epoch()  # warm-up
    times = []
    for _ in range(epochs):
        if world_size > 1:
            dist.barrier()
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    if rank == 0:
        queue.put(statistics.median(times))
    if world_size > 1:
        # Free DDP before the process group: a DDP reducer alive at interpreter exit makes
        # gloo abort the process now and then (torch 2.13).
        del epoch
        gc.collect()
        dist.destroy_process_group()


def ddp_scaling(kinds: list[str], epochs: int) -> None:
    print(
        f"DDP scaling: one epoch on tensors, {TRAIN_SAMPLES} samples, batch {BATCH} per "
        f"process, gloo, 1 thread per process, median of {epochs} epochs "
        "(speed-up = 1-process time / 2-process time, ideal 2):"
    )
    context = torch.multiprocessing.get_context("spawn")
    for kind in kinds:
        for impl, label in (("trainer", "Trainer.fit(x, y)"), ("raw", "raw DDP loop")):
            seconds = {}
            for world_size in (1, 2):
                queue = context.SimpleQueue()
                torch.multiprocessing.spawn(
                    _ddp_worker,
                    args=(world_size, _free_port(), kind, impl, epochs, queue),
                    nprocs=world_size,
                )
                seconds[world_size] = queue.get()
            print(
                f"  {kind.upper():<4}{label:<18} 1 process {seconds[1] * 1e3:7.1f} ms, "
                f"2 processes {seconds[2] * 1e3:7.1f} ms: speed-up "
                f"{seconds[1] / seconds[2]:.2f}×",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller CNN run")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 9, quick 3)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="list Trainer's own functions by calls and time per step",
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP scaling figure")
    parser.add_argument(
        "--amp-device", help="run the AMP/compile variants on this device (default: CUDA if any)"
    )
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 9)
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread"
    )
    rows, extra_calls = cpu_rows(rounds, 4_000 if args.quick else 10_000, args.profile)
    amp_compile_rows(rounds, args.amp_device)
    if not args.no_ddp:
        ddp_scaling(["mlp"] if args.quick else ["mlp", "cnn"], 3 if args.quick else 5)
    print("\nSummary (time ratio Trainer / raw loop, median over rounds):")
    for row in rows:
        print(f"  {row.name:<44} {row.ratio:6.3f}  target {row.target:<6} met: {row.met()}")
    met = "yes" if extra_calls <= 100 else "NO"
    print(
        f"  {'extra Python calls/step, DataLoader, verbose=0':<44} {extra_calls:+6.1f}  "
        f"target ≤+100 met: {met}"
    )


if __name__ == "__main__":
    main()
