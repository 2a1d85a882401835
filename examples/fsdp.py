"""Sharded data-parallel training (FSDP2): a model whose weights are split over the processes.

    torchrun --nproc_per_node=2 examples/fsdp.py            # 2 processes: gloo on CPU, nccl on GPUs
    torchrun --nproc_per_node=2 examples/fsdp.py --small --epochs 2
    python examples/fsdp.py                                 # one process: nothing to shard

``Trainer(..., strategy="fsdp")`` applies PyTorch's ``fully_shard`` to each block of the
model (here the transformer layers in an ``nn.ModuleList``) and to the model: each process
keeps only its shard of the weights, gradients and Adam states, and gathers a block's
weights just before the block runs. The optimizer built on ``model.parameters()`` before
sharding is rebuilt on the shards. Under ``--out`` (default ``runs/fsdp``), rank 0 writes
``best.pt`` (the full, gathered weights: ``torch.load`` loads them into the plain model)
and ``log.csv``; ``last.pt/`` is a directory of shards written by every process
(``torch.distributed.checkpoint``), which ``load_checkpoint("last.pt", model)`` loads into
the plain model in one process. ``backup/`` makes a killed run resume where it stopped
(it must be on a filesystem every process shares).
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import arguments, print_best
from torch import nn

from torchcallbacks import (
    BackupAndRestore,
    CSVLogger,
    ModelCheckpoint,
    Trainer,
    load_checkpoint,
    seed_everything,
)


class TinyTransformer(nn.Module):
    """Token embeddings, a stack of encoder layers and a classification head."""

    def __init__(self, vocabulary: int, width: int, layers: int, classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, batch_first=True)
            for _ in range(layers)
        )
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(tokens)
        for layer in self.layers:
            hidden = layer(hidden)
        return self.head(hidden.mean(dim=1))


def make_data(samples: int, vocabulary: int = 64, length: int = 16, classes: int = 4):
    """Sequences of class c draw half of their tokens from the c-th part of the vocabulary."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    tokens = torch.randint(0, vocabulary, (samples, length), generator=generator)
    part = vocabulary // classes
    own = labels[:, None] * part + torch.randint(0, part, (samples, length), generator=generator)
    from_own_part = torch.rand(samples, length, generator=generator) < 0.5
    return torch.where(from_own_part, own, tokens), labels


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="fsdp", epochs=5, batch_size=32)
    out = Path(args.out)
    seed_everything(0)  # the same initial weights on every process
    x, y = make_data(512 if args.small else 8192)
    width, layers = (32, 2) if args.small else (128, 4)
    model = TinyTransformer(vocabulary=64, width=width, layers=layers, classes=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(
        model,
        optimizer,
        loss="cross_entropy",
        metrics=["accuracy"],
        device=args.device,
        strategy="fsdp",
    )
    if trainer.is_main_process:
        print(f"{trainer.world_size} process(es) on {trainer.device}, strategy fsdp")
    callbacks = [
        ModelCheckpoint(out / "best.pt", save_best_only=True, save_weights_only=True),
        ModelCheckpoint(out / "last.pt"),
        CSVLogger(out / "log.csv"),
        BackupAndRestore(out / "backup"),
    ]
    history = trainer.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=0.2,
        callbacks=callbacks,
    )
    if trainer.is_main_process:  # what a later single-process job does with the files
        plain = TinyTransformer(vocabulary=64, width=width, layers=layers, classes=4)
        state = load_checkpoint(out / "last.pt", plain)
        print(f"last.pt (epoch {state['epoch'] + 1}) loads into a plain model; files in {out}/")
        print_best(history)


if __name__ == "__main__":
    main()
