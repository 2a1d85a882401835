"""Fashion-MNIST MLP with the classic Keras callback set.

    python examples/mnist_mlp.py [--device cuda] [--epochs 15] [--samples 10000] [--out DIR]

Uses Fashion-MNIST from ``--data`` when torchvision and the dataset files are there (it never
downloads), else scikit-learn's handwritten digits upscaled to 28x28, else generated images
(see ``_common.py``). Writes under ``--out`` (default ``runs/mnist_mlp``): ``best.h5``
(HDF5, with h5py; else ``best.pt``), ``log.csv``, ``tensorboard/`` and ``curves.png``, and
prints the best ``val_accuracy``.
"""

from __future__ import annotations

from pathlib import Path

from _common import arguments, image_data, installed, print_best, save_plot
from torch import nn

from torchcallbacks import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    Trainer,
    load_checkpoint,
    seed_everything,
)


def build_model() -> nn.Module:
    # Keras: Flatten, Dense(256, relu), Dropout(0.2), Dense(10, softmax). Here the last
    # layer returns logits and the loss is "cross_entropy" (softmax inside the loss).
    return nn.Sequential(
        nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10)
    )


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="mnist_mlp", epochs=15, samples=10_000)
    out = Path(args.out)
    seed_everything(0)
    data = image_data("fashion_mnist", 512 if args.small else args.samples, args.data)
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    print(f"Data: {data.source}; {len(x_train)} training and {len(x_val)} validation images")

    trainer = Trainer(
        build_model(),
        optimizer="adam",
        loss="cross_entropy",
        metrics=["accuracy"],
        device=args.device,
    )
    checkpoint = out / ("best.h5" if installed("h5py") else "best.pt")
    callbacks = [
        EarlyStopping(monitor="val_accuracy", patience=4, restore_best_weights=True, verbose=1),
        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, verbose=1),
        ModelCheckpoint(checkpoint, monitor="val_accuracy", save_best_only=True, verbose=1),
        CSVLogger(out / "log.csv"),
    ]
    if installed("tensorboard"):
        callbacks.append(TensorBoard(log_dir=out / "tensorboard", histogram_freq=1))
    history = trainer.fit(
        x_train,
        y_train,
        batch_size=128,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
    )

    # The full checkpoint (model, optimizer, epoch, logs) loads into a fresh model.
    fresh = build_model()
    state = load_checkpoint(checkpoint, model=fresh)
    print(
        f"{checkpoint}: epoch {state['epoch'] + 1}, "
        f"val_accuracy {state['logs']['val_accuracy']:.4f}"
    )
    predicted = Trainer(fresh, device=args.device).predict(x_val[:8], verbose=0).argmax(-1)
    for guess, truth in zip(predicted.tolist(), y_val[:8].tolist()):
        print(f"  predicted {data.classes[guess]:<12} true {data.classes[truth]}")
    print_best(history)
    save_plot(history, out / "curves.png")


if __name__ == "__main__":
    main()
