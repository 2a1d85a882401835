"""trainer.summary(): Keras's table; plot_model(): the graph, drawn with torchview and Graphviz."""

from __future__ import annotations

import sys

import pytest
import torch

from torchcallbacks import Trainer, plot_model


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8),  # 4 * 8 + 8 = 40 parameters
        torch.nn.BatchNorm1d(8),  # 8 + 8 = 16 (running statistics are buffers)
        torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(8, 3)),  # 8 * 3 + 3 = 27
    )
    model[0].weight.requires_grad_(False)  # 32 non-trainable parameters
    return model


def _rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


TOTALS = [
    " Total params: 83 (332.00 B)",  # float32: 4 bytes each
    " Trainable params: 51 (204.00 B)",
    " Non-trainable params: 32 (128.00 B)",
]


def test_table_rows_shapes_and_totals_after_fit(capsys):
    trainer = Trainer(_model(), "sgd", "mse")
    before = trainer.summary(print_fn=None)
    assert _rows(before) == [
        ["0 (Linear)", "?", "40"],
        ["1 (BatchNorm1d)", "?", "16"],
        ["2 (Sequential)", "?", "27"],
    ]
    assert capsys.readouterr().out == ""

    trainer.fit(torch.randn(20, 4), torch.randn(20, 3), batch_size=5, verbose=0)
    text = trainer.summary()  # the shapes of the last fit's first batch
    assert capsys.readouterr().out == text + "\n"
    lines = text.splitlines()
    assert lines[0] == 'Model: "Sequential"'
    assert lines[2].split("┃")[1:-1] == [
        " Layer (type)".ljust(37),
        " Output Shape".ljust(29),
        "Param # ".rjust(18),
    ]
    assert {len(line) for line in lines[1:-3]} == {88}  # Keras's table width
    assert _rows(text) == [
        ["0 (Linear)", "(5, 8)", "40"],
        ["1 (BatchNorm1d)", "(5, 8)", "16"],
        ["2 (Sequential)", "(5, 3)", "27"],
    ]
    assert lines[-3:] == TOTALS

    given = trainer.summary(input_data=torch.randn(2, 4), print_fn=None)
    assert [row[1] for row in _rows(given)] == ["(2, 8)", "(2, 8)", "(2, 3)"]


class Noise(torch.nn.Module):
    """Draws random numbers in every forward pass, in eval mode too."""

    def forward(self, x):
        return x + torch.randn_like(x)


def test_summary_leaves_the_module_and_the_random_stream_as_they_were():
    model = torch.nn.Sequential(_model(), Noise())
    model.train()
    batch_norm = model[0][1]
    statistics = batch_norm.running_mean.clone()
    inputs = torch.randn(6, 4) * 10
    trainer = Trainer(model, "sgd", "mse")
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    text = trainer.summary(input_data=inputs, print_fn=None)
    assert _rows(text)[1] == ["1 (Noise)", "(6, 3)", "0"]
    assert torch.rand(1) == expected
    assert model.training and batch_norm.training
    assert torch.equal(batch_norm.running_mean, statistics)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = torch.nn.Linear(100, 100)  # 10,100 parameters: 40,400 bytes
        self.right = torch.nn.Embedding(10, 4)  # 40

    def forward(self, features, tokens):
        return self.left(features), self.right(tokens)


def test_keyword_inputs_thousands_separators_and_kilobytes():
    trainer = Trainer(TwoInputs(), "sgd", "mse")
    inputs = {"features": torch.randn(3, 100), "tokens": torch.zeros(3, 7, dtype=torch.long)}
    text = trainer.summary(input_data=inputs, print_fn=None)
    assert _rows(text) == [
        ["left (Linear)", "(3, 100)", "10,100"],
        ["right (Embedding)", "(3, 7, 4)", "40"],
    ]
    assert text.splitlines()[-3:] == [
        " Total params: 10,140 (39.61 KB)",
        " Trainable params: 10,140 (39.61 KB)",
        " Non-trainable params: 0 (0.00 B)",
    ]


class Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(2, 4, batch_first=True)  # 4 * 4 * (2 + 4 + 2) = 128
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def test_every_output_of_a_layer_is_shown():
    text = Trainer(Recurrent(), "sgd", "mse").summary(torch.randn(3, 5, 2), print_fn=None)
    assert _rows(text) == [
        ["lstm (LSTM)", "[(3, 5, 4), [(1, 3, 4), (1, 3, 4)]]", "128"],  # output, (h, c)
        ["head (Linear)", "(3, 1)", "5"],
    ]


def test_huggingface_model_output_shapes():
    import transformers

    config = transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    trainer = Trainer(model, "adam")
    inputs = {"input_ids": torch.randint(0, 30, (2, 6)), "attention_mask": torch.ones(2, 6)}
    rows = _rows(trainer.summary(input_data=inputs, print_fn=None))
    assert rows[0][:2] == [
        "bert (BertModel)",
        "{last_hidden_state: (2, 6, 8), pooler_output: (2, 8)}",
    ]
    assert rows[-1] == ["classifier (Linear)", "(2, 2)", "18"]  # 8 * 2 + 2


def test_a_module_without_children_is_one_row():
    text = Trainer(torch.nn.Linear(3, 2), "sgd", "mse").summary(print_fn=None)
    assert _rows(text) == [["Linear (Linear)", "?", "8"]]


def test_plot_model_writes_a_png_from_a_trainer_and_from_a_module(tmp_path):
    trainer = Trainer(_model(), "sgd", "mse")
    trainer.fit(torch.randn(20, 4), torch.randn(20, 3), batch_size=5, verbose=0)
    for path, source, kwargs in [
        (tmp_path / "trainer.png", trainer, {"show_shapes": True}),
        (tmp_path / "module.png", trainer.model, {"input_data": torch.randn(2, 4)}),
    ]:
        assert plot_model(source, to_file=path, **kwargs) == str(path)
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    with pytest.raises(ValueError, match="needs an example input: pass input_data"):
        plot_model(_model(), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize(
    ("missing", "call", "extra"),
    [
        ("torchview", lambda: plot_model(_model(), input_data=torch.randn(2, 4)), "plot"),
        ("graphviz", lambda: plot_model(_model(), input_data=torch.randn(2, 4)), "plot"),
    ],
)
def test_missing_extra_raises_an_import_error_naming_it(monkeypatch, missing, call, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    with pytest.raises(ImportError, match=rf'pip install "torchcallbacks\[{extra}\]"'):
        call()


def test_plot_model_without_graphviz_dot_says_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on PATH
    with pytest.raises(ImportError, match="needs Graphviz's 'dot' program"):
        plot_model(_model(), tmp_path / "model.png", input_data=torch.randn(2, 4))
    assert not (tmp_path / "model.png").exists()


def test_plot_model_of_a_huggingface_model(tmp_path):
    import transformers

    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=8, vocab_size=50, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    inputs = {"input_ids": torch.randint(0, 50, (2, 6))}
    with pytest.raises(RuntimeError, match="pass use_cache=False in its config"):
        plot_model(model, tmp_path / "cache.png", input_data=inputs)  # the cache is no tensor
    model.config.use_cache = False
    plot_model(model, tmp_path / "gpt2.png", input_data=inputs)
    assert (tmp_path / "gpt2.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
