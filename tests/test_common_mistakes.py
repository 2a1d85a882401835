"""The mistakes of docs/common_mistakes.md, made on purpose: each gets an error or a warning
that names the problem and the fix, and a load that fails changes nothing (model,
optimizer, scaler, EMA)."""

from __future__ import annotations

import io
import json
import os
import warnings

import h5py
import pytest
import torch

from torchcallbacks import (
    BackupAndRestore,
    Callback,
    CheckpointFileError,
    Trainer,
    load_checkpoint,
)
from torchcallbacks.checkpoints.files import save_checkpoint


# -- helpers ---------------------------------------------------------------------------------
def net(seed: int = 0, out: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, out))


def data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def snapshot(*objects) -> list:
    """Deep copies of the objects' state_dicts (tensors cloned), to compare after a load."""
    return [_copy(o.state_dict()) for o in objects]


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    return value


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def adam_checkpoint(path, **trainer_options) -> str:
    """A full checkpoint of a net trained one epoch with Adam."""
    trainer = Trainer(net(5), "adam", "cross_entropy", device="cpu", **trainer_options)
    trainer.fit(*data(), epochs=1, verbose=0)
    trainer.save(str(path))
    return str(path)


class Batches(Callback):
    """Counts the training batches run (to show that an error came before any)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1


# -- 1. a checkpoint of another optimizer --------------------------------------------------------
@pytest.mark.parametrize("suffix", ["pt", "h5"])
def test_loading_another_optimizers_state_raises_and_changes_nothing(tmp_path, suffix):
    path = adam_checkpoint(tmp_path / f"adam.{suffix}")
    model = net(1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = snapshot(model, sgd)
    with pytest.raises(CheckpointFileError) as caught:
        load_checkpoint(path, model, optimizer=sgd)
    message = str(caught.value)
    assert path in message and "written by Adam" in message and "the SGD" in message, message
    assert equal(snapshot(model, sgd), before)
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["momentum"] == 0.9
    load_checkpoint(path, model)  # the weights alone still load


def test_resume_from_another_optimizers_checkpoint_raises_and_changes_nothing(tmp_path):
    path = adam_checkpoint(tmp_path / "adam.pt")
    model = net(1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      "cross_entropy", device="cpu")  # fmt: skip
    before = snapshot(model, trainer.optimizer)
    counter = Batches()
    with pytest.raises(CheckpointFileError, match=r"adam\.pt.*written by Adam.*the SGD"):
        trainer.fit(*data(), epochs=2, verbose=0, resume_from=path, callbacks=[counter])
    assert equal(snapshot(model, trainer.optimizer), before)
    assert counter.count == 0


def test_a_backup_of_another_optimizer_raises_naming_it_and_changes_nothing(tmp_path):
    backup = tmp_path / "backup"
    first = Trainer(net(5), "adam", "cross_entropy", device="cpu")
    first.fit(*data(), epochs=1, verbose=0,
              callbacks=[BackupAndRestore(str(backup), delete_checkpoint=False)])  # fmt: skip
    model = net(1)
    trainer = Trainer(model, "rmsprop", "cross_entropy", device="cpu")
    before = snapshot(model, trainer.optimizer)
    with pytest.raises(CheckpointFileError, match=r"latest\.pt.*written by Adam.*the RMSprop"):
        trainer.fit(*data(), epochs=2, verbose=0, callbacks=[BackupAndRestore(str(backup))])
    assert equal(snapshot(model, trainer.optimizer), before)


def test_a_file_written_before_the_class_was_recorded_is_judged_by_its_hyperparameters(tmp_path):
    path = adam_checkpoint(tmp_path / "adam.pt")
    state = torch.load(path, weights_only=True)
    assert state["optimizer_class"] == "Adam"
    del state["optimizer_class"]  # as files written by torchcallbacks 0.1 are
    save_checkpoint(tmp_path / "old.pt", state)
    model = net(1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    before = snapshot(model, sgd)
    with pytest.raises(CheckpointFileError, match=r"old\.pt.*written by Adam.*the SGD"):
        load_checkpoint(tmp_path / "old.pt", model, sgd)
    assert equal(snapshot(model, sgd), before)
    adam = torch.optim.Adam(model.parameters())
    load_checkpoint(tmp_path / "old.pt", model, adam)  # the same class loads
    assert equal(adam.state_dict()["state"], state["optimizer"]["state"])


class Scaled(torch.optim.Optimizer):
    """An optimizer of the user's own, with a hyper-parameter no torch optimizer has."""

    def __init__(self, params, lr=0.1, scale=2.0):
        super().__init__(params, {"lr": lr, "scale": scale})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    parameter.add_(parameter.grad, alpha=-group["lr"] * group["scale"])


def test_an_old_file_of_an_own_optimizer_is_judged_by_its_hyperparameters(tmp_path):
    model = net(5)
    optimizer = Scaled(model.parameters())
    torch.optim.lr_scheduler.StepLR(optimizer, 1)  # adds "initial_lr" to the groups
    state = {"format": "torchcallbacks.checkpoint", "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "epoch": 0}  # fmt: skip
    save_checkpoint(tmp_path / "old.pt", state)  # no optimizer_class, as in older files
    model = net(1)
    own = Scaled(model.parameters())
    load_checkpoint(tmp_path / "old.pt", model, own)  # the same optimizer loads
    assert own.param_groups[0]["initial_lr"] == 0.1
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    before = snapshot(model, sgd)
    with pytest.raises(CheckpointFileError, match=r"\['scale'\], unknown to this optimizer"):
        load_checkpoint(tmp_path / "old.pt", model, sgd)
    assert equal(snapshot(model, sgd), before)


def test_other_parameter_groups_are_refused_before_anything_is_written(tmp_path):
    path = adam_checkpoint(tmp_path / "adam.pt")
    model = net(1)
    grouped = torch.optim.Adam(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.1}]
    )
    before = snapshot(model, grouped)
    with pytest.raises(CheckpointFileError, match=r"1 parameter group\(s\) in the file, 2 in"):
        load_checkpoint(path, model, grouped)
    assert equal(snapshot(model, grouped), before)


def test_a_mismatched_ema_leaves_the_model_and_the_average_unchanged(tmp_path):
    path = adam_checkpoint(tmp_path / "ema.pt", ema_momentum=0.9)
    model = net(1)
    for parameter in model[0].parameters():  # frozen in the rerun: the EMA averages fewer
        parameter.requires_grad_(False)
    trainer = Trainer(model, "adam", "cross_entropy", device="cpu", ema_momentum=0.9)
    trainer.fit(*data(), epochs=1, verbose=0)
    before = snapshot(model, trainer.optimizer, trainer.ema)
    with pytest.raises(CheckpointFileError, match=r"ema\.pt.*EMA does not match"):
        trainer.fit(*data(), epochs=2, verbose=0, resume_from=path)
    assert equal(snapshot(model, trainer.optimizer, trainer.ema), before)


def test_a_sharded_checkpoint_of_another_optimizer_leaves_a_plain_module_unchanged(tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    source = net(5)
    adam = torch.optim.Adam(source.parameters())
    state = {
        "model": get_model_state_dict(source),
        "optimizer": get_optimizer_state_dict(source, adam),
    }
    folder = tmp_path / "sharded"
    with pytest.warns(UserWarning, match="single process"):
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    save_checkpoint(folder / "state.pt", {"format": "torchcallbacks.checkpoint",
                                          "optimizer_class": "Adam", "epoch": 0})  # fmt: skip
    for optimizer_class in (torch.optim.SGD, torch.optim.AdamW):
        model = net(1)
        optimizer = optimizer_class(model.parameters(), lr=0.1)
        before = snapshot(model, optimizer)
        with pytest.raises(CheckpointFileError, match="sharded.*written by Adam"):
            load_checkpoint(folder, model, optimizer)
        assert equal(snapshot(model, optimizer), before)
    # Another architecture: DCP loads in place, and reading the optimizer's state creates it.
    model = net(1, out=2)
    adam = torch.optim.Adam(model.parameters())
    before = snapshot(model, adam)
    with pytest.raises(CheckpointFileError, match="Size mismatch.*Nothing was changed"):
        load_checkpoint(folder, model, adam)
    assert equal(snapshot(model, adam), before) and not adam.state


# -- 4. errors with context ------------------------------------------------------------------
def test_resuming_another_architecture_names_the_file(tmp_path):
    path = adam_checkpoint(tmp_path / "other.pt")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    trainer = Trainer(model, "adam", "cross_entropy", device="cpu")
    before = snapshot(model)
    with pytest.raises(CheckpointFileError, match=r"other\.pt.*does not match Sequential"):
        trainer.fit(*data(), verbose=0, resume_from=path)
    assert equal(snapshot(model), before)


def test_an_hdf5_file_naming_a_torch_function_as_dtype_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "crafted.h5"
    weights = {"weight": torch.zeros(2, 2, dtype=torch.bfloat16)}
    from torchcallbacks.checkpoints.files import save_state_dict

    save_state_dict(weights, path)
    with h5py.File(path, "r+") as file:
        file["model_weights"]["weight"].attrs["torch_dtype"] = "load"  # torch.load, a function
    with pytest.raises(CheckpointFileError, match=r"crafted\.h5.*torch_dtype 'load'"):
        load_checkpoint(path)
    assert json.loads(h5py.File(path, "r").attrs["format"]) == "torchcallbacks.weights"
    assert os.path.exists(path)


@pytest.mark.parametrize("loss", ["cross_entropy", "sparse_categorical_crossentropy"])
def test_a_class_label_out_of_range_names_the_loss_the_label_and_the_class_count(loss):
    x, y = data()
    y[7] = 5  # the model has 3 outputs
    model = torch.nn.Sequential(net(), torch.nn.Softmax(-1)) if loss.startswith("sparse") else net()
    trainer = Trainer(model, "adam", loss, device="cpu")
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"'{loss}'.*class label 5.*3 classes.*0 to 2") as caught:
        trainer.fit(x, y, batch_size=64, verbose=0)
    assert "6 or more" in str(caught.value)
    assert equal(snapshot(model), before)
    y[7] = -1
    with pytest.raises(ValueError, match="class label -1.*Negative labels"):
        trainer.fit(x, y, batch_size=64, verbose=0)


def test_class_targets_of_a_dtype_cross_entropy_refuses_name_the_cast_to_make():
    x, y = data()
    model = net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'cross_entropy'.*Float.*must be integers.*y\.long\(\)"):
        Trainer(model, "adam", "cross_entropy", device="cpu").fit(x, y.double().numpy(), verbose=0)
    one_hot = torch.nn.functional.one_hot(y, 3)  # integers, as Keras's to_categorical is not
    with pytest.raises(ValueError, match=r"One-hot targets must be floats, y\.float\(\)"):
        Trainer(model, "adam", "cross_entropy", device="cpu").fit(x, one_hot, verbose=0)
    assert equal(snapshot(model), before)


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.score = torch.nn.Linear(4, 1)
        self.kind = torch.nn.Linear(4, 3)

    def forward(self, x):
        return {"score": self.score(x), "kind": self.kind(x)}


def test_tuple_targets_for_dict_outputs_name_the_output_keys():
    x, y = data()
    trainer = Trainer(TwoHeads(), "adam", {"score": "mse", "kind": "cross_entropy"}, device="cpu")
    with pytest.raises(ValueError, match=r"outputs \['score', 'kind'\].*targets are a tuple"):
        trainer.fit(x, (torch.randn(32, 1), y), verbose=0)
    with pytest.raises(ValueError, match=r"a dict without \['kind'\]"):
        trainer.fit(x, {"score": torch.randn(32, 1), "label": y}, verbose=0)
    history = trainer.fit(x, {"score": torch.randn(32, 1), "kind": y}, verbose=0)
    assert set(history.history) == {"loss", "score_loss", "kind_loss"}


# -- 2. arguments checked before training -----------------------------------------------------
def test_an_optimizer_of_another_module_is_refused_before_training():
    model, other = net(0), net(1)
    trainer = Trainer(model, torch.optim.SGD(other.parameters(), lr=0.1), "cross_entropy")
    counter = Batches()
    with pytest.raises(ValueError, match=r"optimizer \(SGD\) holds none of the trainable"):
        trainer.fit(*data(), verbose=0, callbacks=[counter])
    assert counter.count == 0


def test_an_optimizer_of_some_parameters_trains_them_and_frozen_layers_stay():
    model = net(0)
    model[0].requires_grad_(False)
    frozen = snapshot(model[0])
    trainer = Trainer(model, torch.optim.SGD(model[2].parameters(), lr=0.1), "cross_entropy")
    before = snapshot(model[2])
    trainer.fit(*data(), verbose=0)
    assert equal(snapshot(model[0]), frozen) and not equal(snapshot(model[2]), before)


def test_a_module_with_nothing_trainable_is_refused():
    model = net(0).requires_grad_(False)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), "cross_entropy")
    with pytest.raises(ValueError, match="no trainable parameter.*requires_grad"):
        trainer.fit(*data(), verbose=0)


def test_a_lightning_optimizer_of_another_module_is_refused():
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 3)
            self.stray = [torch.nn.Linear(4, 3)]  # not a submodule

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.stray[0].parameters())

    with pytest.raises(ValueError, match=r"optimizer \(Adam\) holds none"):
        Trainer(Module()).fit(*data(), verbose=0)


def loader(batch_size: int = 16) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data()), batch_size)


def test_batch_size_with_a_dataloader_warns_that_it_is_not_used():
    trainer = Trainer(net(), "adam", "cross_entropy", device="cpu")
    with pytest.warns(UserWarning, match=r"batch_size=128 is not used: x is a DataLoader.*of 16"):
        trainer.fit(loader(), batch_size=128, verbose=0)
    with pytest.warns(UserWarning, match=r"validation_batch_size=64 is not used: validation_data"):
        trainer.fit(loader(), validation_data=loader(), validation_batch_size=64, verbose=0)
    for call in (trainer.evaluate, trainer.predict):
        with pytest.warns(UserWarning, match="batch_size=8 is not used"):
            call(loader(), batch_size=8, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = trainer.fit(loader(), verbose=0)  # the default: no warning
        trainer.fit(torch.utils.data.TensorDataset(*data()), batch_size=8, verbose=0)
    assert history.epoch == [0]


def test_batch_size_with_a_data_module_warns_that_it_is_not_used():
    class Data:
        def train_dataloader(self):
            return loader()

    trainer = Trainer(net(), "adam", "cross_entropy", device="cpu")
    with pytest.warns(UserWarning, match="batch_size=4 is not used: x is a Data, which makes"):
        trainer.fit(Data(), batch_size=4, verbose=0)


# -- 3. monitors ------------------------------------------------------------------------------
def test_a_monitor_missing_from_the_logs_warns_once_with_the_closest_name(tmp_path):
    from torchcallbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau

    callbacks = [
        EarlyStopping(monitor="val_acc", patience=5),
        ReduceLROnPlateau(monitor="val_acc"),
        ModelCheckpoint(str(tmp_path / "best.pt"), monitor="val_acc", save_best_only=True),
    ]
    trainer = Trainer(net(), "adam", "cross_entropy", ["accuracy"], device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(*data(), epochs=3, validation_split=0.25, verbose=0, callbacks=callbacks)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3, messages  # once per fit and callback
    assert all(m.endswith("Did you mean 'val_accuracy'?") for m in messages), messages
    assert messages[0].startswith("Early stopping conditioned on metric `val_acc` which is not")
    assert messages[2].startswith("Can save best model only with val_acc available, skipping.")
    assert not os.path.exists(tmp_path / "best.pt")


def test_monitoring_accuracy_without_metrics_says_to_pass_them(tmp_path):
    from torchcallbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(tmp_path / "best.pt", monitor="val_accuracy", save_best_only=True)
    trainer = Trainer(net(), "adam", "cross_entropy", device="cpu")  # metrics= forgotten
    with pytest.warns(UserWarning, match=r"computes no 'accuracy': pass metrics=\['accuracy'\]"):
        trainer.fit(*data(), epochs=2, validation_split=0.25, verbose=0, callbacks=[checkpoint])


def test_a_misspelt_monitor_is_refused_with_the_name_not_a_mode():
    from torchcallbacks import EarlyStopping

    trainer = Trainer(net(), "adam", "cross_entropy", ["accuracy"], device="cpu")
    counter = Batches()
    with pytest.raises(ValueError, match="looks misspelled.*Did you mean 'val_loss'") as caught:
        trainer.fit(*data(), validation_split=0.25, verbose=0,
                    callbacks=[EarlyStopping(monitor="val_los"), counter])  # fmt: skip
    assert "mode=" not in str(caught.value) and counter.count == 0
    with pytest.raises(ValueError, match="pass `mode='min'`.*Note that 'score' is not a metric"):
        trainer.fit(*data(), verbose=0, callbacks=[EarlyStopping(monitor="score")])


# -- 5. interrupts that talk ------------------------------------------------------------------
INTERRUPTED_RUN = """
import sys, torch
from torchcallbacks import BackupAndRestore, Callback, Trainer

class WaitForSignal(Callback):
    # After global batch 14: say so, then wait until the test has sent its signal.
    def on_train_batch_end(self, batch, logs=None):
        if self.trainer.global_train_batch == 14:
            print("READY", flush=True)
            sys.stdin.readline()

torch.manual_seed(0)
x, y = torch.randn(80, 4), torch.randn(80, 1)
trainer = Trainer(torch.nn.Linear(4, 1), "sgd", "mse", device="cpu")
callbacks = [WaitForSignal(), BackupAndRestore(sys.argv[1], save_freq=4)]
trainer.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
"""


def test_an_interrupt_says_where_the_backup_is_and_the_rerun_where_it_resumes(tmp_path):
    """Ctrl-C, then SIGTERM in the rerun: real signals sent to a real process, as a terminal
    or a cluster's scheduler sends them."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(INTERRUPTED_RUN)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}

    def interrupted(signum: int) -> list[str]:
        run = subprocess.Popen(
            [sys.executable, str(script), "backup"], cwd=tmp_path, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        lines = []
        while (line := run.stdout.readline()) != "READY\n":
            assert line, run.communicate()[1]
            lines.append(line.rstrip("\n"))
        run.send_signal(signum)
        out, err = run.communicate("go\n", timeout=120)
        assert run.returncode == -signum, err
        return lines + out.splitlines()

    told = "The backup 'backup/latest.pt' holds {}: run the same script again to resume from there."
    # Ctrl-C after global batch 14: the last backup was made after batch 12.
    assert interrupted(signal.SIGINT) == [
        "BackupAndRestore: interrupted (Ctrl-C). " + told.format("epoch 2, batch 2")
    ]
    # The rerun resumes there; a SIGTERM after batch 14 makes one last backup, then ends it.
    assert interrupted(signal.SIGTERM) == [
        "Resuming from epoch 2, batch 2 (backup 'backup/latest.pt'): epoch 2 goes on after its "
        "first 2 batch(es).",
        "BackupAndRestore: terminated (SIGTERM). " + told.format("epoch 2, batch 4"),
    ]


class Terminal(io.StringIO):
    """A stream that says it is a terminal: the progress bar redraws in place."""

    def isatty(self) -> bool:
        return True


def test_the_bar_of_a_resumed_epoch_continues_from_its_batch(tmp_path, capsys):
    from torchcallbacks import ProgbarLogger

    class Interrupt(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.trainer.global_train_batch == 7:
                raise KeyboardInterrupt

    x, y = data()
    backup = str(tmp_path / "backup")
    trainer = Trainer(net(), "adam", "cross_entropy", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, batch_size=8, epochs=2, verbose=0,
                    callbacks=[BackupAndRestore(backup, save_freq=3), Interrupt()])  # fmt: skip
    capsys.readouterr()
    terminal = Terminal()
    callbacks = [BackupAndRestore(backup), ProgbarLogger("steps", stream=terminal)]
    trainer.fit(x, y, batch_size=8, epochs=2, verbose=1, callbacks=callbacks)
    assert capsys.readouterr().out.startswith("Resuming from epoch 2, batch 2 (backup ")
    resumed = terminal.getvalue().split("Epoch 2/2\n")[1]
    assert resumed.startswith("\r2/4 [==============>...............]"), resumed
    assert "1/4" not in resumed and resumed.rstrip().split("\r")[-1].startswith("4/4 [=====")


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_integer_images_name_the_cast_to_float(layer):
    # Keras casts inputs to float32; images kept as uint8 (MNIST's arrays) reach the model
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    first = torch.nn.Flatten() if layer == "linear" else torch.nn.Conv2d(1, 2, 3)
    model = torch.nn.Sequential(first, torch.nn.LazyLinear(3))
    model(torch.zeros(1, 1, 8, 8))  # materialise the lazy layer
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), "cross_entropy")
    with pytest.raises(TypeError, match=r"inputs of dtype torch.uint8.*x\.float\(\) / 255"):
        trainer.fit(images, torch.randint(0, 3, (16,)), epochs=1, verbose=0)
    # integer inputs a model takes as they are (token ids) still train
    ids = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    tokens = Trainer(ids, torch.optim.SGD(ids.parameters(), lr=0.1), "cross_entropy")
    tokens.fit(torch.randint(0, 10, (16, 2)), torch.randint(0, 3, (16,)), epochs=1, verbose=0)


def test_validation_split_beside_validation_data_warns_that_it_is_not_used():
    model = torch.nn.Linear(4, 3)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), "cross_entropy")
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    with pytest.warns(UserWarning, match=r"validation_split=0.2 is not used: validation_data"):
        history = trainer.fit(
            x, y, epochs=1, validation_split=0.2, validation_data=(x[:5], y[:5]), verbose=0
        )
    assert "val_loss" in history.history  # validated on validation_data, as Keras does
