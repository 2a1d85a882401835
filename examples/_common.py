"""Shared by the examples: command-line flags and offline data.

Image data comes from torchvision's dataset files when they are on disk under ``--data``
(Fashion-MNIST, CIFAR-10; never downloaded), else from scikit-learn's bundled digits (1797
real handwritten digits, 8x8, upscaled), else from generated images with learnable patterns.
Each source can be learned: accuracy rises well above chance in a few epochs.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
CLASS_NAMES = {
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "cifar10": [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ],
}  # fmt: skip


@dataclass
class ImageData:
    """Float images in [0, 1] (NCHW) and integer labels, with the class names and the source."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: list[str]
    source: str


def arguments(description: str, out: str, epochs: int, **extra: object) -> argparse.Namespace:
    """``--device``, ``--epochs``, ``--out``, ``--small`` (a few hundred samples), ``--data``,
    plus ``extra`` flags given as ``name=default``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if any)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--out", default=f"runs/{out}", help="folder for every output file")
    parser.add_argument("--small", action="store_true", help="tiny data, for smoke tests")
    parser.add_argument("--data", default="data", help="torchvision dataset root (no download)")
    for name, default in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def installed(module: str) -> bool:
    """Whether an optional package can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def image_data(name: str, samples: int, root: str, seed: int = 0) -> ImageData:
    """``samples`` training images (and a quarter as many for validation) of 10 classes,
    shaped as ``name``'s images (``"fashion_mnist"``: 1x28x28, ``"cifar10"``: 3x32x32)."""
    validation = max(samples // 4, 10)
    if installed("torchvision"):
        real = _torchvision_dataset(name, root, samples, validation)
        if real is not None:
            return real
    shape = IMAGE_SHAPES[name]
    if installed("sklearn"):
        return _digits(shape, samples, validation, seed)
    return _generated(shape, samples, validation, seed)


def _torchvision_dataset(name: str, root: str, train: int, validation: int) -> ImageData | None:
    from torchvision import datasets

    kind = {"fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        train_set = kind(root, train=True, download=False)
        test_set = kind(root, train=False, download=False)
    except RuntimeError:  # not on disk: the examples never download
        return None

    def tensors(dataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(dataset.data[:count]).float() / 255.0
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        return images.contiguous(), torch.as_tensor(dataset.targets[:count])

    split = (*tensors(train_set, train), *tensors(test_set, validation))
    return ImageData(*split, CLASS_NAMES[name], f"torchvision {kind.__name__} from {root}")


def _digits(shape: tuple[int, ...], train: int, validation: int, seed: int) -> ImageData:
    """scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), shuffled, upscaled to
    ``shape``; fewer images than asked for when it has not that many."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = torch.randperm(len(digits.target), generator=torch.Generator().manual_seed(seed))
    images = torch.as_tensor(digits.images, dtype=torch.float32)[order].unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=shape[1:], mode="bilinear")
    images = images.expand(-1, shape[0], -1, -1).contiguous()
    labels = torch.as_tensor(digits.target)[order]
    if train + validation > len(labels):
        validation = len(labels) // 5
        train = len(labels) - validation
    return ImageData(
        images[:train],
        labels[:train],
        images[train : train + validation],
        labels[train : train + validation],
        [str(digit) for digit in range(10)],
        f"scikit-learn's handwritten digits (8x8 upscaled to {shape[1]}x{shape[2]})",
    )


def _generated(shape: tuple[int, ...], train: int, validation: int, seed: int) -> ImageData:
    """Ten classes, each a smooth pattern under as much noise, with 10% of the labels wrong:
    learnable by MLPs and CNNs, but accuracy plateaus below 90% as on real data."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(10, shape[0], 4, 4, generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear")

    def tensors(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (count,), generator=generator)
        images = 0.5 * patterns[labels] + 0.5 * torch.rand(count, *shape, generator=generator)
        wrong = torch.rand(count, generator=generator) < 0.1
        labels[wrong] = torch.randint(0, 10, (int(wrong.sum()),), generator=generator)
        return images, labels

    classes = [f"pattern {number}" for number in range(10)]
    source = "generated patterns (install scikit-learn for real handwritten digits)"
    return ImageData(*tensors(train), *tensors(validation), classes, source)


def print_best(history, key: str = "val_accuracy", label: str = "") -> None:
    """Prints the best value of ``key`` over the epochs as ``val_accuracy: X``."""
    print(f"Best {label}val_accuracy: {max(history.history[key]):.4f}")


def save_plot(history, path: Path) -> None:
    """``history.plot(path)`` when matplotlib is installed (the ``plot`` extra)."""
    if installed("matplotlib"):
        history.plot(path)
        print(f"Curves: {path}")
    else:
        print('Install matplotlib (pip install "torchcallbacks[plot]") to plot the curves.')
