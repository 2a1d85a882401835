"""Checkpoint files: both formats round-trip, HDF5 layout, safe loading, atomic writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import pytest
import torch

from torchcallbacks import load_checkpoint
from torchcallbacks.checkpoints import files as checkpoint_io
from torchcallbacks.checkpoints.files import (
    UnsafeCheckpointError,
    atomic_write,
    load_file,
    save_checkpoint,
    save_weights,
)
from torchcallbacks.rng import get_rng_state

FORMATS = ["pt", "h5"]


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )


def trained(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    model = make_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(32, 6)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer, x


def predictions(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def full_state(model, optimizer, epoch=4) -> dict:
    """A dict shaped like `Trainer.checkpoint_state`."""
    return {
        "format": checkpoint_io.FORMAT,
        "version": "0.1.0",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": None,
        "epoch": epoch,
        "global_step": 12,
        "callbacks": {
            "0:EarlyStopping": {"wait": 1, "best": 0.25, "best_weights": model.state_dict()},
            "1:History": {"history": {"loss": [1.0, 0.5]}, "epoch": [0, 1]},
        },
        "rng": get_rng_state(),
        "training": {"epoch": epoch + 1, "batch": 0, "tracker": None, "pair": (1, 2.5)},
        "logs": {"loss": 0.5, "val_loss": float("nan")},
    }


def assert_same(a, b, where="state"):
    """Deep equality keeping container types (tuple vs list) and tensor dtypes/bits."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        bits = [t.reshape(-1).view(torch.uint8) for t in (a, b)]
        assert torch.equal(*bits), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


@pytest.mark.parametrize("fmt", FORMATS)
def test_weights_load_into_fresh_model_with_identical_predictions(tmp_path, fmt):
    model, _, x = trained()
    path = tmp_path / f"weights.{fmt}"
    save_weights(model, path)
    fresh = make_model(seed=1)
    assert not torch.equal(predictions(fresh, x), predictions(model, x))
    loaded = load_checkpoint(path, fresh)
    assert torch.equal(predictions(fresh, x), predictions(model, x))
    assert_same(dict(loaded), dict(model.state_dict()))


def test_pt_weights_file_is_exactly_the_state_dict(tmp_path):
    model, _, _ = trained()
    save_weights(model, tmp_path / "w.pt")
    raw = torch.load(tmp_path / "w.pt", weights_only=True)
    assert_same(dict(raw), dict(model.state_dict()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_checkpoint_round_trips_model_optimizer_and_state(tmp_path, fmt):
    model, optimizer, x = trained()
    state = full_state(model, optimizer)
    path = tmp_path / f"full.{fmt}"
    save_checkpoint(path, state)

    fresh = make_model(seed=1)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.5)
    loaded = load_checkpoint(path, fresh, fresh_optimizer)
    assert_same(loaded, state)
    assert torch.equal(predictions(fresh, x), predictions(model, x))
    # The optimizer state is back: one more identical step gives identical weights.
    for m, opt in ((model, optimizer), (fresh, fresh_optimizer)):
        m.train()
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    assert_same(dict(fresh.state_dict()), dict(model.state_dict()))


def test_h5_file_lists_one_dataset_per_state_dict_key(tmp_path):
    model, optimizer, _ = trained()
    save_weights(model, tmp_path / "w.h5")
    save_checkpoint(tmp_path / "full.hdf5", full_state(model, optimizer, epoch=7))
    for name in ("w.h5", "full.hdf5"):
        with h5py.File(tmp_path / name, "r") as file:
            group = file["model_weights"]
            assert set(group) == set(model.state_dict())
            for key, tensor in model.state_dict().items():
                assert isinstance(group[key], h5py.Dataset)
                assert group[key].shape == tuple(tensor.shape)
                assert group[key].dtype == tensor.numpy().dtype
            assert json.loads(file.attrs["torchcallbacks_version"]) == "0.1.0"
    with h5py.File(tmp_path / "full.hdf5", "r") as file:
        assert json.loads(file.attrs["epoch"]) == 7
        assert json.loads(file.attrs["logs"])["loss"] == 0.5
        assert json.loads(file.attrs["format"]) == "torchcallbacks.checkpoint"
        groups = json.loads(file["optimizer"].attrs["param_groups"])
        assert groups[0]["lr"] == 0.01
        exp_avg = file["optimizer/state/0/exp_avg"]
        assert exp_avg.shape == tuple(model[0].weight.shape)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bfloat16_round_trips_bit_for_bit(tmp_path, fmt):
    model, _, x = trained()
    model.to(torch.bfloat16)
    path = tmp_path / f"bf16.{fmt}"
    save_weights(model, path)
    fresh = make_model(seed=1).to(torch.bfloat16)
    load_checkpoint(path, fresh)
    assert_same(dict(fresh.state_dict()), dict(model.state_dict()))
    assert torch.equal(predictions(fresh, x.bfloat16()), predictions(model, x.bfloat16()))
    if fmt == "h5":
        with h5py.File(path, "r") as file:
            dataset = file["model_weights/0.weight"]
            assert dataset.dtype == "uint16" and dataset.attrs["torch_dtype"] == "bfloat16"


class Payload:
    """Unpickling this object creates the file ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        load_file(path)
    with pytest.raises(UnsafeCheckpointError, match="arbitrary code"):
        load_checkpoint(path, make_model(0))
    assert not marker.exists()
    # The payload is real: an unsafe load runs it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_save_refuses_non_plain_values_before_writing(tmp_path):
    model, optimizer, _ = trained()
    path = tmp_path / "full.pt"
    save_checkpoint(path, full_state(model, optimizer))
    before = path.read_bytes()
    bad = full_state(model, optimizer)
    bad["callbacks"]["0:EarlyStopping"]["best"] = Payload("x")
    with pytest.raises(TypeError, match=r"state\['callbacks'\]\['0:EarlyStopping'\]\['best'\]"):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before


def test_exception_inside_atomic_write_keeps_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as tmp:
        with open(tmp, "wb") as file:
            file.write(b"partial")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_write_failing_midway_keeps_previous_file(tmp_path):
    """A real I/O error mid-write (file-size limit, like a full disk) in both formats."""
    script = textwrap.dedent(
        """
        import resource, signal, sys, torch
        from torchcallbacks.checkpoints.files import FORMAT, save_checkpoint
        folder = sys.argv[1]
        for fmt in ("pt", "h5"):
            save_checkpoint(f"{folder}/c.{fmt}", {"format": FORMAT, "model": {"w": torch.ones(3)}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        for fmt in ("pt", "h5"):
            try:
                save_checkpoint(f"{folder}/c.{fmt}", {"format": FORMAT,
                                                      "model": {"w": torch.zeros(100_000)}})
            except Exception as error:
                print(fmt, "failed:", type(error).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pt failed" in result.stdout and "h5 failed" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["c.h5", "c.pt"]  # no temporary file left
    for fmt in FORMATS:
        assert torch.equal(load_file(tmp_path / f"c.{fmt}")["model"]["w"], torch.ones(3))


SAVER = textwrap.dedent(
    """
    import sys, torch
    from torchcallbacks.checkpoints.files import FORMAT, save_checkpoint, save_weights
    folder = sys.argv[1]
    model = torch.nn.Linear(256, 256)
    i = 0
    while True:
        with torch.no_grad():
            model.weight.fill_(i)
        state = {"format": FORMAT, "epoch": i, "model": model.state_dict(),
                 "logs": {"loss": float(i)}}
        save_checkpoint(f"{folder}/full.pt", state)
        save_checkpoint(f"{folder}/full.h5", state)
        save_weights(model, f"{folder}/weights.pt")
        save_weights(model, f"{folder}/weights.h5")
        if i == 0:
            print("ready", flush=True)
        i += 1
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_while_saving_never_leaves_a_broken_file(tmp_path):
    rng = random.Random(1234)
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
        final = [name for name in os.listdir(tmp_path) if not name.startswith(".")]
        assert sorted(final) == ["full.h5", "full.pt", "weights.h5", "weights.pt"]
        for name in final:
            data = load_file(tmp_path / name)
            weight = data["model"]["weight"] if name.startswith("full") else data["weight"]
            value = weight[0, 0].item()
            assert torch.equal(weight, torch.full((256, 256), value)), name
            if name.startswith("full"):
                assert data["epoch"] == value and data["logs"]["loss"] == value


def test_hdf5_needs_h5py_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[h5\]"'):
        save_weights(make_model(0), tmp_path / "w.h5")
    save_weights(make_model(0), tmp_path / "w.pt")  # torch.save needs nothing extra


def test_import_does_not_load_h5py():
    code = "import sys, torchcallbacks.checkpoints.files; print('h5py' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_optimizer_with_weights_only_file_is_a_clear_error(tmp_path):
    model, optimizer, _ = trained()
    save_weights(model, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_checkpoint(tmp_path / "w.pt", model, optimizer)


def test_seed_everything_makes_runs_repeat():
    from torchcallbacks import seed_everything

    def draw():
        generator = seed_everything(7)
        loader = torch.utils.data.DataLoader(
            torch.arange(20), batch_size=5, shuffle=True, generator=generator
        )
        return (
            random.random(),
            __import__("numpy").random.rand(),
            torch.rand(2).tolist(),
            [b.tolist() for b in loader],
        )

    assert draw() == draw()
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
