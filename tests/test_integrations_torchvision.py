"""torchvision's models as their users bring them (random weights, nothing downloaded).

Marked ``vision``: PyPI's torchvision needs torch's CUDA build, which the main test environment
lacks; these run in CI's second virtualenv (``python -m pytest -m "vision or also_vision"``).
"""

from __future__ import annotations

import pytest
import torch

from torchcallbacks import CSVLogger, ModelCheckpoint, Trainer, load_checkpoint

pytestmark = [pytest.mark.vision, pytest.mark.usefixtures("one_thread")]


def images(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 RGB images whose class (of 4) is set by which quarter of the image is bright."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (samples,), generator=generator)
    x = torch.rand(samples, 3, 32, 32, generator=generator)
    for label in range(4):
        rows, columns = divmod(label, 2)
        chosen = x[labels == label]
        chosen[:, :, 16 * rows : 16 * rows + 16, 16 * columns : 16 * columns + 16] += 1.0
        x[labels == label] = chosen
    return x, labels


def resnet18() -> torch.nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=4)


def test_resnet18_trains_and_its_checkpoint_reloads_and_resumes_exactly(tmp_path):
    """A torchvision ResNet-18 (batch norm, shuffled batches) trained 3 epochs; the full
    checkpoint of epoch 2 reloads into a fresh ResNet-18, and a run resumed from it ends
    with the weights and the log of the uninterrupted run."""
    x, y = images(48, seed=0)
    x_val, y_val = images(16, seed=1)

    def fit(model, folder, resume_from=None):
        trainer = Trainer(model, "sgd", "cross_entropy", metrics=["accuracy"])
        callbacks = [
            ModelCheckpoint(folder / "epoch{epoch}.pt"),
            CSVLogger(folder / "log.csv", append=resume_from is not None),
        ]
        trainer.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            validation_data=(x_val, y_val),
            callbacks=callbacks,
            resume_from=resume_from,
            verbose=0,
        )
        return trainer

    whole = fit(resnet18(), tmp_path / "whole")
    rows = (tmp_path / "whole" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,accuracy,loss,val_accuracy,val_loss") and len(rows) == 4

    fresh = resnet18()
    state = load_checkpoint(tmp_path / "whole" / "epoch2.pt", model=fresh)
    assert state["epoch"] == 1
    reloaded = Trainer(fresh, loss="cross_entropy", metrics=["accuracy"])
    assert reloaded.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"] == pytest.approx(
        float(rows[2].split(",")[4])
    )

    resumed_folder = tmp_path / "resumed"
    resumed_folder.mkdir()
    (resumed_folder / "log.csv").write_text("\r\n".join(rows[:3]) + "\r\n")
    resumed = fit(resnet18(), resumed_folder, resume_from=str(tmp_path / "whole" / "epoch2.pt"))
    torch.testing.assert_close(resumed.model.state_dict(), whole.model.state_dict())
    assert (resumed_folder / "log.csv").read_text().splitlines() == rows
