"""Start a worker script alone or under torchrun (gloo on CPU), for the distributed tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(
    script: Path,
    out: Path,
    processes: int,
    *args: str,
    restarts: int = 0,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``script --out OUT ARGS`` in one process or under torchrun; a collective stuck
    for more than 60 s errors out. With ``restarts``, torchrun restarts the group after a
    failure (c10d rendezvous; its store is not shared with the workers, whose stale keys
    would break gloo's reconnection after a restart)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TORCHCALLBACKS_DIST_TIMEOUT="60", OMP_NUM_THREADS="1")
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}"]
        if restarts:
            env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
            launcher += [
                f"--max-restarts={restarts}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{free_port()}",
            ]
        else:
            launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    command = [*launcher, str(script), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
