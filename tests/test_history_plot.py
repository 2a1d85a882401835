"""History.plot: training vs validation curves written to a PNG."""

from __future__ import annotations

import sys

import pytest
import torch

from torchcallbacks import Trainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def history(classification_data):
    x, y = classification_data
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    trainer = Trainer(model, optimizer="sgd", loss="cross_entropy", metrics=["accuracy"])
    return trainer.fit(x, y, epochs=3, validation_split=0.25, verbose=0)


def test_plot_writes_a_png_with_train_and_validation_curves(history, tmp_path):
    import matplotlib.image as matplotlib_image

    path = tmp_path / "plots" / "curves.png"
    figure = history.plot(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib_image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    panels = {axes.get_title(): axes for axes in figure.axes}
    assert set(panels) == {"loss", "accuracy"}
    for name, axes in panels.items():
        curves = {line.get_label(): line for line in axes.get_lines()}
        assert list(curves["training"].get_xdata()) == [1, 2, 3]
        assert list(curves["training"].get_ydata()) == history.history[name]
        assert list(curves["validation"].get_ydata()) == history.history[f"val_{name}"]


def test_plot_keys_selects_panels(history):
    figure = history.plot(keys=["val_loss"])  # a val_ name selects the same panel
    assert [axes.get_title() for axes in figure.axes] == ["loss"]
    with pytest.raises(ValueError, match="recorded: .*'val_loss'"):
        history.plot(keys=["auc"])


def test_plot_without_matplotlib_names_the_extra(history, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "torchcallbacks\[plot\]"'):
        history.plot()
