"""A LightningModule-style model trained by torchcallbacks' Trainer, unchanged.

    python examples/lightning_port.py [--device cuda] [--epochs 12] [--out runs/lightning_port]

The module keeps Lightning's methods: ``training_step``, ``validation_step``, ``test_step``,
``predict_step``, ``configure_optimizers`` (with a ReduceLROnPlateau on ``val_loss``) and
``self.log``. Only two lines change from a Lightning script:

    class LitClassifier(L.LightningModule):            ->  (LoggingMixin, nn.Module)
    L.Trainer(max_epochs=12, callbacks=[...]).fit(model, train_loader, val_loader)
                                                         ->  Trainer(model).fit(train_loader, ...)

With Lightning installed, ``class LitClassifier(L.LightningModule)`` works as it is. The
data: Fashion-MNIST from ``--data`` when torchvision and its files are there, else
scikit-learn's handwritten digits or generated images (see ``_common.py``). Writes the best
checkpoint (named after the logged ``val_acc``), ``log.csv`` and ``curves.png``, and prints
the best ``val_acc`` as ``val_accuracy``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from _common import arguments, image_data, print_best, save_plot
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import (
    CSVLogger,
    EarlyStopping,
    LoggingMixin,
    ModelCheckpoint,
    Trainer,
    seed_everything,
)


class LitClassifier(LoggingMixin, nn.Module):
    def __init__(self, hidden: int = 128, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _shared_eval(self, batch, prefix):
        x, y = batch
        logits = self(x)
        self.log(f"{prefix}_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log(f"{prefix}_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._shared_eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_eval(batch, "test")

    def predict_step(self, batch, batch_idx):
        x, _ = batch
        return self(x).softmax(-1)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"},
        }


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="lightning_port", epochs=12)
    out = Path(args.out)
    generator = seed_everything(0)
    data = image_data("fashion_mnist", 512 if args.small else 8000, args.data)
    print(f"Data: {data.source}")
    train_loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=64, shuffle=True, generator=generator
    )
    val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=256)

    model = LitClassifier()
    trainer = Trainer(model, device=args.device)  # optimizer and scheduler: from the module
    callbacks = [
        # Lightning: EarlyStopping(monitor="val_loss", patience=3, mode="min")
        EarlyStopping(monitor="val_loss", patience=3, verbose=1),
        # Lightning: ModelCheckpoint(dirpath=out, filename="{epoch:02d}-{val_acc:.3f}",
        #                            monitor="val_acc", mode="max", save_top_k=1)
        ModelCheckpoint(
            out / "epoch{epoch:02d}-val_acc{val_acc:.3f}.pt",
            monitor="val_acc",
            save_top_k=1,
            save_weights_only=True,
        ),
        CSVLogger(out / "log.csv"),
    ]
    history = trainer.fit(
        train_loader, epochs=args.epochs, validation_data=val_loader, callbacks=callbacks
    )
    print(f"Best checkpoint: {callbacks[1].best_model_path}")
    print("test_step:", trainer.evaluate(val_loader, verbose=0, return_dict=True))
    probabilities = trainer.predict(val_loader, verbose=0)  # predict_step on every batch
    print(f"predict_step: {tuple(probabilities.shape)} class probabilities")
    print_best(history, key="val_acc")
    save_plot(history, out / "curves.png")


if __name__ == "__main__":
    main()
