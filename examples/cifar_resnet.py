"""CIFAR-10 ResNet from scratch: AMP on GPU, OneCycleLR stepped after every batch.

    python examples/cifar_resnet.py                                  # CPU: a small subset
    python examples/cifar_resnet.py --device cuda --samples 50000 --epochs 30 --data ~/data

The model is torchvision's ResNet-18 when torchvision is installed, else the small
ResNet-style CNN below. CIFAR-10 is read from ``--data`` when its files are there (it never
downloads); otherwise scikit-learn's handwritten digits upscaled to 32x32 RGB, or generated
images (see ``_common.py``). On CUDA the step runs in float16 autocast with loss scaling
(``precision="16-mixed"``) and channels-last memory; larger batches suit a GPU
(``--batch-size 128 --max-lr 0.1``). Writes ``best.pt``, ``log.csv`` and
``curves.png`` under ``--out``, and prints the best ``val_accuracy``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from _common import arguments, image_data, installed, print_best, save_plot
from torch import nn

from torchcallbacks import (
    CSVLogger,
    LearningRateScheduler,
    ModelCheckpoint,
    Trainer,
    seed_everything,
)


class Residual(nn.Module):
    """Two 3x3 convolutions with batch norm, plus the (projected) input."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def small_resnet(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        Residual(32, 32),
        Residual(32, 64, stride=2),
        Residual(64, 128, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, classes),
    )


def build_model() -> tuple[nn.Module, str]:
    if installed("torchvision"):
        from torchvision.models import resnet18

        return resnet18(num_classes=10), "torchvision ResNet-18"
    return small_resnet(), "small ResNet (torchvision is not installed)"


def main() -> None:
    args = arguments(
        __doc__.splitlines()[0],
        out="cifar_resnet",
        epochs=3,
        samples=1500,
        batch_size=32,
        max_lr=0.05,
    )
    out = Path(args.out)
    seed_everything(0)
    data = image_data("cifar10", 384 if args.small else args.samples, args.data)
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    model, name = build_model()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    print(f"Data: {data.source}, {len(x_train)} training images; model: {name}; device: {device}")

    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.max_lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    trainer = Trainer(
        model,
        optimizer,
        loss=nn.CrossEntropyLoss(label_smoothing=0.1),
        metrics=["accuracy"],
        device=device,
        precision="16-mixed" if cuda else "32",
        channels_last=cuda,
    )
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.max_lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch
    )
    callbacks = [
        LearningRateScheduler(one_cycle, interval="batch"),  # "lr" in the logs: epoch's last
        ModelCheckpoint(out / "best.pt", monitor="val_accuracy", save_best_only=True),
        CSVLogger(out / "log.csv"),
    ]
    history = trainer.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
    )
    print_best(history)
    print(f"Full checkpoint of the best epoch: {out / 'best.pt'}")
    save_plot(history, out / "curves.png")


if __name__ == "__main__":
    main()
