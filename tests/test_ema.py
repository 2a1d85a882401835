"""Trainer(ema_momentum=...) and SwapEMAWeights: Keras 3's EMA of the weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from torchcallbacks import BackupAndRestore, Callback, ModelCheckpoint, SwapEMAWeights, Trainer


class WeightRecorder(Callback):
    """The module's weight and the EMA after each training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[float] = []
        self.averages: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(self.model.weight.item())
        self.averages.append(self.trainer.ema.averages()["weight"].item())


def test_average_after_three_steps_matches_the_hand_computed_numbers():
    # loss = w**2 on x=1, y=0, so SGD(lr=0.1) gives w <- 0.8 w: 0.8, 0.64, 0.512.
    # Keras's EMA: the first step copies, then a <- 0.5 a + 0.5 w: 0.8, 0.72, 0.616.
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), "mse", ema_momentum=0.5)
    recorder = WeightRecorder()
    trainer.fit(
        torch.ones(3, 1), torch.zeros(3, 1), batch_size=1, shuffle=False, verbose=0,
        callbacks=[recorder],
    )  # fmt: skip
    assert recorder.weights == pytest.approx([0.8, 0.64, 0.512])
    assert recorder.averages == pytest.approx([0.8, 0.72, 0.616])
    assert model.weight.item() == pytest.approx(0.616)  # fit ends with the average copied in
    assert trainer.ema.updates == 3


def test_average_is_updated_after_each_optimizer_step_not_each_batch():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), "mse", ema_momentum=0.5,
        accumulate_grad_batches=2,
    )  # fmt: skip
    # Two steps, each on the mean gradient of two batches: w <- 0.8 w twice.
    trainer.fit(torch.ones(4, 1), torch.zeros(4, 1), batch_size=1, shuffle=False, verbose=0)
    assert trainer.ema.updates == 2
    assert model.weight.item() == pytest.approx(0.5 * 0.8 + 0.5 * 0.64)


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3


def _trainer(momentum: float = 0.9) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), "mse",
                   ema_momentum=momentum)  # fmt: skip


def _mse_with(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.nn.functional.mse_loss(x @ weights["weight"].T + weights["bias"], y).item()


class ValidationOnAverages(Callback):
    """At each epoch end: the loss of the EMA weights on the validation data, by hand."""

    def __init__(self, validation: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.validation = validation
        self.expected: list[float] = []
        self.reported: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.expected.append(_mse_with(self.trainer.ema.averages(), *self.validation))
        self.reported.append(logs["val_loss"])


def test_swap_ema_weights_validates_on_the_averages():
    train, validation = _data(0), _data(1)
    trainer = _trainer()
    check = ValidationOnAverages(validation)
    trainer.fit(
        *train, batch_size=8, epochs=3, verbose=0, validation_data=validation,
        callbacks=[SwapEMAWeights(), check],
    )  # fmt: skip
    assert check.reported == pytest.approx(check.expected, rel=1e-5)
    # As in Keras: the last val_loss is what evaluate() gives after fit.
    assert check.reported[-1] == pytest.approx(trainer.evaluate(*validation, verbose=0), rel=1e-5)

    without = _trainer()
    history = without.fit(*train, batch_size=8, epochs=3, verbose=0, validation_data=validation)
    assert history.history["val_loss"][-1] != pytest.approx(
        without.evaluate(*validation, verbose=0), rel=1e-3
    )


def test_evaluate_and_predict_use_the_averages_and_then_put_the_weights_back():
    train, validation = _data(0), _data(1)
    trainer = _trainer()
    model = trainer.model
    trainer.fit(*train, batch_size=8, epochs=2, verbose=0)
    with torch.no_grad():  # the module moves on from the averages (as more training would)
        model.weight.add_(1.0)
    training_weight = model.weight.detach().clone()
    averages = {name: value.clone() for name, value in trainer.ema.averages().items()}

    loss = trainer.evaluate(*validation, verbose=0, callbacks=[SwapEMAWeights()])
    assert loss == pytest.approx(_mse_with(averages, *validation), rel=1e-5)
    assert torch.equal(model.weight, training_weight)

    predictions = trainer.predict(validation[0], verbose=0, callbacks=[SwapEMAWeights()])
    expected = validation[0] @ averages["weight"].T + averages["bias"]
    torch.testing.assert_close(predictions, expected)
    assert torch.equal(model.weight, training_weight)  # Keras 3 leaves the averages in


class AveragesAtEpochEnd(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.saved: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.saved.append({k: v.clone() for k, v in self.trainer.ema.averages().items()})


def test_swap_on_epoch_checkpoints_hold_the_averages_and_training_goes_on(tmp_path):
    train = _data(0)
    recorder = AveragesAtEpochEnd()
    trainer = _trainer()
    checkpoint = ModelCheckpoint(str(tmp_path / "{epoch}.pt"), save_weights_only=True)
    trainer.fit(
        *train, batch_size=8, epochs=3, verbose=0,
        callbacks=[SwapEMAWeights(swap_on_epoch=True), checkpoint, recorder],
    )  # fmt: skip
    for epoch, averages in enumerate(recorder.saved, start=1):
        saved = torch.load(tmp_path / f"{epoch}.pt", weights_only=True)
        torch.testing.assert_close(dict(saved), averages)
    final = trainer.model.state_dict()
    torch.testing.assert_close(dict(torch.load(tmp_path / "3.pt", weights_only=True)), final)

    plain = _trainer()
    plain.fit(*train, batch_size=8, epochs=3, verbose=0)  # no swapping: the same training
    torch.testing.assert_close(plain.model.state_dict(), final)


@pytest.mark.parametrize(("swap_on_epoch", "suffix"), [(False, "pt"), (True, "pt"), (True, "h5")])
def test_resume_from_a_full_checkpoint_is_exact(tmp_path, swap_on_epoch, suffix):
    train = _data(0)
    callbacks = [SwapEMAWeights(swap_on_epoch=True)] if swap_on_epoch else []
    full = ModelCheckpoint(str(tmp_path / f"{{epoch}}.{suffix}"), save_weights_only=False)
    straight = _trainer()
    straight.fit(*train, batch_size=8, epochs=4, verbose=0, callbacks=[*callbacks, full])

    resumed = _trainer()
    callbacks = [SwapEMAWeights(swap_on_epoch=True)] if swap_on_epoch else []
    resumed.fit(
        *train, batch_size=8, epochs=4, verbose=0, callbacks=callbacks,
        resume_from=str(tmp_path / f"2.{suffix}"),
    )  # fmt: skip
    assert resumed.ema.updates == straight.ema.updates == 16
    torch.testing.assert_close(resumed.model.state_dict(), straight.model.state_dict())
    torch.testing.assert_close(resumed.ema.averages(), straight.ema.averages())


class BatchCounter(Callback):
    batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class RaiseAt(Callback):
    def __init__(self, global_batch: int) -> None:
        super().__init__()
        self.global_batch = global_batch

    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_train_batch == self.global_batch:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("save_freq", ["epoch", 3])
def test_backup_and_restore_continues_the_average_exactly(tmp_path, save_freq):
    train = _data(0)

    def run(*extra: Callback) -> Trainer:
        trainer = _trainer()
        callbacks = [
            SwapEMAWeights(swap_on_epoch=True),
            BackupAndRestore(str(tmp_path / f"backup-{save_freq}"), save_freq=save_freq),
        ]
        trainer.fit(*train, batch_size=8, epochs=4, verbose=0, callbacks=[*callbacks, *extra])
        return trainer

    straight = _trainer()
    straight.fit(*train, batch_size=8, epochs=4, verbose=0)
    with pytest.raises(RuntimeError, match="interrupted"):
        run(RaiseAt(10))  # in the third epoch, after backups with the averages swapped in
    counter = BatchCounter()
    resumed = run(counter)
    assert 0 < counter.batches < 16  # it resumed rather than started again
    assert resumed.ema.updates == straight.ema.updates == 16
    torch.testing.assert_close(resumed.model.state_dict(), straight.model.state_dict())
    torch.testing.assert_close(resumed.ema.averages(), straight.ema.averages())


def test_swap_ema_weights_without_ema_and_a_bad_momentum_raise():
    model = torch.nn.Linear(3, 1)
    trainer = Trainer(model, "sgd", "mse")
    with pytest.raises(ValueError, match="SwapEMAWeights must be used when `ema_momentum` is set"):
        trainer.fit(*_data(0), verbose=0, callbacks=[SwapEMAWeights()])
    with pytest.raises(ValueError, match=r"ema_momentum must be a float in \[0, 1\]"):
        Trainer(model, "sgd", "mse", ema_momentum=1.5)


def test_steps_a_grad_scaler_skips_are_not_averaged_in():
    x, y = torch.randn(96, 8), torch.randint(0, 2, (96,))
    model = _fresh()
    before = [[p.detach().clone() for p in model.parameters()]]
    trainer = Trainer(model, "sgd", "cross_entropy", precision="16-mixed", ema_momentum=0.5)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)  # overflows at first
    weights = []

    class Record(Callback):
        def on_train_batch_end(self, batch, logs=None):
            weights.append([p.detach().clone() for p in model.parameters()])

    trainer.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[Record()])
    # A skipped step leaves the weights as they were: average the others by hand.
    taken = [now for old, now in zip(before + weights, weights) if not _same(old, now)]
    assert 0 < len(taken) < len(weights)  # some steps were skipped, others taken
    assert trainer.ema.updates == len(taken)
    expected = taken[0]
    for now in taken[1:]:
        expected = [0.5 * a + 0.5 * w for a, w in zip(expected, now)]
    torch.testing.assert_close(list(trainer.ema.averages().values()), expected)


def _fresh() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _same(old: list[torch.Tensor], new: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(old, new))


DDP_SCRIPT = """
import sys, torch
from torchcallbacks import SwapEMAWeights, Trainer

torch.manual_seed(0)
x = torch.randn(64, 3)
y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
model = torch.nn.Linear(3, 1)
trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), "mse", device="cpu",
                  ema_momentum=0.9)
history = trainer.fit(x, y, batch_size=16 // trainer.world_size, epochs=3, shuffle=False,
                      verbose=0,
                      validation_data=(x, y), callbacks=[SwapEMAWeights()])
torch.save({"averages": trainer.ema.averages(), "val_loss": history.history["val_loss"],
            "updates": trainer.ema.updates}, f"{sys.argv[1]}/rank{trainer.rank}.pt")
"""


def test_under_torchrun_every_rank_keeps_the_single_process_average(tmp_path):
    script = tmp_path / "ema_ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TORCHCALLBACKS_DIST_TIMEOUT="60")
    runs = {"single": [sys.executable], "ddp": [sys.executable, "-m", "torch.distributed.run",
            "--standalone", "--nproc_per_node=2"]}  # fmt: skip
    for name, launcher in runs.items():
        (tmp_path / name).mkdir()
        done = subprocess.run(
            [*launcher, str(script), str(tmp_path / name)],
            capture_output=True, text=True, timeout=180, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    single = torch.load(tmp_path / "single" / "rank0.pt")
    for rank in (0, 1):  # batches of 8 per rank: DDP takes the single process's steps
        ddp = torch.load(tmp_path / "ddp" / f"rank{rank}.pt")
        assert ddp["updates"] == single["updates"] == 12
        torch.testing.assert_close(ddp["averages"], single["averages"])
        assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
