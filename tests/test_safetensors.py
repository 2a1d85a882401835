"""Weights as ``.safetensors`` files (chosen by the extension, safe to load: no pickle) in
`save_weights`, `load_weights`, `load_checkpoint` and ModelCheckpoint, and HuggingFace
``save_pretrained`` folders written by ModelCheckpoint that ``from_pretrained`` loads."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from conftest import bert_config
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
)

from torchcallbacks import CheckpointFileError, ModelCheckpoint, Trainer, load_checkpoint


def regression_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=generator)
    return x, x[:, :1] - x[:, 1:2]


def trained_trainer() -> Trainer:
    trainer = Trainer(regression_model(), "adam", "mse")
    trainer.fit(*regression_data(), epochs=2, verbose=0)
    return trainer


def test_save_weights_writes_a_safetensors_file_that_loads_back_and_predicts_the_same(tmp_path):
    trainer = trained_trainer()
    path = tmp_path / "weights.safetensors"
    trainer.save_weights(str(path))
    stored = load_file(path)  # safetensors' own loader
    assert stored.keys() == trainer.model.state_dict().keys()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(stored[key], value), key
    with safe_open(path, "pt") as file:
        assert file.metadata() == {"format": "pt"}  # what HuggingFace's loaders expect

    x, _ = regression_data()
    expected = trainer.predict(x, verbose=0)
    fresh = Trainer(
        torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    )
    fresh.load_weights(str(path))
    assert torch.equal(fresh.predict(x, verbose=0), expected)
    other = regression_model()
    state = load_checkpoint(path, other)
    assert set(state) == set(stored)
    assert torch.equal(other(x), fresh.model(x))


class TiedModel(torch.nn.Module):
    """An embedding and an output layer sharing one weight, as language models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(6, 4)
        self.output = torch.nn.Linear(4, 6, bias=False)
        self.output.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output(self.embedding(tokens))


def test_tied_weights_are_written_and_read_back(tmp_path):
    torch.manual_seed(0)
    model = TiedModel()
    Trainer(model).save_weights(str(tmp_path / "tied.safetensors"))
    fresh = TiedModel()
    Trainer(fresh).load_weights(str(tmp_path / "tied.safetensors"))
    tokens = torch.arange(6)
    assert torch.equal(fresh(tokens), model(tokens))
    assert fresh.output.weight is fresh.embedding.weight  # still tied


def test_a_file_holding_tied_weights_once_loads(tmp_path):
    # safetensors' save_model (as HuggingFace's save_pretrained) writes a tied tensor once
    from safetensors.torch import save_model

    torch.manual_seed(0)
    model = TiedModel()
    save_model(model, str(tmp_path / "model.safetensors"))
    assert len(load_file(tmp_path / "model.safetensors")) == 1
    fresh = TiedModel()
    Trainer(fresh).load_weights(str(tmp_path / "model.safetensors"))
    tokens = torch.arange(6)
    assert torch.equal(fresh(tokens), model(tokens))
    assert fresh.output.weight is fresh.embedding.weight


def test_model_checkpoint_writes_safetensors_weights_by_extension(tmp_path):
    x, y = regression_data()
    trainer = Trainer(regression_model(), "adam", "mse")
    checkpoint = ModelCheckpoint(
        str(tmp_path / "ckpt" / "{epoch:02d}.safetensors"), save_weights_only=True
    )
    trainer.fit(x, y, epochs=2, verbose=0, callbacks=[checkpoint])
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["01.safetensors", "02.safetensors"]
    final = load_file(tmp_path / "ckpt" / "02.safetensors")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(final[key], value), key


def test_a_full_checkpoint_cannot_be_a_safetensors_file(tmp_path):
    with pytest.raises(ValueError, match="holds weights only.*save_weights_only=True"):
        ModelCheckpoint(str(tmp_path / "{epoch}.safetensors"))  # a full checkpoint by default
    trainer = trained_trainer()
    with pytest.raises(ValueError, match=r"\.pt or \.h5"):
        trainer.save(str(tmp_path / "full.safetensors"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="holds weights only"):
        trainer.fit(*regression_data(), epochs=1, verbose=0, resume_from=_weights(tmp_path))


def _weights(folder) -> str:
    path = str(folder / "w.safetensors")
    trained_trainer().save_weights(path)
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (None, "truncated or damaged safetensors"),  # cut in its tensor bytes
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "truncated or damaged safetensors"),
        (b"PK\x03\x04 a torch.save file renamed", "is not a safetensors file"),
    ],
)
def test_a_damaged_safetensors_file_raises_an_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "w.safetensors"
    if content is None:
        trained_trainer().save_weights(str(path))
        content = path.read_bytes()[:-10]
    path.write_bytes(content)
    model = regression_model()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(CheckpointFileError, match=problem) as caught:
        Trainer(model).load_weights(str(path))
    assert caught.value.path == str(path)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))  # untouched


class WithExtraState(torch.nn.Linear):
    """A module whose state_dict holds a non-tensor entry."""

    def get_extra_state(self) -> dict:
        return {"note": "not a tensor"}

    def set_extra_state(self, state: dict) -> None:
        pass


def test_a_state_that_is_not_only_tensors_is_refused_and_the_old_file_kept(tmp_path):
    path = tmp_path / "w.safetensors"
    trainer = trained_trainer()
    trainer.save_weights(str(path))
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"'_extra_state' is a dict.*\.pt path"):
        Trainer(WithExtraState(2, 2)).save_weights(str(path))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]  # no temporary file left


def test_without_safetensors_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[safetensors\]"'):
        ModelCheckpoint(str(tmp_path / "w.safetensors"), save_weights_only=True)
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[safetensors\]"'):
        Trainer(regression_model()).save_weights(str(tmp_path / "w.safetensors"))


# -- HuggingFace save_pretrained folders -------------------------------------------------------
def bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config())


def sentences() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (24, 6), generator=generator)
    return [{"input_ids": row, "labels": int(row[0] < 16)} for row in ids]


def test_model_checkpoint_writes_save_pretrained_folders_that_from_pretrained_loads(tmp_path):
    model = bert()
    trainer = Trainer(model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2))
    loader = torch.utils.data.DataLoader(sentences(), batch_size=8)
    last = ModelCheckpoint(  # rewritten at every epoch end
        str(tmp_path / "last" / "bert"), save_weights_only=True, save_pretrained=True
    )
    best = ModelCheckpoint(
        str(tmp_path / "best" / "epoch-{epoch:02d}"),
        monitor="loss",
        save_top_k=1,
        save_weights_only=True,
        save_pretrained=True,
    )
    history = trainer.fit(loader, epochs=3, verbose=0, callbacks=[last, best])

    folder = tmp_path / "last" / "bert"
    assert os.listdir(tmp_path / "last") == ["bert"]  # no partial or old folder left
    assert {"config.json", "model.safetensors"} <= set(os.listdir(folder))
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert type(loaded) is BertForSequenceClassification
    expected = trainer.predict(loader, verbose=0)
    assert torch.equal(Trainer(loaded).predict(loader, verbose=0), expected)

    best_epoch = min(range(3), key=lambda e: history.history["loss"][e])
    assert os.listdir(tmp_path / "best") == [f"epoch-{best_epoch + 1:02d}"]  # the top 1 kept
    assert best.best_model_path == str(tmp_path / "best" / f"epoch-{best_epoch + 1:02d}")
    BertForSequenceClassification.from_pretrained(best.best_model_path)

    with pytest.raises(CheckpointFileError, match="from_pretrained"):
        Trainer(bert()).load_weights(str(folder))


def test_save_pretrained_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="save_weights_only=True"):
        ModelCheckpoint(str(tmp_path / "ckpt"), save_pretrained=True)
    with pytest.raises(ValueError, match="drop the extension"):
        ModelCheckpoint(str(tmp_path / "best.pt"), save_pretrained=True, save_weights_only=True)
    checkpoint = ModelCheckpoint(
        str(tmp_path / "ckpt"), save_pretrained=True, save_weights_only=True
    )
    with pytest.raises(TypeError, match="Sequential has no save_pretrained"):
        Trainer(regression_model(), "sgd", "mse").fit(
            *regression_data(), epochs=1, verbose=0, callbacks=[checkpoint]
        )
