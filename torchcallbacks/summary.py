"""Keras's ``model.summary()`` table and ``plot_model`` (with torchview and Graphviz).

`Trainer.summary` prints one row per direct submodule, as Keras lists a model's layers:
its name and class, its output shape when an input is known, and its parameter count,
then the totals in Keras's wording. The shapes come from forward hooks on those
submodules during one forward pass, so that every output of a layer is shown, including
the tensors of a HuggingFace ``ModelOutput`` (torchinfo sizes only a layer's first tensor
output, and none of a ``ModelOutput``'s). ``plot_model`` draws the module's graph with
torchview and Graphviz: ``pip install "torchcallbacks[plot]"`` plus Graphviz's ``dot``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from torchcallbacks.checkpoints.files import atomic_write
from torchcallbacks.data.inputs import move_to_device
from torchcallbacks.utils import preserved_modes, require

if TYPE_CHECKING:
    from torchcallbacks.trainer import Trainer

_WIDTH = 88  # Keras's table width; columns at 45% and 80% of it, widened to fit
_HEADER = ("Layer (type)", "Output Shape", "Param #")


def summarize(module: torch.nn.Module, input_data: Any = None, device: Any = None) -> str:
    """Keras's summary of ``module`` as text: the table and the parameter totals.

    ``input_data`` (a tensor, a tuple of positional inputs or a dict of keyword inputs, as
    `Trainer` passes batch inputs) runs one forward pass, in eval mode and without
    gradients, to fill in the output shapes; without it they read ``?``, as in Keras.
    Parameters count as in torch: buffers such as BatchNorm's running statistics are not
    parameters (Keras counts its moving statistics as non-trainable weights).
    """
    children = list(module.named_children()) or [(type(module).__name__, module)]
    shapes: dict[int, str] = {}
    if input_data is not None:

        def record(layer: torch.nn.Module, args: Any, output: Any) -> None:
            shapes[id(layer)] = _format_shapes(output)  # the last call of a shared layer

        hooks = [child.register_forward_hook(record) for _, child in children]
        try:
            with _untouched(module, device):
                module.eval()
                _call(module, input_data if device is None else move_to_device(input_data, device))
        finally:
            for hook in hooks:
                hook.remove()
    rows = [
        (f"{name} ({type(child).__name__})", shapes.get(id(child), "?"), _count(child))
        for name, child in children
    ]
    return "\n".join([f'Model: "{type(module).__name__}"', *_table(rows), *_totals(module)])


def _call(module: torch.nn.Module, inputs: Any) -> Any:
    """Call ``module`` on batch inputs the way `Trainer` does."""
    if isinstance(inputs, Mapping):
        return module(**inputs)
    if isinstance(inputs, tuple | list):
        return module(*inputs)
    return module(inputs)


def plot_model(
    model: torch.nn.Module | Trainer,
    to_file: str | os.PathLike = "model.png",
    show_shapes: bool = False,
    input_data: Any = None,
) -> str:
    """Draw the graph of ``model``'s forward pass to ``to_file`` (format from the extension:
    ``.png``, ``.svg``, ``.pdf``, ...) and return the path. Needs the ``plot`` extra
    (torchview, graphviz) and Graphviz's ``dot`` program (``apt-get install graphviz``,
    ``brew install graphviz``).

    The graph is traced by running ``input_data`` (a batch of inputs, as for
    `Trainer.summary`) through the module once, in eval mode and without gradients. Given a
    `Trainer`, its module and the inputs of its last `fit`'s first batch are used::

        trainer.fit(x, y, epochs=1)
        torchcallbacks.plot_model(trainer, "model.png", show_shapes=True)
        torchcallbacks.plot_model(model, "model.svg", input_data=torch.randn(1, 20))
    """
    torchview = require("torchview", "plot", feature="plot_model()")
    require("graphviz", "plot", feature="plot_model()")
    device = None
    if not isinstance(model, torch.nn.Module):  # a Trainer
        device = model.device
        if input_data is None:
            input_data = model.example_batch_inputs
        model = model.model
    if input_data is None:
        raise ValueError(
            "plot_model traces the module's forward pass and needs an example input: pass "
            "input_data=... (a tensor, a tuple of inputs or a dict of keyword inputs), or a "
            "Trainer after fit (its first batch is used)."
        )
    path = os.fspath(to_file)
    file_format = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    positional = input_data if isinstance(input_data, Mapping | torch.Tensor) else list(input_data)
    try:
        with _untouched(model, device):
            graph = torchview.draw_graph(
                model, input_data=positional, device=device, mode="eval",
                show_shapes=show_shapes, graph_name=type(model).__name__, depth=3,
            )  # fmt: skip
    except Exception as error:
        raise RuntimeError(
            f"plot_model could not trace {type(model).__name__} with torchview "
            f"({type(error).__name__}: {error}). Outputs that are not tensors are a common "
            "cause: for a HuggingFace model, pass use_cache=False in its config."
        ) from error
    import graphviz

    try:
        image = graph.visual_graph.pipe(format=file_format)
    except graphviz.ExecutableNotFound as error:
        raise ImportError(
            "plot_model() needs Graphviz's 'dot' program, which is not on PATH. Install "
            "Graphviz: apt-get install graphviz (Debian/Ubuntu), brew install graphviz "
            "(macOS), or see https://graphviz.org/download/."
        ) from error
    with atomic_write(path) as tmp, open(tmp, "wb") as file:
        file.write(image)
    return path


@contextlib.contextmanager
def _untouched(module: torch.nn.Module, device: Any):
    """Run an inspection forward pass without moving the training RNG or module modes."""
    device = torch.device(device) if device is not None else None
    cuda = []
    if device is not None and device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda), preserved_modes(module), torch.no_grad():
        yield


def _format_shapes(output: Any) -> str:
    """``(2, 8)`` for a tensor; Keras's ``[(2, 8), (2, 3)]`` / ``{logits: (2, 3)}`` for
    several; ``?`` when the output holds no tensor."""
    if isinstance(output, torch.Tensor):
        return f"({', '.join(str(dim) for dim in output.shape)})"
    if isinstance(output, Mapping):
        parts = [f"{key}: {_format_shapes(value)}" for key, value in output.items()]
        parts = [part for part in parts if not part.endswith(": ?")]
        return "{" + ", ".join(parts) + "}" if parts else "?"
    if isinstance(output, tuple | list):
        parts = [part for part in map(_format_shapes, output) if part != "?"]
        if len(parts) == 1:
            return parts[0]
        return "[" + ", ".join(parts) + "]" if parts else "?"
    return "?"


def _count(module: torch.nn.Module) -> str:
    parameters = list(module.parameters())
    if any(torch.nn.parameter.is_lazy(p) for p in parameters):
        return "0 (unbuilt)"
    return f"{sum(p.numel() for p in parameters):,}"


def _table(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """Keras 3's box-drawn table (rich's heavy-head style), as plain text."""
    content = _WIDTH - 10  # 4 borders and one space each side of 3 cells
    widths = [int(content * 0.45), int(content * 0.80) - int(content * 0.45)]
    widths.append(content - sum(widths))
    for column in range(3):
        widths[column] = max(widths[column], *(len(row[column]) for row in [_HEADER, *rows]))

    def line(left: str, fill: str, middle: str, right: str) -> str:
        return left + middle.join(fill * (width + 2) for width in widths) + right

    def cells(values: Sequence[str], edge: str) -> str:
        padded = [
            values[0].ljust(widths[0]),
            values[1].ljust(widths[1]),
            values[2].rjust(widths[2]),
        ]
        return edge + edge.join(f" {value} " for value in padded) + edge

    lines = [line("┏", "━", "┳", "┓"), cells(_HEADER, "┃"), line("┡", "━", "╇", "┩")]
    for index, row in enumerate(rows):
        if index:
            lines.append(line("├", "─", "┼", "┤"))
        lines.append(cells(row, "│"))
    lines.append(line("└", "─", "┴", "┘"))
    return lines


def _totals(module: torch.nn.Module) -> list[str]:
    unique = {id(p): p for p in module.parameters()}.values()  # tied weights count once
    counts = {True: 0, False: 0}
    sizes = {True: 0, False: 0}
    for parameter in unique:
        if torch.nn.parameter.is_lazy(parameter):
            continue
        counts[parameter.requires_grad] += parameter.numel()
        sizes[parameter.requires_grad] += parameter.numel() * parameter.element_size()
    return [
        f" Total params: {counts[True] + counts[False]:,} "
        f"({_readable_size(sizes[True] + sizes[False])})",
        f" Trainable params: {counts[True]:,} ({_readable_size(sizes[True])})",
        f" Non-trainable params: {counts[False]:,} ({_readable_size(sizes[False])})",
    ]


def _readable_size(size: float) -> str:
    """Keras's memory size wording: 2 decimals, B, KB, MB, ... in steps of 1024."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"
