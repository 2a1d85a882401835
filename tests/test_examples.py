"""Every example runs with ``--small`` and does what its docstring says it does, and every
classification example learns: its printed best ``val_accuracy: X`` is at least twice chance.

Marked ``also_vision``: CI runs them in its torchvision virtualenv too, where the image
examples take torchvision's code paths (ResNet-18, dataset folders). ``ddp.py`` and
``fsdp.py`` run here in one process; tests/test_distributed*.py run them under torchrun.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOT_HERE = {"_common.py"}  # a helper module
# The classes of each classification example (of its output named in the printed line).
CLASSES = {
    "quickstart.py": 3,
    "mnist_mlp.py": 10,
    "cifar_resnet.py": 10,
    "multi_io.py": 5,  # the department
    "lightning_port.py": 10,
    "resume.py": 4,
    "ddp.py": 3,
    "fsdp.py": 4,
}

pytestmark = pytest.mark.also_vision


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(name: str, out: Path, *flags: str, python: tuple[str, ...] = ()) -> str:
    """The example's output; ``python``: what runs the script (default: this interpreter)."""
    command = [*(python or (sys.executable,)), str(EXAMPLES / name), "--small", "--device"]
    command += ["cpu", "--out", str(out), *flags]
    # One thread: on busy cores torch's threads wait for each other (several times slower).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, cwd=out.parent, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if name in CLASSES:
        _check_it_learned(name, result.stdout, out)
    return result.stdout


def _check_it_learned(name: str, printed: str, out: Path) -> None:
    """The printed best validation accuracy is the log's best, and at least twice chance."""
    best = float(re.search(r"^Best (\w+ )?val_accuracy: ([\d.]+)$", printed, re.M).group(2))
    assert best >= 2 / CLASSES[name], f"{name} did not learn:\n{printed[-3000:]}"
    if (out / "log.csv").exists():
        rows = _rows(out / "log.csv")
        key = next(
            k for k in ("val_accuracy", "val_acc", "val_department_accuracy") if k in rows[0]
        )
        assert best == pytest.approx(max(float(row[key]) for row in rows), abs=5e-5)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _curves(out: Path) -> None:
    if _installed("matplotlib"):
        assert (out / "curves.png").stat().st_size > 1000


def check_quickstart(out: Path) -> None:
    printed = _run("quickstart.py", out, "--epochs", "4")
    rows = _rows(out / "log.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    # best.pt holds the weights of the best epoch: reloaded into a fresh model, it scores
    # the lowest val_loss of the log.
    best = min(float(row["val_loss"]) for row in rows)
    assert f"Best checkpoint: val_loss {best:.4f}" in printed
    assert "Restoring model weights from the end of the best epoch" in printed
    assert printed.count("\n [") == 5  # five rows of class probabilities
    if _installed("tensorboard"):
        assert list((out / "tensorboard" / "validation").glob("events.out.*"))
    _curves(out)


def check_custom_callback(out: Path) -> None:
    printed = _run("custom_callback.py", out, "--epochs", "2")
    losses = (out / "batch_losses.csv").read_text().splitlines()
    assert losses[0] == "batch,loss" and len(losses) == 1 + 2 * 8  # 512 samples, batch 64
    assert printed.count("LossHistory: 8 batches") == 2
    if _installed("matplotlib"):
        assert {p.name for p in out.glob("loss_epoch_*.png")} == {
            "loss_epoch_1.png",
            "loss_epoch_2.png",
        }


def check_mnist_mlp(out: Path) -> None:
    printed = _run("mnist_mlp.py", out, "--epochs", "3")
    assert re.search(
        r"^Data: (scikit-learn's handwritten digits|generated patterns)", printed, re.M
    )
    rows = _rows(out / "log.csv")
    assert len(rows) == 3 and "lr" in rows[0]  # ReduceLROnPlateau logs the learning rate
    best = max(rows, key=lambda row: float(row["val_accuracy"]))
    checkpoint = out / ("best.h5" if _installed("h5py") else "best.pt")
    # The best checkpoint reloads and knows its epoch and score.
    line = f"{checkpoint}: epoch {int(best['epoch']) + 1}, "
    assert line + f"val_accuracy {float(best['val_accuracy']):.4f}" in printed
    assert printed.count("  predicted ") == 8
    if _installed("h5py"):
        import h5py

        with h5py.File(checkpoint, "r") as f:
            assert "model_weights" in f
    if _installed("tensorboard"):
        assert list((out / "tensorboard" / "validation").glob("events.out.*"))
    _curves(out)


def check_cifar_resnet(out: Path) -> None:
    printed = _run("cifar_resnet.py", out)
    model = "torchvision ResNet-18" if _installed("torchvision") else "small ResNet"
    assert f"model: {model}" in printed
    rows = _rows(out / "log.csv")
    # OneCycleLR is stepped after every batch: the logged lr of epoch e is the schedule's
    # value after 12 * (e + 1) steps (384 images in batches of 32, 3 epochs).
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.05, momentum=0.9, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.05, epochs=3, steps_per_epoch=12
    )
    expected = []
    for _ in range(3):
        for _ in range(12):
            optimizer.step()
            schedule.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert [float(row["lr"]) for row in rows] == pytest.approx(expected)
    state = torch.load(out / "best.pt", weights_only=True)  # a full checkpoint
    assert {"model", "optimizer", "epoch"} <= set(state)
    _curves(out)


def check_multi_io(out: Path) -> None:
    printed = _run("multi_io.py", out)
    names = ["loss", "priority_loss", "department_loss", "priority_accuracy"]
    names.append("department_accuracy")
    header = list(_rows(out / "log.csv")[0])
    assert sorted(header) == sorted(["epoch", *names, *(f"val_{n}" for n in names)])
    evaluated = re.search(r"evaluate: \{(.*)\}", printed).group(1)
    assert re.findall(r"'(\w+)':", evaluated) == names
    assert len(re.findall(r"ticket \d: urgent 0\.\d\d \(true \d\), department", printed)) == 4
    _curves(out)


def check_lightning_port(out: Path) -> None:
    printed = _run("lightning_port.py", out, "--epochs", "4")
    rows = _rows(out / "log.csv")
    assert {"train_loss", "val_loss", "val_acc", "lr"} <= set(rows[0])  # self.log, scheduler
    # ModelCheckpoint(save_top_k=1) kept one file, named after the best logged val_acc.
    best = max(rows, key=lambda row: float(row["val_acc"]))
    name = f"epoch{int(best['epoch']) + 1:02d}-val_acc{float(best['val_acc']):.3f}.pt"
    assert [p.name for p in out.glob("epoch*.pt")] == [name]
    assert re.search(r"test_step: \{'test_loss': [\d.]+, 'test_acc': [\d.]+\}", printed)
    assert "predict_step: (128, 10) class probabilities" in printed
    _curves(out)


def check_gan(out: Path) -> None:
    """Manual optimization: two optimizer steps a batch, and the generator learns."""
    printed = _run("gan.py", out, "--epochs", "12")
    assert "optimizer steps: 192 (two per batch)" in printed  # 512 samples, batches of 64
    before, after = map(float, re.findall(r"real one: ([\d.]+) -> ([\d.]+)", printed)[0])
    assert after < before / 2
    rows = _rows(out / "log.csv")
    assert len(rows) == 12 and {"d_loss", "g_loss"} <= set(rows[0])
    _curves(out)


def check_resume(out: Path) -> None:
    """With its defaults, the example crashes mid-epoch, reruns, continues from the backup,
    and ends exactly as a run that was never interrupted."""
    printed = _run("resume.py", out)
    # 384 training samples in batches of 64: 6 batches per epoch, 6 epochs, a backup every
    # 4 batches; the crash after batch 19 (epoch 4, batch 1) loses the 3 batches since the
    # backup after batch 16 (epoch 3, batch 4).
    assert "a crash after batch 19" in printed
    assert "Interrupted: simulated crash after training batch 19" in printed
    assert (
        "The backup goes on with epoch 3 after its first 4 batch(es), 16 batches in all." in printed
    )
    assert "Resuming from epoch 3, batch 4 (backup" in printed  # the library's own line
    assert "The rerun started training in epoch 3 after its first 4 batch(es)." in printed
    assert not (out / "backup" / "latest.pt").exists()

    uninterrupted = out.parent / "uninterrupted"
    printed = _run("resume.py", uninterrupted, "--crash-at-batch", "0")
    assert "Interrupted" not in printed
    rows = (out / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1", "2", "3", "4", "5"]
    assert (out / "log.csv").read_bytes() == (uninterrupted / "log.csv").read_bytes()
    resumed = torch.load(out / "final.pt", weights_only=True)
    reference = torch.load(uninterrupted / "final.pt", weights_only=True)
    assert all(torch.equal(resumed[key], reference[key]) for key in reference)


def check_ddp(out: Path) -> None:
    printed = _run("ddp.py", out)  # one process: the same script without torchrun
    assert "1 process(es) on cpu, global batch 64" in printed
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "log.csv"]


def check_fsdp(out: Path) -> None:
    printed = _run("fsdp.py", out)
    assert re.search(r"last\.pt \(epoch \d\) loads into a plain model", printed)
    weights = torch.load(out / "best.pt", weights_only=True)
    assert weights["head.weight"].shape == (4, 32)  # 4 classes


CHECKS = {
    "quickstart.py": check_quickstart,
    "custom_callback.py": check_custom_callback,
    "mnist_mlp.py": check_mnist_mlp,
    "cifar_resnet.py": check_cifar_resnet,
    "multi_io.py": check_multi_io,
    "lightning_port.py": check_lightning_port,
    "gan.py": check_gan,
    "resume.py": check_resume,
    "ddp.py": check_ddp,
    "fsdp.py": check_fsdp,
}


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in NOT_HERE)


def test_every_example_is_checked():
    assert set(_examples()) == set(CHECKS)


@pytest.mark.parametrize("name", _examples())
def test_example_does_what_it_says(name, tmp_path):
    CHECKS[name](tmp_path / "out")


def test_without_scikit_learn_the_image_examples_learn_generated_patterns(tmp_path):
    hide = (
        "import os, runpy, sys; sys.modules['sklearn'] = None; sys.argv = sys.argv[1:]; "
        "sys.path.insert(0, os.path.dirname(sys.argv[0])); "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    python = (sys.executable, "-c", hide)
    printed = _run("mnist_mlp.py", tmp_path / "out", "--epochs", "3", python=python)
    assert "Data: generated patterns (install scikit-learn for real handwritten digits)" in printed


def _idx_file(path: Path, data: torch.Tensor) -> None:
    """``data`` (uint8) in the IDX format of the MNIST files: type 8, then the sizes."""
    header = struct.pack(f">I{data.ndim}I", 0x0800 + data.ndim, *data.shape)
    path.write_bytes(header + data.numpy().tobytes())


@pytest.mark.vision
def test_with_data_the_examples_read_torchvision_dataset_folders(tmp_path):
    """A FashionMNIST folder laid out as torchvision stores it (IDX files under
    FashionMNIST/raw; here scikit-learn's digits, 28x28): read by torchvision, unchanged."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    images = torch.nn.functional.interpolate(images / 16, size=(28, 28), mode="bilinear")
    images = (images.squeeze(1) * 255).round().to(torch.uint8)
    labels = torch.as_tensor(digits.target).to(torch.uint8)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for part, rows in (("train", slice(0, 1500)), ("t10k", slice(1500, None))):
        _idx_file(raw / f"{part}-images-idx3-ubyte", images[rows])
        _idx_file(raw / f"{part}-labels-idx1-ubyte", labels[rows])
    data = str(tmp_path / "data")
    printed = _run("mnist_mlp.py", tmp_path / "out", "--epochs", "3", "--data", data)
    assert f"Data: torchvision FashionMNIST from {data}; 512 training and 128 validation" in printed
    names = "T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot"
    assert len(re.findall(rf"  predicted ({names}) +true ({names})$", printed, re.M)) == 8


def test_default_crash_comes_after_a_backup_inside_an_epoch():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from resume import default_crash
    finally:
        sys.path.remove(str(EXAMPLES))
    for steps, epochs, save_freq in [(6, 6, 4), (6, 1, 4), (48, 6, 4), (48, 6, 20), (5, 3, 2)]:
        crash = default_crash(steps, epochs, save_freq)
        backup = crash // save_freq * save_freq
        assert 0 < backup < crash < steps * epochs
        assert backup % steps != 0 and crash >= steps * epochs / 2
    assert default_crash(2, 1, 4) == 0  # too short a run to crash after a backup
