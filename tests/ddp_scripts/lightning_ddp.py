"""Worker script of tests/test_distributed_lightning.py: a real LightningModule (a subclass
of Lightning's ``BoringModel`` that logs with ``self.log``) trained through its own
``training_step`` under torchrun (2 ranks, gloo, CPU), with DDP and with FSDP2.

    torchrun --nproc_per_node=2 tests/ddp_scripts/lightning_ddp.py --out DIR

``batch_size`` is per process (as in Lightning): 8 on each of 2 ranks, a global batch of 16,
and ``shuffle=False``, so a single process fitting the same data with ``batch_size=16``
sees the same global batches (`fit_once` in one process is that reference). Results go to
``DIR/rank<r>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.demos.boring_classes import BoringModel
from torch.nn.parallel import DistributedDataParallel

from torchcallbacks import Trainer

GLOBAL_BATCH, EPOCHS = 16, 3


class LoggingBoringModel(BoringModel):
    """BoringModel (Linear(32, 2), SGD with StepLR from its configure_optimizers) on
    ``(x, y)`` batches, logging what a user logs; `Trainer.predict` runs its forward."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_mse", loss, on_epoch=True, prog_bar=True)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y), sync_dist=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))


class LayerStepModel(LoggingBoringModel):
    """Training and predict steps that call the layer, never ``self(x)`` (the forward)."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.layer(x), y)
        self.log("train_mse", loss, on_epoch=True)
        return loss

    def predict_step(self, batch, batch_idx):
        return self.layer(batch)


class ManualTwoOptimizers(LoggingBoringModel):
    """Manual optimization with two optimizers, each toggled: its layer, then a head on
    the layer's detached outputs (``manual_backward`` under DDP averages the gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.head = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        first, second = self.optimizers()
        with first.toggle_model():
            loss = F.mse_loss(self(x), y)
            first.zero_grad()
            self.manual_backward(loss)
            first.step()
        with second.toggle_model():
            head_loss = F.mse_loss(self.head(self(x).detach()), y)
            second.zero_grad()
            self.manual_backward(head_loss)
            second.step()
        self.log_dict({"train_mse": loss, "head_mse": head_loss}, on_epoch=True)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.layer.parameters(), lr=0.1),
                torch.optim.SGD(self.head.parameters(), lr=0.1)]  # fmt: skip


def hook_calls() -> list[str]:
    """The hooks a LoggingBoringModel gets in fit, evaluate and predict, by name."""
    from torchcallbacks.models.lightning.calls import MODULE_HOOKS

    names: list[str] = []

    def recorded(name):
        def hook(self, *args, **kwargs):
            names.append(name)
            return getattr(LoggingBoringModel, name)(self, *args, **kwargs)

        return hook

    hooks = {n: recorded(n) for n in MODULE_HOOKS if n != "configure_sharded_model"}
    torch.manual_seed(0)
    trainer = Trainer(type("Recorded", (LoggingBoringModel,), hooks)(), device="cpu")
    x, y = data(32, seed=1)
    batch = GLOBAL_BATCH // trainer.world_size
    trainer.fit(x, y, batch_size=batch, epochs=2, shuffle=False, validation_data=data(16, 2),
                verbose=0)  # fmt: skip
    trainer.evaluate(*data(16, 2), batch_size=batch, verbose=0)
    trainer.predict(x[:16], batch_size=batch, verbose=0)
    return names


def data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 32, generator=generator)
    return x, torch.stack([x[:, :4].sum(1), x[:, 4] - x[:, 5]], dim=1)


def flat_weights(state: dict[str, torch.Tensor]) -> list[float]:
    return torch.cat([value.detach().flatten() for value in state.values()]).tolist()


def wrapped_by_the_user() -> str:
    """The error for a LightningModule the user wrapped in DDP (its forward is not the
    training step, so DDP could not synchronise the step's gradients)."""
    try:
        Trainer(DistributedDataParallel(LoggingBoringModel()), device="cpu")
    except ValueError as error:
        return str(error)
    return "no error"


def fit_once(
    weights_path: str,
    module_class: type = LoggingBoringModel,
    strategy: str | None = "auto",
    **options,
) -> dict:
    """Fit, save the weights, evaluate and predict; what every rank reports."""
    torch.manual_seed(0)
    module = module_class()
    trainer = Trainer(module, device="cpu", strategy=strategy, **options)
    x, y = data(64, seed=1)
    x_val, y_val = data(24, seed=2)
    history = trainer.fit(
        x, y, batch_size=GLOBAL_BATCH // trainer.world_size, epochs=EPOCHS, shuffle=False,
        validation_data=(x_val, y_val), verbose=0,
    )  # fmt: skip
    trainer.save_weights(weights_path)
    state = {key: value.full_tensor() if hasattr(value, "full_tensor") else value
             for key, value in module.state_dict().items()}  # fmt: skip
    return {
        "history": history.history,
        "weights": flat_weights(state),
        "model_is_module": trainer.model is module,
        "evaluate": trainer.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True),
        "predict": trainer.predict(x_val[:5], batch_size=8, verbose=0).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out
    result = {
        "ddp": fit_once(os.path.join(out, "ddp.pt"), strategy="ddp"),
        "fsdp": fit_once(os.path.join(out, "fsdp.pt"), strategy="fsdp"),
        "fsdp_layer_step": fit_once(os.path.join(out, "layer.pt"), LayerStepModel, "fsdp"),
        # the first batch of each pair under DDP's no_sync, synchronised at the second
        "ddp_accumulate": fit_once(
            os.path.join(out, "accumulate.pt"), strategy="ddp", accumulate_grad_batches=2
        ),
        "manual": fit_once(os.path.join(out, "manual.pt"), ManualTwoOptimizers, "ddp"),
        "hooks": hook_calls(),
        "wrapped_by_the_user": wrapped_by_the_user(),
    }
    gc.collect()  # free the DDP wrappers before the process group (gloo aborts otherwise)
    rank = dist.get_rank()
    dist.destroy_process_group()
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
