"""`torch.compile`d modules: given compiled (``Trainer(torch.compile(model))``) or compiled by
the Trainer (``compile=True``), checkpoints, backups and weights files hold the original
module's keys and load into the compiled and the plain module alike."""

import os
import warnings

import pytest
import torch

from torchcallbacks import BackupAndRestore, ModelCheckpoint, Trainer, load_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile"), reason="no torch.compile")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _data():
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    return x, x.sum(1, keepdim=True)


def _keys(path):
    data = torch.load(path, weights_only=True)
    return list(data["model"] if "format" in data else data)


@pytest.mark.parametrize("how", ["torch.compile(model)", "compile=True"])
def test_checkpoints_of_a_compiled_model_load_into_the_plain_model(tmp_path, how):
    model = _model()
    plain_keys = list(model.state_dict())
    if how == "compile=True":
        trainer = Trainer(model, "sgd", "mse", device="cpu", compile=True)
    else:
        trainer = Trainer(torch.compile(model), "sgd", "mse", device="cpu")
    assert trainer.model is model  # callbacks, summaries and checkpoints see the original
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit notes inside dynamo
        trainer.fit(
            x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
            callbacks=[
                ModelCheckpoint(tmp_path / "weights.pt", monitor="loss", save_weights_only=True),
                ModelCheckpoint(tmp_path / "full.pt", monitor="loss"),
                BackupAndRestore(tmp_path / "backup", delete_checkpoint=False),
            ],
        )  # fmt: skip
        trainer.save_weights(tmp_path / "saved.pt")
        predictions = trainer.predict(x, verbose=0)
    for name in ("weights.pt", "full.pt", os.path.join("backup", "latest.pt"), "saved.pt"):
        assert _keys(tmp_path / name) == plain_keys, name

    plain = _model()  # other initial weights would not do: reset them to be sure
    torch.nn.init.zeros_(plain[0].weight)
    load_checkpoint(tmp_path / "weights.pt", plain)
    torch.testing.assert_close(plain(x).detach(), predictions, rtol=1e-5, atol=1e-6)

    compiled_again = torch.compile(_model(), backend="eager")
    load_checkpoint(tmp_path / "full.pt", compiled_again)
    torch.testing.assert_close(compiled_again(x).detach(), predictions, rtol=1e-5, atol=1e-6)


def test_resume_and_load_weights_into_a_compiled_module(tmp_path):
    x, y = _data()
    trained = Trainer(_model(), "sgd", "mse", device="cpu")
    trained.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    trained.save(tmp_path / "full.pt")
    trained.save_weights(tmp_path / "weights.pt")

    module = _model()
    loading = Trainer(torch.compile(module, backend="eager"), "sgd", "mse", device="cpu")
    loading.load_weights(tmp_path / "weights.pt")
    for a, b in zip(module.parameters(), trained.model.parameters()):
        assert torch.equal(a, b)
    resumed = Trainer(torch.compile(_model(), backend="eager"), "sgd", "mse", device="cpu")
    history = resumed.fit(
        x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, resume_from=tmp_path / "full.pt"
    )
    assert history.epoch == [1]


def test_files_with_the_compiled_prefix_load_into_the_plain_module(tmp_path):
    """Weights a compiled module wrote itself (``_orig_mod.`` keys, as torch.save of its
    state_dict and earlier versions write them) load into the plain module."""
    source = torch.compile(_model(), backend="eager")
    with torch.no_grad():
        source._orig_mod[2].bias.fill_(3.0)
    torch.save(source.state_dict(), tmp_path / "prefixed.pt")
    assert all(key.startswith("_orig_mod.") for key in _keys(tmp_path / "prefixed.pt"))

    plain = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    load_checkpoint(tmp_path / "prefixed.pt", plain)
    assert torch.equal(plain[2].bias, torch.tensor([3.0]))
    trainer = Trainer(_model(), "sgd", "mse", device="cpu")
    trainer.load_weights(tmp_path / "prefixed.pt")
    assert torch.equal(trainer.model[2].bias, torch.tensor([3.0]))


def test_summary_shows_the_original_module():
    x, _ = _data()
    compiled = Trainer(torch.compile(_model(), backend="eager"), "sgd", "mse", device="cpu")
    plain = Trainer(_model(), "sgd", "mse", device="cpu")
    text = compiled.summary(x[:2], print_fn=None)
    assert text == plain.summary(x[:2], print_fn=None)
    assert "_orig_mod" not in text and "Linear" in text


def test_a_compiled_module_with_training_step_is_trained_by_its_training_step():
    class Stepped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)
            self.steps = 0

        def forward(self, x):
            return self.fc(x)

        def training_step(self, batch, batch_idx):
            self.steps += 1
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

    module = Stepped()
    trainer = Trainer(torch.compile(module, backend="eager"), "sgd", device="cpu")
    x, y = _data()
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert module.steps == 4
