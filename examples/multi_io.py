"""Three inputs, two outputs: a support-ticket classifier with a loss and metrics per output.

    python examples/multi_io.py [--device cuda] [--epochs 10] [--out runs/multi_io]

Inputs (a dict, passed as ``model(text=..., tags=..., numeric=...)``): the ticket's text as
token ids (``nn.Embedding``), 12 tag flags and 3 numeric features. Outputs (a dict): the
priority (probability of "urgent") and the department (5 classes, logits). The logs carry
``loss`` (the sum), ``priority_loss``, ``department_loss``, ``priority_accuracy`` and
``department_accuracy``, as Keras names them. Writes ``best.pt``, ``log.csv`` and
``curves.png`` under ``--out``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _common import arguments, print_best, save_plot
from torch import nn

from torchcallbacks import CSVLogger, EarlyStopping, ModelCheckpoint, Trainer, seed_everything

VOCABULARY, LENGTH, TAGS, NUMERIC = 2000, 24, 12, 3
DEPARTMENTS = ["billing", "technical", "sales", "legal", "shipping"]


class TicketClassifier(nn.Module):
    def __init__(self, embedding: int = 32) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, embedding, padding_idx=0)
        self.tags = nn.Linear(TAGS, 16)
        self.numeric = nn.Sequential(nn.BatchNorm1d(NUMERIC), nn.Linear(NUMERIC, 8))
        self.trunk = nn.Sequential(nn.Linear(embedding + 16 + 8, 64), nn.ReLU())
        self.priority = nn.Linear(64, 1)
        self.department = nn.Linear(64, len(DEPARTMENTS))

    def forward(self, text: torch.Tensor, tags: torch.Tensor, numeric: torch.Tensor) -> dict:
        words = (text != 0).unsqueeze(-1).float()  # mean over the tokens, padding excluded
        pooled = (self.embedding(text) * words).sum(1) / words.sum(1).clamp(min=1.0)
        features = torch.cat([pooled, self.tags(tags).relu(), self.numeric(numeric).relu()], -1)
        hidden = self.trunk(features)
        return {
            "priority": torch.sigmoid(self.priority(hidden)),  # a probability, as in Keras
            "department": self.department(hidden),  # logits
        }


def make_tickets(count: int, generator: torch.Generator) -> tuple[dict, dict]:
    """Departments show in their keywords; urgency in two tags and the customer's tier."""
    department = torch.randint(0, len(DEPARTMENTS), (count,), generator=generator)
    text = torch.randint(50, VOCABULARY, (count, LENGTH), generator=generator)
    keywords = (
        1 + department.unsqueeze(1) * 10 + torch.randint(0, 10, (count, 4), generator=generator)
    )
    text[:, :4] = keywords  # 4 of the department's 10 keyword ids (1..50)
    lengths = torch.randint(8, LENGTH + 1, (count, 1), generator=generator)
    text[torch.arange(LENGTH) >= lengths] = 0  # padding
    text = text[:, torch.randperm(LENGTH, generator=generator)]
    tags = (torch.rand(count, TAGS, generator=generator) < 0.2).float()
    numeric = torch.randn(count, NUMERIC, generator=generator) * torch.tensor([1.0, 5.0, 100.0])
    score = 2.0 * tags[:, 0] + 1.5 * tags[:, 3] + numeric[:, 0] - 1.0
    priority = (score + 0.5 * torch.randn(count, generator=generator) > 0).float().unsqueeze(1)
    inputs = {"text": text, "tags": tags, "numeric": numeric}
    return inputs, {"priority": priority, "department": department}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], out="multi_io", epochs=10)
    out = Path(args.out)
    generator = seed_everything(0)
    x, y = make_tickets(512 if args.small else 8000, generator)

    model = TicketClassifier()
    trainer = Trainer(
        model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),  # few tickets: a high rate
        loss={"priority": "binary_crossentropy", "department": "cross_entropy"},
        metrics={"priority": ["accuracy"], "department": ["accuracy"]},
        device=args.device,
    )
    callbacks = [
        EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True, verbose=1),
        ModelCheckpoint(out / "best.pt", monitor="val_department_accuracy", save_best_only=True),
        CSVLogger(out / "log.csv"),
    ]
    history = trainer.fit(
        x, y, batch_size=64, epochs=args.epochs, validation_split=0.2, callbacks=callbacks
    )
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    print("evaluate:", {k: round(v, 4) for k, v in results.items()})

    new_x, new_y = make_tickets(4, torch.Generator().manual_seed(7))
    predictions = trainer.predict(new_x, verbose=0)  # a dict of tensors, like the outputs
    for i in range(4):
        guess = DEPARTMENTS[predictions["department"][i].argmax()]
        print(
            f"ticket {i}: urgent {predictions['priority'][i, 0]:.2f} "
            f"(true {int(new_y['priority'][i, 0])}), department {guess} "
            f"(true {DEPARTMENTS[new_y['department'][i]]})"
        )
    print_best(history, key="val_department_accuracy", label="department ")
    save_plot(history, out / "curves.png")


if __name__ == "__main__":
    main()
