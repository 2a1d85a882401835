"""`TensorBoard`: Keras's TensorBoard callback on ``torch.utils.tensorboard``."""

from __future__ import annotations

import contextlib
import io
import numbers
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.checks import check_output_path
from torchcallbacks.utils import preserved_modes, require


class TensorBoard(Callback):
    """Writes TensorBoard logs with Keras's layout, tags and step numbers.

    Example::

        trainer.fit(x, y, epochs=10, validation_split=0.2,
                    callbacks=[TensorBoard(log_dir="logs", histogram_freq=1)])
        # then: tensorboard --logdir logs

    Layout: event files directly in ``log_dir/train`` and ``log_dir/validation`` (the
    validation run only appears when validation runs). Scalars:

    - ``epoch_<name>`` at step = epoch (0-based): training keys in ``train``, ``val_<name>``
      keys under the same tag in ``validation``; plus ``epoch_lr``, the learning rate (the
      ``lr`` log when an LR callback wrote one, else the optimizer's first group);
    - ``batch_<name>`` in ``train`` every ``update_freq`` batches (an int, or ``"batch"`` for
      1), at the fit's global batch count starting at 1; ``update_freq="epoch"`` (default)
      writes no batch data and costs nothing per batch;
    - ``evaluation_<name>_vs_iterations`` in ``validation`` at the end of every evaluation
      (validation inside fit, or ``evaluate(callbacks=[tb])``), at step = optimizer steps
      taken so far (``trainer.global_step``);
    - with ``write_steps_per_second``: ``epoch_steps_per_second`` and, with an int
      ``update_freq``, ``batch_steps_per_second``.

    Every ``histogram_freq`` epochs (0: never) each weight (parameters and floating-point
    buffers) gets a histogram ``<module path>/<name>/histogram``, e.g. ``fc1/weight/histogram``;
    ``write_grads`` adds ``<...>/gradient/histogram`` for the last batch's gradients and
    ``write_images`` adds ``<...>/image``, the weight scaled to [0, 1]: 1-D as a 1×N image,
    2-D as H×W with H ≤ W, 3-D (C, H, W) as C images; other shapes are skipped, as in Keras.

    ``write_graph`` traces the module once, with the first training batch, at the first
    epoch end (in eval mode, without gradients, RNG untouched). Outputs the tracer refuses
    (dicts, HuggingFace ``ModelOutput``s, ``None`` inside tuples) are traced as the flat
    tuple of their tensors; a module that cannot be traced gives a warning, not an error.
    A ``torch.compile``d module's graph is the original module's.

    ``embeddings_freq`` saves every ``nn.Embedding`` for the projector, labelled by
    ``embeddings_metadata`` (one TSV file for all layers, or a dict from module name to
    file). ``profile_batch`` (``N``, ``(start, stop)`` or ``"start,stop"``, global batches
    from 1; 0 disables) records a ``torch.profiler`` trace to
    ``log_dir/train/plugins/profile/batch_<stop>.<time>.pt.trace.json`` for the PyTorch
    Profiler TensorBoard plugin (``pip install torch-tb-profiler``).

    Writers are flushed at every epoch end and closed at train end; only the main process
    writes. Requires ``tensorboard`` (``pip install "torchcallbacks[tensorboard]"``).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike = "logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_grads: bool = False,
        update_freq: int | str = "epoch",
        profile_batch: int | str | tuple[int, int] | list[int] = 0,
        embeddings_freq: int = 0,
        embeddings_metadata: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
        write_steps_per_second: bool = False,
    ) -> None:
        super().__init__()
        require("tensorboard", "tensorboard", "TensorBoard")
        from torch.utils.tensorboard import SummaryWriter

        self._summary_writer = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = _frequency("histogram_freq", histogram_freq)
        self.embeddings_freq = _frequency("embeddings_freq", embeddings_freq)
        self.write_graph = write_graph
        self.write_images = write_images
        self.write_grads = write_grads
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = _update_freq(update_freq)
        self._start_batch, self._stop_batch = _profile_range(profile_batch)
        self.embeddings_metadata = embeddings_metadata
        if (write_grads or write_images) and not histogram_freq:
            warnings.warn(
                "write_grads and write_images are written with the histograms: they have "
                "no effect unless histogram_freq > 0.",
                stacklevel=2,
            )
        self._writers: dict[str, Any] = {}
        self._profiler: torch.profiler.profile | None = None
        self._graph_written = False
        self._embedding_labels: dict[str, tuple[list[Any], list[str] | None]] = {}
        self._epoch_start = (0.0, 0)
        self._batch_start = 0.0

    # -- hooks -----------------------------------------------------------------------------
    def implements_batch_hooks(self, mode: str) -> bool:
        return mode == "train" and (isinstance(self.update_freq, int) or self._start_batch > 0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._graph_written = False
        if self._is_main():  # a log_dir that cannot be written fails before any training
            check_output_path(self.log_dir, "TensorBoard", folder=True)
        if self.embeddings_freq and self._is_main():
            self._embedding_labels = self._read_embeddings_metadata()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.write_steps_per_second:
            self._epoch_start = (time.perf_counter(), self.trainer.global_step)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if not self._is_main():
            return
        if self.write_steps_per_second:
            self._batch_start = time.perf_counter()
        if self._profiler is not None:
            self._profiler.step()  # marks the batch as a ProfilerStep for the plugin
        elif self._start_batch > 0 and self.trainer.global_train_batch + 1 == self._start_batch:
            self._start_profiler()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._is_main():
            return
        step = self.trainer.global_train_batch
        if self._profiler is not None and step >= self._stop_batch:
            self._stop_profiler()
        if isinstance(self.update_freq, int) and step % self.update_freq == 0:
            values = dict(logs or {})
            if self.write_steps_per_second:
                values["steps_per_second"] = 1.0 / (time.perf_counter() - self._batch_start)
            self._scalars("train", "batch_", values, step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self._is_main():
            return
        logs = logs or {}
        if self.write_graph and not self._graph_written:
            self._write_graph()
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        if "lr" not in train and self.trainer.optimizer is not None:
            train["lr"] = self.trainer.get_lr()
        if self.write_steps_per_second:
            started, step = self._epoch_start
            seconds = time.perf_counter() - started
            train["steps_per_second"] = (self.trainer.global_step - step) / seconds
        self._scalars("train", "epoch_", train, epoch)
        validation = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        self._scalars("validation", "epoch_", validation, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._write_weights(epoch)
        if self.embeddings_freq and epoch % self.embeddings_freq == 0:
            self._write_embeddings(epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_test_end(self, logs: dict | None = None) -> None:
        if not self._is_main() or self.trainer.optimizer is None:
            return
        values = {f"{name}_vs_iterations": value for name, value in (logs or {}).items()}
        self._scalars("validation", "evaluation_", values, self.trainer.global_step)
        if "validation" in self._writers:
            self._writers["validation"].flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._profiler is not None:
            self._stop_profiler()
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    # -- writing ---------------------------------------------------------------------------
    def _is_main(self) -> bool:
        return getattr(self.trainer, "is_main_process", True)

    def _writer(self, run: str) -> Any:
        """The run's SummaryWriter, created at its first use."""
        if run not in self._writers:
            self._writers[run] = self._summary_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def _scalars(self, run: str, prefix: str, values: Mapping[str, Any], step: int) -> None:
        numbers_only = {
            name: float(value)
            for name, value in values.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        }
        if numbers_only:
            writer = self._writer(run)
            for name, value in numbers_only.items():
                writer.add_scalar(prefix + name, value, step)

    def _weights(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None]]:
        """(tag prefix, weight, gradient or None) for parameters and floating buffers."""
        for name, parameter in self.model.named_parameters():
            yield name.replace(".", "/"), parameter.detach(), parameter.grad
        for name, buffer in self.model.named_buffers():
            if buffer.is_floating_point():
                yield name.replace(".", "/"), buffer, None

    def _write_weights(self, epoch: int) -> None:
        writer = self._writer("train")
        for tag, weight, gradient in self._weights():
            weight = weight.detach().float().cpu()
            _histogram(writer, f"{tag}/histogram", weight, epoch)
            if self.write_grads and gradient is not None:
                _histogram(writer, f"{tag}/gradient/histogram", gradient.float().cpu(), epoch)
            if self.write_images:
                image = _weight_image(weight)
                if image is not None:
                    writer.add_images(f"{tag}/image", image, epoch, dataformats="NHWC")

    def _write_graph(self) -> None:
        self._graph_written = True
        inputs = self.trainer.example_batch_inputs
        if inputs is None:
            return
        device = self.trainer.device
        cuda = [device.index or torch.cuda.current_device()] if device.type == "cuda" else []
        writer = self._writer("train")
        try:
            with (
                torch.random.fork_rng(devices=cuda),
                torch.no_grad(),
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),  # the tracer prints its errors
                preserved_modes(self.model),  # the tracer ends with train() on the whole tree
            ):
                warnings.simplefilter("ignore")  # tracer and deprecation notices
                try:
                    writer.add_graph(*_traceable(self.model, inputs))
                except Exception:  # dicts, ModelOutputs, None: outputs the tracer refuses
                    writer.add_graph(*_traceable(self.model, inputs, flatten=True))
        except Exception as error:  # any untraceable module: the run goes on without a graph
            warnings.warn(
                f"TensorBoard could not write the model graph ({type(error).__name__}: "
                f"{error}); training continues without it. Pass write_graph=False to skip it.",
                stacklevel=3,
            )

    # -- embeddings ------------------------------------------------------------------------
    def _embedding_layers(self) -> dict[str, torch.nn.Embedding]:
        return {
            name: module
            for name, module in self.model.named_modules()
            if isinstance(module, torch.nn.Embedding)
        }

    def _read_embeddings_metadata(self) -> dict[str, tuple[list[Any], list[str] | None]]:
        metadata = self.embeddings_metadata
        if metadata is None:
            return {}
        layers = self._embedding_layers()
        if not isinstance(metadata, Mapping):
            metadata = {name: metadata for name in layers}
        unknown = sorted(set(metadata) - set(layers))
        if unknown:
            raise ValueError(
                "Unrecognized `Embedding` layer names passed to `TensorBoard` "
                f"`embeddings_metadata` argument: {unknown}. The model's nn.Embedding "
                f"modules are: {sorted(layers)}"
            )
        labels = {}
        for name, path in metadata.items():
            labels[name] = self._read_labels(os.fspath(path), layers[name].num_embeddings)
        return labels

    def _read_labels(self, path: str, rows: int) -> tuple[list[Any], list[str] | None]:
        """A Keras metadata TSV: one label per line, or a header line then tab-separated
        columns."""
        if not os.path.isabs(path) and not os.path.exists(path):
            path = os.path.join(self.log_dir, path)
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
        header = lines[0].split("\t") if lines and "\t" in lines[0] else None
        labels: list[Any] = [line.split("\t") for line in lines[1:]] if header else lines
        if len(labels) != rows:
            raise ValueError(
                f"embeddings_metadata file {path} has {len(labels)} labels but the embedding "
                f"has {rows} rows: write one line per row (after a header line when there "
                "are several tab-separated columns)."
            )
        return labels, header

    def _write_embeddings(self, epoch: int) -> None:
        writer = self._writer("train")
        for name, layer in self._embedding_layers().items():
            labels, header = self._embedding_labels.get(name, (None, None))
            with contextlib.redirect_stdout(io.StringIO()):  # "Embedding dir exists" on reuse
                writer.add_embedding(
                    layer.weight.detach().float().cpu(),
                    metadata=labels,
                    metadata_header=header,
                    global_step=epoch,
                    tag=name,
                )

    # -- profiling -------------------------------------------------------------------------
    def _start_profiler(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        folder = os.path.join(self.log_dir, "train", "plugins", "profile")
        self._profiler = torch.profiler.profile(
            activities=activities,
            schedule=lambda step: torch.profiler.ProfilerAction.RECORD,  # one step per batch
            on_trace_ready=torch.profiler.tensorboard_trace_handler(
                folder, worker_name=f"batch_{self._stop_batch}"
            ),
        )
        self._profiler.start()

    def _stop_profiler(self) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.stop()


def _frequency(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (0 disables it); got {value!r}")
    return value


def _update_freq(value: Any) -> int | str:
    if value == "batch":
        return 1
    if value == "epoch" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(
        "update_freq must be 'batch', 'epoch' or a positive integer number of batches; "
        f"got {value!r}"
    )


def _profile_range(profile_batch: Any) -> tuple[int, int]:
    """Keras's ``profile_batch`` rules: ``N`` is ``(N, N)``; ``(0, 0)`` disables."""
    message = (
        "profile_batch must be a non-negative integer or 2-tuple of positive integers. A pair "
        "of positive integers signifies a range of batches to profile. "
        f"Found: {profile_batch}"
    )
    value = profile_batch
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",")]
        except ValueError:
            raise ValueError(message) from None
        if len(value) == 1:
            value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        start = stop = value
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        start, stop = value
    else:
        raise ValueError(message)
    if start < 0 or stop < start:
        raise ValueError(message)
    return start, stop


def _histogram(writer: Any, tag: str, values: torch.Tensor, step: int) -> None:
    finite = values[torch.isfinite(values)]
    if finite.numel():
        writer.add_histogram(tag, finite, step)


def _weight_image(weight: torch.Tensor) -> torch.Tensor | None:
    """Keras's weight images as NHWC in [0, 1]: 1-D → 1×1×N×1, 2-D → 1×H×W×1 with H ≤ W,
    3-D (C, H, W) → C×H×W×1; None for other shapes."""
    if weight.ndim == 1:
        image = weight.reshape(1, 1, -1, 1)
    elif weight.ndim == 2:
        image = (weight.T if weight.shape[0] > weight.shape[1] else weight).reshape(
            1, *sorted(weight.shape), 1
        )
    elif weight.ndim == 3:
        image = weight.unsqueeze(-1)
    else:
        return None
    image = torch.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else torch.zeros_like(image)


class _TracedCall(torch.nn.Module):
    """Calls the module as `Trainer` does, for the tracer: ``module(**inputs)`` from
    positional tensors when ``names`` are given (the tracer passes positionals only), and,
    with ``flatten``, the output's tensors as a flat tuple (the tracer refuses dicts,
    HuggingFace ``ModelOutput``s and ``None`` among the outputs)."""

    def __init__(self, module: torch.nn.Module, names: list[str] | None, flatten: bool) -> None:
        super().__init__()
        self.module, self.names, self.flatten = module, names, flatten

    def forward(self, *values: Any) -> Any:
        if self.names is None:
            output = self.module(*values)
        else:
            output = self.module(**dict(zip(self.names, values)))
        return tuple(_tensors_of(output)) if self.flatten else output


def _tensors_of(output: Any) -> Iterator[torch.Tensor]:
    """The tensors in a (nested) output, in order; other values (None, caches) are left out."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, Mapping):  # a dict, or a ModelOutput (which holds no None)
        for value in output.values():
            yield from _tensors_of(value)
    elif isinstance(output, list | tuple):
        for value in output:
            yield from _tensors_of(value)


def _traceable(
    model: torch.nn.Module, inputs: Any, flatten: bool = False
) -> tuple[torch.nn.Module, Any]:
    """``add_graph`` arguments for the batch inputs as `Trainer` passes them to forward;
    ``flatten``: the outputs as a tuple of tensors."""
    if isinstance(inputs, Mapping):
        return _TracedCall(model, list(inputs), flatten), tuple(inputs.values())
    if flatten:
        positional = tuple(inputs) if isinstance(inputs, list | tuple) else (inputs,)
        return _TracedCall(model, None, True), positional
    return model, inputs
