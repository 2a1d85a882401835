"""timm as its users bring it: timm's models (random weights, nothing downloaded), its
optimizers (``timm.optim``) and its schedulers (``timm.scheduler``), with no shim.

Marked ``vision``: timm needs torchvision, which the main test environment lacks; these run in
CI's second virtualenv (``python -m pytest -m "vision or also_vision"``).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from test_lr_callbacks import (
    BatchLRs,
    X,
    Y,
    hand_loop,
    linear_hand_loop,
    make_trainer,
    plateau_lrs,
    resumed_like_uninterrupted,
)

from torchcallbacks import LearningRateScheduler, ModelCheckpoint, Trainer, load_checkpoint

pytestmark = [pytest.mark.vision, pytest.mark.usefixtures("one_thread")]


def timm_steps(scheduler, updates: int) -> None:
    scheduler.step_update(num_updates=updates)  # what timm's train.py does after each update


def timm_epoch_end(scheduler, epoch: int) -> None:
    scheduler.step(epoch + 1)  # timm's train.py, after each epoch


def cosine(optimizer, per_update: bool):
    """timm's cosine schedule with a warm-up: over 3 epochs, or over the 9 optimizer steps
    of 3 epochs of 3 steps."""
    from timm.scheduler import CosineLRScheduler

    length = 9 if per_update else 3
    return CosineLRScheduler(
        optimizer,
        t_initial=length,
        lr_min=0.002,
        warmup_t=length // 3,
        warmup_lr_init=0.01,
        t_in_epochs=not per_update,
    )


@pytest.mark.parametrize("interval", ["epoch", "batch"])
def test_timm_cosine_schedule_gives_the_learning_rates_of_timms_own_loop(interval):
    """5 batches per epoch, gradients accumulated over 2 (3 optimizer steps per epoch)."""
    per_update = interval == "batch"

    def schedule(optimizer):
        return cosine(optimizer, per_update)

    trainer = make_trainer(accumulate_grad_batches=2)
    callback = LearningRateScheduler(schedule(trainer.optimizer), interval=interval)
    probe = BatchLRs()
    history = trainer.fit(
        X, Y, batch_size=7, epochs=3, shuffle=False, verbose=0, callbacks=[callback, probe]
    )
    lrs, weights = linear_hand_loop(
        schedule,
        epochs=3,
        batch_size=7,
        accumulate=2,
        after_update=timm_steps,
        after_epoch=timm_epoch_end,
    )
    assert probe.lrs == lrs
    assert lrs[0] == 0.01 and len(set(lrs)) == (9 if per_update else 3)  # per step or per epoch
    if per_update:  # the rate after the epoch's last step
        assert history.history["lr"] == [lrs[5], lrs[10], trainer.get_lr()]
    else:  # the rate the epoch trained with
        assert history.history["lr"] == [lrs[4], lrs[9], lrs[14]]
    torch.testing.assert_close(trainer.model.state_dict(), weights, rtol=0, atol=0)


def test_a_fit_from_initial_epoch_trains_with_that_epochs_rate_as_timms_loop():
    """timm's train.py starting at start_epoch > 0 calls step(start_epoch) first."""
    trainer = make_trainer()
    schedule = cosine(trainer.optimizer, per_update=False)
    probe = BatchLRs()
    trainer.fit(
        X, Y, batch_size=7, epochs=3, initial_epoch=1, shuffle=False, verbose=0,
        callbacks=[LearningRateScheduler(schedule), probe],
    )  # fmt: skip
    expected = cosine(make_trainer().optimizer, per_update=False)
    rates = []
    for epoch in (1, 2):
        expected.step(epoch)
        rates.append(expected.optimizer.param_groups[0]["lr"])
    assert probe.lrs == [rates[0]] * 5 + [rates[1]] * 5  # 5 batches per epoch
    assert rates[0] != 0.01  # not the warm-up's first rate


@pytest.mark.parametrize("interval", ["epoch", "batch"])
def test_timm_scheduler_resumes_exactly_from_a_backup(interval, tmp_path):
    from timm.scheduler import CosineLRScheduler

    def make():
        trainer = make_trainer()
        length = 12 if interval == "batch" else 3  # 3 epochs of 4 batches
        schedule = CosineLRScheduler(
            trainer.optimizer, t_initial=length, lr_min=0.002, t_in_epochs=interval == "epoch"
        )
        return trainer, schedule

    resumed_like_uninterrupted(make, tmp_path, interval)


def test_timm_plateau_scheduler_gets_the_monitored_value():
    from timm.scheduler import PlateauLRScheduler

    def plateau(optimizer):
        with pytest.warns(FutureWarning, match="deprecated"):  # by timm
            return PlateauLRScheduler(optimizer, decay_rate=0.5, patience_t=1, mode="min")

    lrs, expected = plateau_lrs(
        plateau, lambda scheduler, epoch, value: scheduler.step(epoch + 1, value)
    )
    assert lrs == expected
    assert expected[-1] < 0.1


def test_a_timm_scheduler_stepped_by_calls_timm_ignores_is_refused():
    from timm.scheduler import CosineLRScheduler, PlateauLRScheduler

    trainer = make_trainer()
    per_epoch = CosineLRScheduler(trainer.optimizer, t_initial=3)
    with pytest.raises(ValueError, match="t_in_epochs=True .* Use interval='epoch'"):
        LearningRateScheduler(per_epoch, interval="batch")
    per_update = CosineLRScheduler(trainer.optimizer, t_initial=30, t_in_epochs=False)
    with pytest.raises(ValueError, match="t_in_epochs=False: .* Pass interval='batch'"):
        LearningRateScheduler(per_update)
    with pytest.warns(FutureWarning):
        plateau = PlateauLRScheduler(trainer.optimizer)
    with pytest.raises(ValueError, match="PlateauLRScheduler was built with t_in_epochs=True"):
        LearningRateScheduler(plateau, interval="batch")


def images(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 RGB images whose class (of 3) is their brightest channel."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (samples,), generator=generator)
    x = torch.rand(samples, 3, 32, 32, generator=generator)
    x[torch.arange(samples), labels] += 0.5
    return x, labels


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_a_timm_model_with_timms_optimizer_and_scheduler_trains_as_timms_loop(name, tmp_path):
    """timm's Lamb optimizer and its cosine schedule per update from its factories; the
    Trainer ends with the weights of timm's loop, and its checkpoint reloads."""
    import timm
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    torch.manual_seed(0)
    options = {"img_size": 32} if name == "test_vit" else {}
    model = timm.create_model(name, pretrained=False, num_classes=3, **options)
    reference = copy.deepcopy(model)
    x, y = images(32, seed=0)

    def optimizer_and_scheduler(module):
        optimizer = create_optimizer_v2(module, "lamb", lr=5e-3, weight_decay=0.05)
        scheduler, _ = create_scheduler_v2(
            optimizer, "cosine", num_epochs=2, warmup_epochs=1, warmup_lr=1e-4,
            step_on_epochs=False, updates_per_epoch=4,
        )  # fmt: skip
        return optimizer, scheduler

    optimizer, scheduler = optimizer_and_scheduler(model)
    trainer = Trainer(model, optimizer, "cross_entropy", metrics=["accuracy"])
    checkpoint = ModelCheckpoint(tmp_path / "last.pt")
    history = trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[LearningRateScheduler(scheduler, interval="batch"), checkpoint],
    )
    assert history.history["lr"][0] > history.history["lr"][1]  # decaying after the warm-up

    optimizer, scheduler = optimizer_and_scheduler(reference)
    batches = list(zip(x.split(8), y.split(8)))
    hand_loop(
        reference,
        optimizer,
        scheduler,
        batches,
        epochs=2,
        loss=torch.nn.functional.cross_entropy,
        after_update=timm_steps,
        after_epoch=timm_epoch_end,
    )
    torch.testing.assert_close(model.state_dict(), reference.state_dict())

    fresh = timm.create_model(name, pretrained=False, num_classes=3, **options)
    state = load_checkpoint(tmp_path / "last.pt", model=fresh)
    assert state["epoch"] == 1
    torch.testing.assert_close(Trainer(fresh).predict(x, verbose=0), trainer.predict(x, verbose=0))


def test_the_documented_timm_example_runs_and_prints_what_it_says(tmp_path, monkeypatch, capsys):
    page = Path(__file__).resolve().parents[1] / "docs" / "callbacks" / "learning_rate_scheduler.md"
    section = page.read_text().split("\n## timm schedulers\n", 1)[1]
    block = re.search(r"^```py\n(.*?)^```", section, re.DOTALL | re.MULTILINE).group(1)
    monkeypatch.chdir(tmp_path)
    code = compile(block, f"{page.name}, the timm example", "exec")
    exec(code, {"__name__": "__docs__"})  # noqa: S102 - the documented code, run as a user would
    printed = capsys.readouterr().out
    claims = re.findall(r"^# Prints: (.*)$", block, re.MULTILINE)
    assert claims and all(claim in printed for claim in claims), printed
