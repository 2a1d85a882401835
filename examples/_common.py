"""Shared by the examples: command-line flags and offline data.

Data comes from torchvision when the dataset files are already on disk (``--data``), from
``torchvision.datasets.FakeData`` when torchvision imports, and from generated tensors
otherwise. Nothing is ever downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

IMAGE_SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


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


def image_data(name: str, samples: int, root: str, seed: int = 0) -> tuple[Split, str]:
    """``(x_train, y_train, x_val, y_val)`` as float tensors in [0, 1], NCHW, and the source.

    ``samples`` training images (and a quarter as many for validation), 10 classes.
    """
    validation = max(samples // 4, 10)
    if installed("torchvision"):
        real = _torchvision_dataset(name, root, samples, validation)
        if real is not None:
            return real, f"torchvision {name} from {root}"
        return _fake_data(name, samples, validation, seed), "torchvision FakeData (random)"
    return _generated(IMAGE_SHAPES[name], samples, validation, seed), "generated tensors"


def _torchvision_dataset(name: str, root: str, train: int, validation: int) -> Split | None:
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

    return (*tensors(train_set, train), *tensors(test_set, validation))


def _fake_data(name: str, train: int, validation: int, seed: int) -> Split:
    from torchvision import datasets, transforms

    shape = IMAGE_SHAPES[name]

    def tensors(count: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        fake = datasets.FakeData(count, shape, 10, transforms.ToTensor(), random_offset=offset)
        images, labels = zip(*(fake[i] for i in range(count)))
        return torch.stack(images), torch.tensor(labels)

    return (*tensors(train, seed), *tensors(validation, seed + train))


def _generated(shape: tuple[int, ...], train: int, validation: int, seed: int) -> Split:
    """Ten classes, each a faint smooth pattern under noise, with 10% of the labels wrong:
    learnable by MLPs and CNNs, but accuracy plateaus below 90% as on real data."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(10, shape[0], 4, 4, generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear")

    def tensors(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (count,), generator=generator)
        images = 0.2 * patterns[labels] + 0.8 * torch.rand(count, *shape, generator=generator)
        wrong = torch.rand(count, generator=generator) < 0.1
        labels[wrong] = torch.randint(0, 10, (int(wrong.sum()),), generator=generator)
        return images, labels

    return (*tensors(train), *tensors(validation))


def save_plot(history, path: Path) -> None:
    """``history.plot(path)`` when matplotlib is installed (the ``plot`` extra)."""
    if installed("matplotlib"):
        history.plot(path)
        print(f"Curves: {path}")
    else:
        print('Install matplotlib (pip install "torchcallbacks[plot]") to plot the curves.')
