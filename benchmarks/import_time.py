"""What ``import torchcallbacks`` costs on top of ``import torch``.

Each round starts two fresh interpreters, one running ``import torch`` and one
``import torch, torchcallbacks`` (the order alternates every round), pinned to two CPU cores
when the machine has more; the medians over the rounds are compared. The second interpreter
also times ``import torchcallbacks`` alone, after torch, in wall-clock and CPU time: that
figure moves least on a busy machine. Bytecode is cached first, as an installed package has
it (a ``PYTHONDONTWRITEBYTECODE`` in the environment is lifted for the children).

    python benchmarks/import_time.py              # 15 rounds
    python benchmarks/import_time.py --rounds 5

The target (issue 21) is at most 0.2 s over ``import torch`` on two cores; the benchmark
also lists the torch modules ``import torchcallbacks`` adds (none are expected: not
``torch.distributed.fsdp`` nor ``torch.distributed.checkpoint``, which load only when
sharding or a sharded checkpoint is used).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_ONLY = "import torch"
# After torch: the time of `import torchcallbacks` alone, and the modules it adds.
WITH_PACKAGE = """
import json, sys, time
import torch
before = set(sys.modules)
wall, cpu = time.perf_counter(), time.process_time()
import torchcallbacks
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
added = sorted(m for m in set(sys.modules) - before if not m.startswith("torchcallbacks"))
print(json.dumps({"wall": wall, "cpu": cpu, "added": added}))
"""


def two_cores() -> None:
    """Run this process and its children on two cores, as the target machine has."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 2:
            os.sched_setaffinity(0, cores[:2])


def run(code: str, env: dict[str, str]) -> tuple[float, float, str]:
    """The wall-clock and CPU time of a fresh interpreter running ``code`` (start to exit),
    and what it printed."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime
    return wall, cpu, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    two_cores()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    run(WITH_PACKAGE, env)  # compile and cache the bytecode, warm the file cache
    torch_only, with_package, alone_wall, alone_cpu = [], [], [], []
    torch_only_cpu, with_package_cpu = [], []
    added: list[str] = []
    for round_ in range(args.rounds):
        order = [TORCH_ONLY, WITH_PACKAGE] if round_ % 2 == 0 else [WITH_PACKAGE, TORCH_ONLY]
        for code in order:
            seconds, cpu, printed = run(code, env)
            if code == TORCH_ONLY:
                torch_only.append(seconds)
                torch_only_cpu.append(cpu)
                continue
            with_package.append(seconds)
            with_package_cpu.append(cpu)
            inside = json.loads(printed)
            alone_wall.append(inside["wall"])
            alone_cpu.append(inside["cpu"])
            added = inside["added"]
    print(f"cores: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")
    print(f"rounds: {args.rounds} (medians; wall clock, and CPU time in brackets)")
    for label, walls, cpus in (
        ("import torch", torch_only, torch_only_cpu),
        ("import torch, torchcallbacks", with_package, with_package_cpu),
    ):
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"python -c '{label}':".ljust(45) + f"{wall:.3f} s ({cpu:.3f} s)")
    base, full = statistics.median(torch_only), statistics.median(with_package)
    base_cpu, full_cpu = statistics.median(torch_only_cpu), statistics.median(with_package_cpu)
    print(
        f"difference: {full - base:+.3f} s (ratio {full / base:.3f}); "
        f"CPU {full_cpu - base_cpu:+.3f} s (ratio {full_cpu / base_cpu:.3f})"
    )
    print(
        f"import torchcallbacks after torch: {statistics.median(alone_wall):.3f} s wall, "
        f"{statistics.median(alone_cpu):.3f} s CPU (target: at most 0.2 s)"
    )
    print(f"modules it adds besides its own: {added or 'none'}")


if __name__ == "__main__":
    main()
