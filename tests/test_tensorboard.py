"""TensorBoard logs read back with tensorboard's own EventAccumulator and server."""

import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchcallbacks import Callback, TensorBoard, Trainer


def read_run(log_dir, run):
    accumulator = EventAccumulator(
        os.path.join(log_dir, run),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [event.step for event in accumulator.Scalars(tag)]


def values(accumulator, tag):
    return [event.value for event in accumulator.Scalars(tag)]


def make_trainer(lr=0.05):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), "mse", ["mae"], "cpu")
    x = torch.randn(40, 3)  # 5 batches of 8
    return trainer, x, x.sum(1, keepdim=True)


def fit(tensorboard, epochs=2, validation=True, extra=(), trainer=None):
    made_trainer, x, y = make_trainer()
    trainer = trainer or made_trainer
    history = trainer.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        verbose=0,
        validation_data=(x[:16], y[:16]) if validation else None,
        callbacks=[*extra, tensorboard],
    )
    return trainer, history


def test_epoch_scalars_in_train_and_validation_runs(tmp_path):
    trainer, history = fit(TensorBoard(tmp_path, write_graph=False))
    assert sorted(os.listdir(tmp_path)) == ["train", "validation"]
    for run in ("train", "validation"):  # event files directly in the run folders
        assert glob.glob(str(tmp_path / run / "events.out.tfevents.*"))
    train, validation = read_run(tmp_path, "train"), read_run(tmp_path, "validation")
    assert sorted(train.Tags()["scalars"]) == ["epoch_loss", "epoch_lr", "epoch_mae"]
    for key in ("loss", "mae"):
        assert steps(train, f"epoch_{key}") == steps(validation, f"epoch_{key}") == [0, 1]
        assert values(train, f"epoch_{key}") == pytest.approx(history.history[key])
        assert values(validation, f"epoch_{key}") == pytest.approx(history.history[f"val_{key}"])
    assert steps(train, "epoch_lr") == [0, 1]
    assert values(train, "epoch_lr") == pytest.approx([0.05, 0.05])
    # validation after 5 and after 10 optimizer steps
    assert steps(validation, "evaluation_loss_vs_iterations") == [5, 10]
    assert values(validation, "evaluation_mae_vs_iterations") == pytest.approx(
        history.history["val_mae"]
    )
    for accumulator in (train, validation):
        tags = accumulator.Tags()
        assert tags["histograms"] == [] and tags["images"] == [] and not tags["graph"]


def test_no_validation_writes_only_the_train_run(tmp_path):
    fit(TensorBoard(tmp_path), validation=False)
    assert os.listdir(tmp_path) == ["train"]


def test_lr_log_from_a_callback_is_the_epoch_lr(tmp_path):
    class HalveLR(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.trainer.set_lr(0.1 / 2**epoch)

        def on_epoch_end(self, epoch, logs=None):
            logs["lr"] = self.trainer.get_lr()

    fit(TensorBoard(tmp_path, write_graph=False), epochs=3, extra=[HalveLR()])
    train = read_run(tmp_path, "train")
    assert steps(train, "epoch_lr") == [0, 1, 2]
    assert values(train, "epoch_lr") == pytest.approx([0.1, 0.05, 0.025])


class BatchRecorder(Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


@pytest.mark.parametrize(
    ("update_freq", "expected"),
    [("batch", list(range(1, 11))), (1, list(range(1, 11))), (3, [3, 6, 9]), (4, [4, 8])],
)
def test_batch_scalars_every_update_freq_global_batches(tmp_path, update_freq, expected):
    recorder = BatchRecorder()
    fit(TensorBoard(tmp_path, update_freq=update_freq, write_graph=False), extra=[recorder])
    train = read_run(tmp_path, "train")
    assert {"batch_loss", "batch_mae"} <= set(train.Tags()["scalars"])
    assert steps(train, "batch_loss") == expected
    assert values(train, "batch_loss") == pytest.approx(
        [recorder.losses[step - 1] for step in expected]
    )


def test_update_freq_epoch_writes_no_batch_data_and_skips_batch_hooks(tmp_path):
    tensorboard = TensorBoard(tmp_path)
    assert not tensorboard.implements_batch_hooks("train")
    assert TensorBoard(tmp_path, update_freq=2).implements_batch_hooks("train")
    assert TensorBoard(tmp_path, profile_batch=2).implements_batch_hooks("train")
    fit(tensorboard)
    assert not [t for t in read_run(tmp_path, "train").Tags()["scalars"] if "batch" in t]


def test_steps_per_second(tmp_path):
    fit(TensorBoard(tmp_path, update_freq=2, write_steps_per_second=True, write_graph=False))
    train = read_run(tmp_path, "train")
    assert steps(train, "epoch_steps_per_second") == [0, 1]
    assert steps(train, "batch_steps_per_second") == [2, 4, 6, 8, 10]
    assert min(values(train, "epoch_steps_per_second")) > 0


@pytest.mark.parametrize("update_freq", [0, -2, "steps", 1.5, None])
def test_bad_update_freq_is_refused(tmp_path, update_freq):
    with pytest.raises(ValueError, match="update_freq must be 'batch', 'epoch' or a positive"):
        TensorBoard(tmp_path, update_freq=update_freq)


def test_histograms_gradients_and_images_when_asked(tmp_path):
    tensorboard = TensorBoard(
        tmp_path, histogram_freq=2, write_grads=True, write_images=True, write_graph=False
    )
    fit(tensorboard, epochs=3, validation=False)
    train = read_run(tmp_path, "train")
    tags = train.Tags()
    names = ["0/weight", "0/bias", "2/weight", "2/bias"]
    assert sorted(tags["histograms"]) == sorted(
        [f"{n}/histogram" for n in names] + [f"{n}/gradient/histogram" for n in names]
    )
    assert [event.step for event in train.Histograms("0/weight/histogram")] == [0, 2]
    assert train.Histograms("0/weight/histogram")[0].histogram_value.num == 12
    assert sorted(tags["images"]) == sorted(f"{n}/image" for n in names)
    image = train.Images("0/weight/image")[0]  # the 4×3 weight, transposed to 3×4
    assert (image.step, image.height, image.width) == (0, 3, 4)
    bias = train.Images("0/bias/image")[0]
    assert (bias.height, bias.width) == (1, 4)


def test_write_images_without_histogram_freq_warns(tmp_path):
    with pytest.warns(UserWarning, match="no effect unless histogram_freq > 0"):
        TensorBoard(tmp_path, write_images=True)


def test_graph_written_once_when_asked(tmp_path):
    fit(TensorBoard(tmp_path / "with"), epochs=2)
    assert read_run(tmp_path / "with", "train").Tags()["graph"]
    fit(TensorBoard(tmp_path / "without", write_graph=False), epochs=1)
    assert not read_run(tmp_path / "without", "train").Tags()["graph"]


def test_tracing_the_graph_does_not_change_training(tmp_path):
    class Noisy(torch.nn.Module):  # draws random numbers and updates BatchNorm statistics
        def __init__(self):
            super().__init__()
            self.norm, self.fc = torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.fc(self.norm(x + 0.1 * torch.randn_like(x)))

    histories = []
    for write_graph in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(Noisy(), "sgd", "mse", device="cpu")
        _, history = fit(
            TensorBoard(tmp_path / str(write_graph), write_graph=write_graph),
            epochs=3,
            trainer=trainer,
        )
        histories.append(history.history)
    assert read_run(tmp_path / "True", "train").Tags()["graph"]
    assert histories[0] == histories[1]


def test_untraceable_module_warns_and_training_continues(tmp_path):
    class Untraceable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)

        def forward(self, x):
            if torch.jit.is_tracing():
                raise RuntimeError("this module cannot be traced")
            return self.fc(x)

    trainer = Trainer(Untraceable(), "sgd", "mse", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = fit(TensorBoard(tmp_path), epochs=2, trainer=trainer)
    assert history.epoch == [0, 1]
    graph_warnings = [str(w.message) for w in caught if "model graph" in str(w.message)]
    assert len(graph_warnings) == 1
    assert "this module cannot be traced" in graph_warnings[0]
    train = read_run(tmp_path, "train")
    assert not train.Tags()["graph"] and steps(train, "epoch_loss") == [0, 1]


class Embedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.words = torch.nn.Embedding(6, 3)
        self.fc = torch.nn.Linear(3, 1)

    def forward(self, index):
        return self.fc(self.words(index))


def test_embeddings_projector_with_metadata(tmp_path):
    labels = tmp_path / "labels.tsv"
    labels.write_text("".join(f"word{i}\n" for i in range(6)))
    torch.manual_seed(0)
    trainer = Trainer(Embedder(), "sgd", "mse", device="cpu")
    index = torch.arange(6).repeat(4)
    tensorboard = TensorBoard(
        tmp_path / "logs", embeddings_freq=2, embeddings_metadata={"words": labels}
    )
    trainer.fit(
        index,
        index.float().unsqueeze(1),
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[tensorboard],
    )
    train = tmp_path / "logs" / "train"
    config = (train / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2  # epochs 0 and 2
    assert 'tensor_path: "00002/words/tensors.tsv"' in config
    assert 'metadata_path: "00002/words/metadata.tsv"' in config
    rows = (train / "00002" / "words" / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 6 and len(rows[0].split("\t")) == 3
    weight = trainer.model.words.weight.detach()
    assert [float(v) for v in rows[5].split("\t")] == pytest.approx(weight[5].tolist())
    metadata = (train / "00002" / "words" / "metadata.tsv").read_text().splitlines()
    assert metadata == [f"word{i}" for i in range(6)]


def test_unknown_embedding_names_are_refused(tmp_path):
    trainer = Trainer(Embedder(), "sgd", "mse", device="cpu")
    tensorboard = TensorBoard(tmp_path, embeddings_freq=1, embeddings_metadata={"wrods": "x.tsv"})
    with pytest.raises(ValueError, match=r"Unrecognized `Embedding` layer names .*\['wrods'\]"):
        trainer.fit(torch.arange(6), torch.ones(6, 1), epochs=1, verbose=0, callbacks=[tensorboard])


@pytest.mark.parametrize("profile_batch", [-1, "-1,3", "1,None", "6,5", (3,), 1.5, (1, 2, 3)])
def test_bad_profile_batch_is_refused_as_keras_does(tmp_path, profile_batch):
    with pytest.raises(ValueError, match="profile_batch must be a non-negative integer"):
        TensorBoard(tmp_path, profile_batch=profile_batch)


@pytest.mark.parametrize(
    ("profile_batch", "trace"), [("2,3", "batch_3"), (4, "batch_4"), (10000, None)]
)
def test_profile_batch_writes_a_torch_profiler_trace(tmp_path, profile_batch, trace):
    fit(TensorBoard(tmp_path, profile_batch=profile_batch, write_graph=False), epochs=1)
    files = glob.glob(str(tmp_path / "train" / "plugins" / "profile" / "*.pt.trace.json"))
    if trace is None:
        assert files == []
        return
    assert len(files) == 1 and os.path.basename(files[0]).startswith(f"{trace}.")
    with open(files[0]) as file:
        events = json.load(file)["traceEvents"]
    profiler_steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep")}
    assert profiler_steps  # batch boundaries are marked for the profiler plugin


def test_evaluate_with_the_callback_writes_evaluation_at_the_step_count(tmp_path):
    trainer, _ = fit(TensorBoard(tmp_path / "fit", write_graph=False), epochs=1)
    x = torch.randn(8, 3)
    loss = trainer.evaluate(
        x, x.sum(1, keepdim=True), verbose=0, callbacks=[TensorBoard(tmp_path / "eval")]
    )
    assert os.listdir(tmp_path / "eval") == ["validation"]
    validation = read_run(tmp_path / "eval", "validation")
    assert steps(validation, "evaluation_loss_vs_iterations") == [5]
    assert values(validation, "evaluation_loss_vs_iterations") == pytest.approx([loss[0]])


def test_only_the_main_process_writes(tmp_path):
    class WorkerTrainer(Trainer):
        is_main_process = False

    trainer = WorkerTrainer(torch.nn.Linear(3, 1), "sgd", "mse", device="cpu")
    fit(
        TensorBoard(tmp_path / "logs", histogram_freq=1, update_freq=1, profile_batch=1),
        trainer=trainer,
    )
    assert not (tmp_path / "logs").exists()


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"torchcallbacks\[tensorboard\]"):
        TensorBoard(tmp_path)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_tensorboard_server_serves_the_epoch_loss(tmp_path):
    _, history = fit(TensorBoard(tmp_path / "logs", write_graph=False), epochs=3)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(tmp_path / "logs"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--load_fast",
        "false",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=train&tag=epoch_loss"
    series, deadline = None, time.monotonic() + 90
    try:
        while series is None and time.monotonic() < deadline:
            assert server.poll() is None, "tensorboard exited early"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
                series = body or None  # [] until the first load finishes
            except OSError:  # not listening yet, or 4xx before the run is loaded
                pass
            if series is None:
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert series is not None, "tensorboard did not serve the scalars within 90 s"
    assert [step for _, step, _ in series] == [0, 1, 2]
    assert [value for _, _, value in series] == pytest.approx(history.history["loss"])


def test_graph_of_a_model_called_with_keyword_inputs(tmp_path):
    """Dict inputs reach forward as keywords; the graph holds both input branches."""

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.image_branch = torch.nn.Linear(4, 1)
            self.table_branch = torch.nn.Linear(2, 1)

        def forward(self, image, table):
            return self.image_branch(image) + self.table_branch(table)

    generator = torch.Generator().manual_seed(0)
    x = {"image": torch.randn(32, 4, generator=generator), "table": torch.randn(32, 2)}
    trainer = Trainer(TwoInputs(), "sgd", "mse", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(
            x, torch.randn(32, 1), batch_size=8, verbose=0, callbacks=[TensorBoard(tmp_path)]
        )
    assert not [w for w in caught if "model graph" in str(w.message)]
    assert trainer.model.training  # the tracer's mode switch left the module as it was
    nodes = [node.name for node in read_run(tmp_path, "train").Graph().node]
    assert any("image_branch" in name for name in nodes)
    assert any("table_branch" in name for name in nodes)


def test_graph_of_a_model_fed_lists_by_a_dataloader(tmp_path):
    """A Dataset of ``((a, b), y)`` collates to ``[a, b]`` lists, passed as ``forward(a, b)``."""

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.left, self.right = torch.nn.Linear(3, 1), torch.nn.Linear(2, 1)

        def forward(self, a, b):
            return self.left(a) + self.right(b)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, index):
            return (torch.full((3,), float(index)), torch.ones(2)), torch.zeros(1)

    trainer = Trainer(Pair(), "sgd", "mse", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Pairs(), batch_size=8, verbose=0, callbacks=[TensorBoard(tmp_path)])
    assert not [w for w in caught if "model graph" in str(w.message)]
    nodes = [node.name for node in read_run(tmp_path, "train").Graph().node]
    assert any("left" in name for name in nodes) and any("right" in name for name in nodes)


def _graph_nodes(log_dir, trainer, x, y, **fit):
    """Fit with a TensorBoard writing the graph: its node names, and no graph warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(x, y, verbose=0, callbacks=[TensorBoard(log_dir)], **fit)
    assert not [str(w.message) for w in caught if "model graph" in str(w.message)]
    return [node.name for node in read_run(log_dir, "train").Graph().node]


@pytest.mark.parametrize("returns", ["dict", "tuple with None"])
def test_graph_of_a_model_with_dict_or_nested_outputs(tmp_path, returns):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.price_head, self.kind_head = torch.nn.Linear(3, 1), torch.nn.Linear(3, 2)

        def forward(self, x):
            price, kind = self.price_head(x), self.kind_head(x)
            return {"price": price, "kind": kind} if returns == "dict" else (price, [kind, None])

    def loss(outputs, y):
        price, kind = outputs.values() if returns == "dict" else (outputs[0], outputs[1][0])
        return (price - y).square().mean() + kind.square().mean()

    x = torch.randn(16, 3)
    trainer = Trainer(TwoHeads(), "sgd", loss, device="cpu")
    nodes = _graph_nodes(tmp_path, trainer, x, x[:, :1], batch_size=8)
    assert any("price_head" in name for name in nodes)
    assert any("kind_head" in name for name in nodes)


def test_graph_of_a_huggingface_model_on_dict_batches(tmp_path):
    """A tiny BERT (random weights) returns a ModelOutput and is called with keywords."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(1, 64, (16, 8))
    rows = [
        {"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": i % 2}
        for i in range(16)
    ]
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3), device="cpu")
    nodes = _graph_nodes(tmp_path, trainer, torch.utils.data.DataLoader(rows, batch_size=8), None)
    assert {"input/input_ids", "input/attention_mask.1", "input/labels"} <= set(nodes)
    assert any("BertEmbeddings[embeddings]" in name for name in nodes)
    assert any("Linear[classifier]" in name for name in nodes)


def test_graph_of_a_compiled_model_is_the_original_modules(tmp_path):
    if not hasattr(torch, "compile"):
        pytest.skip("no torch.compile")
    plain_trainer, x, y = make_trainer()
    plain = _graph_nodes(tmp_path / "plain", plain_trainer, x, y, batch_size=8)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    compiled = Trainer(torch.compile(model, backend="eager"), "sgd", "mse", device="cpu")
    assert _graph_nodes(tmp_path / "compiled", compiled, x, y, batch_size=8) == plain
