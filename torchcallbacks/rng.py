"""Random-number generators: seeding a run, and their state as plain containers (safe to save
with weights_only)."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def get_rng_state() -> dict[str, Any]:
    """The state of python's, NumPy's, torch's and CUDA's global generators."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy, torch (CPU and every CUDA device) with ``seed``.

    Returns a ``torch.Generator`` seeded with ``seed``: pass it to your ``DataLoader`` as
    ``generator=`` so the shuffling order and the worker seeds depend only on ``seed``
    (PyTorch seeds ``random``, NumPy and torch inside each worker from it)::

        generator = seed_everything(42)
        loader = DataLoader(dataset, batch_size=32, shuffle=True, generator=generator,
                            num_workers=2)

    ``deterministic=True`` also asks torch for deterministic kernels
    (``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN benchmark off), at
    some speed cost on GPUs.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32); got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses (DataLoader workers too)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
