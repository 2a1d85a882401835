"""Every example runs end to end with tiny settings and writes the files it promises."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOT_HERE = {"_common.py", "ddp.py"}  # a helper module; the DDP example needs torchrun
TINY = ["--epochs", "1", "--small", "--device", "cpu"]


def _optional(module: str, *paths: str) -> list[str]:
    return list(paths) if importlib.util.find_spec(module) is not None else []


# Files (globs) each example must leave in --out, and extra flags.
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "quickstart.py": (
        [
            "best.pt",
            "log.csv",
            *_optional("tensorboard", "tensorboard/train/events.out.*"),
            *_optional("matplotlib", "curves.png"),
        ],
        [],
    ),
    "custom_callback.py": (["batch_losses.csv", *_optional("matplotlib", "loss_epoch_1.png")], []),
    "mnist_mlp.py": (
        [
            "best.h5" if importlib.util.find_spec("h5py") else "best.pt",
            "log.csv",
            *_optional("tensorboard", "tensorboard/validation/events.out.*"),
            *_optional("matplotlib", "curves.png"),
        ],
        [],
    ),
    "cifar_resnet.py": (["best.pt", "log.csv", *_optional("matplotlib", "curves.png")], []),
    "multi_io.py": (["best.pt", "log.csv", *_optional("matplotlib", "curves.png")], []),
    "lightning_port.py": (
        ["epoch01-val_acc*.pt", "log.csv", *_optional("matplotlib", "curves.png")],
        [],
    ),
    # 384 training samples in batches of 64: crash in epoch 2, backup every 4 batches.
    "resume.py": (["log.csv"], ["--epochs", "2", "--crash-at-batch", "9", "--save-freq", "4"]),
}


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in NOT_HERE)


def test_every_example_is_covered():
    assert set(EXPECTED) <= set(_examples())


@pytest.mark.parametrize("name", _examples())
def test_example_runs(name, tmp_path):
    files, flags = EXPECTED.get(name, ([], []))
    out = tmp_path / "out"
    command = [sys.executable, str(EXAMPLES / name), *TINY, "--out", str(out), *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for pattern in files:
        assert list(out.glob(pattern)), (
            f"{name} wrote no {pattern}; it wrote {sorted(out.rglob('*'))}"
        )
    if name == "resume.py":
        assert "Interrupted: simulated crash" in result.stdout
        rows = (out / "log.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1"]  # each epoch once
        assert not (out / "backup" / "latest.pt").exists()
