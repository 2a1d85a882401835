"""Trainer data paths, losses, metrics, multi-output models and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import linear_model
from torch.utils.data import DataLoader, TensorDataset

from torchcallbacks import Callback, LambdaCallback, TensorBoard, Trainer


def _fit_loss(x, y=None, **kwargs):
    trainer = Trainer(linear_model(), "sgd", "mse")
    history = trainer.fit(x, y, epochs=1, verbose=0, shuffle=False, **kwargs)
    return history.history["loss"][0], trainer


def test_tensor_numpy_dataset_loader_and_iterable_inputs_agree(regression_data):
    x, y = regression_data
    expected, _ = _fit_loss(x, y, batch_size=5)
    assert _fit_loss(x.numpy(), y.numpy(), batch_size=5)[0] == pytest.approx(expected)
    assert _fit_loss(TensorDataset(x, y), batch_size=5)[0] == pytest.approx(expected)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    assert _fit_loss(loader)[0] == pytest.approx(expected)
    batches = [(x[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5)]
    assert _fit_loss(batches)[0] == pytest.approx(expected)


def test_validation_split_takes_the_last_fraction_before_shuffling(regression_data):
    x, y = regression_data
    trainer = Trainer(linear_model(), "sgd", "mse")
    history = trainer.fit(x, y, epochs=1, verbose=0, validation_split=0.25)
    tail = Trainer(trainer.model, loss="mse").evaluate(x[15:], y[15:], verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(tail, rel=1e-6)
    assert history.params["steps"] == 1  # 15 training samples, batch 32


def test_validation_data_as_a_list_of_arrays_is_the_pair_as_in_keras(regression_data):
    x, y = regression_data
    trainer = Trainer(linear_model(), "sgd", "mse")
    history = trainer.fit(x, y, epochs=1, verbose=0, validation_data=[x[15:], y[15:].numpy()])
    tail = trainer.evaluate(x[15:], y[15:], verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(tail, rel=1e-6)
    # a list of batches is still an iterable of batches
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    history = trainer.fit(x, y, epochs=1, verbose=0, validation_data=batches)
    assert history.history["val_loss"][0] == pytest.approx(trainer.evaluate(x, y, verbose=0))


def test_validation_data_as_a_list_with_several_inputs_or_outputs_is_the_pair_as_in_keras():
    generator = torch.Generator().manual_seed(4)
    text, numeric = torch.randn(20, 4, generator=generator), torch.randn(20, 4, generator=generator)
    priority = torch.randint(0, 2, (20, 1), generator=generator).float()
    department = torch.randint(0, 3, (20,), generator=generator)
    trainer = Trainer(TwoHeads(as_dict=False), "sgd", ["binary_crossentropy", "cross_entropy"])
    expected = trainer.evaluate((text, numeric), (priority, department), verbose=0)
    pairs = {  # Keras's [x_val, y_val] with a list of inputs, and with a list of targets
        "several inputs": [[text, numeric], (priority, department)],
        "several inputs and outputs": [(text, numeric), [priority, department]],
        "dict inputs": [{"text": text, "numeric": numeric}, (priority, department)],
    }
    for name, validation_data in pairs.items():
        history = trainer.fit(
            (text, numeric), (priority, department), epochs=1, verbose=0,
            validation_data=validation_data,
        )  # fmt: skip
        evaluated = trainer.evaluate((text, numeric), (priority, department), verbose=0)
        assert history.history["val_loss"][0] == pytest.approx(evaluated[0], rel=1e-6), name
        assert evaluated != expected  # each fit trained: the val_loss is after the epoch


def test_steps_per_epoch_and_validation_steps(regression_data):
    x, y = regression_data
    counted = []

    class Count(Callback):
        def on_train_batch_end(self, batch, logs=None):
            counted.append(("train", batch))

        def on_test_batch_end(self, batch, logs=None):
            counted.append(("val", batch))

    Trainer(linear_model(), "sgd", "mse").fit(
        x,
        y,
        batch_size=2,
        epochs=1,
        verbose=0,
        steps_per_epoch=3,
        validation_steps=2,
        validation_data=(x, y),
        callbacks=[Count()],
    )
    assert counted == [("train", 0), ("train", 1), ("train", 2), ("val", 0), ("val", 1)]


def test_accuracy_metric_binary_sparse_and_one_hot():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    sparse = torch.tensor([0, 1, 1, 1])
    one_hot = torch.nn.functional.one_hot(sparse, 2).float()
    trainer = Trainer(torch.nn.Identity(), loss="cross_entropy", metrics=["accuracy"])
    assert trainer.evaluate(logits, sparse, verbose=0)[1] == pytest.approx(0.75)
    trainer = Trainer(torch.nn.Identity(), loss="categorical_crossentropy", metrics=["acc"])
    probabilities = logits.softmax(-1)
    result = trainer.evaluate(probabilities, one_hot, verbose=0, return_dict=True)
    assert set(result) == {"loss", "acc"} and result["acc"] == pytest.approx(0.75)
    expected = -(one_hot * probabilities.log()).sum(-1).mean().item()
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    trainer = Trainer(torch.nn.Identity(), loss="binary_crossentropy", metrics=["accuracy"])
    p = torch.tensor([[0.9], [0.2], [0.6], [0.4]])
    t = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    assert trainer.evaluate(p, t, verbose=0)[1] == pytest.approx(0.75)


def test_accuracy_reads_classes_on_dimension_1_for_segmentation_scores():
    # (N, C, H, W) scores for (N, H, W) labels, as cross_entropy takes them: pixel accuracy
    torch.manual_seed(0)
    scores, labels = torch.randn(4, 3, 5, 7), torch.randint(0, 3, (4, 5, 7))
    labels[0, 0] = -100  # ignored pixels are left out, as cross_entropy leaves them out
    trainer = Trainer(torch.nn.Identity(), loss="cross_entropy", metrics=["accuracy"])
    result = trainer.evaluate(scores, labels, batch_size=4, verbose=0, return_dict=True)
    kept = labels != -100
    expected = (scores.argmax(1) == labels)[kept].float().mean().item()
    assert result["accuracy"] == pytest.approx(expected)


def test_keras_metric_names_compute_what_keras_computes_under_their_names():
    torch.manual_seed(0)
    probabilities, multi_label = torch.rand(12, 3), torch.randint(0, 2, (12, 3)).float()
    weights = torch.rand(12)
    trainer = Trainer(torch.nn.Identity(), loss="binary_crossentropy",
                      metrics=["binary_accuracy", "mean_absolute_error", "mean_squared_error"],
                      weighted_metrics=["binary_accuracy"])  # fmt: skip
    logs = trainer.evaluate(probabilities, multi_label, sample_weight=weights, batch_size=12,
                            verbose=0, return_dict=True)  # fmt: skip
    per_sample = ((probabilities > 0.5).float() == multi_label).float().mean(-1)  # Keras's
    assert logs["binary_accuracy"] == pytest.approx(per_sample.mean().item())
    weighted = (per_sample * weights).sum() / weights.sum()
    assert logs["weighted_binary_accuracy"] == pytest.approx(weighted.item())
    assert logs["mean_absolute_error"] == pytest.approx(
        (probabilities - multi_label).abs().mean().item()
    )
    assert logs["mean_squared_error"] == pytest.approx(
        (probabilities - multi_label).square().mean().item()
    )

    scores, labels = torch.randn(12, 4), torch.randint(0, 4, (12,))
    trainer = Trainer(torch.nn.Identity(), loss="categorical_crossentropy",
                      metrics=["categorical_accuracy"])  # fmt: skip
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    logs = trainer.evaluate(scores.softmax(-1), one_hot, verbose=0, return_dict=True)
    assert logs["categorical_accuracy"] == pytest.approx(
        (scores.argmax(-1) == labels).float().mean().item()
    )
    trainer = Trainer(torch.nn.Identity(), loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])  # fmt: skip
    column = labels.unsqueeze(1)  # Keras's datasets give labels as a column
    logs = trainer.evaluate(scores.softmax(-1), column, verbose=0, return_dict=True)
    assert logs["sparse_categorical_accuracy"] == pytest.approx(
        (scores.argmax(-1) == labels).float().mean().item()
    )


def test_a_keras_metric_name_is_monitored_as_keras_monitors_it(tmp_path, capsys):
    # the defaults (verbose="auto"), validation_split, and a checkpoint on the Keras name
    from torchcallbacks import ModelCheckpoint

    torch.manual_seed(0)
    x = torch.randn(96, 4)
    y = torch.randint(0, 2, (96, 1))  # labels as a column, as Keras's datasets give them
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Softmax(-1))
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)  # values that go up and down
    trainer = Trainer(model, optimizer, "sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])  # fmt: skip
    best = ModelCheckpoint(tmp_path / "best.pt", monitor="val_sparse_categorical_accuracy",
                           save_best_only=True, save_weights_only=True)  # fmt: skip
    history = trainer.fit(x, y, batch_size=8, epochs=6, validation_split=0.25, callbacks=[best])
    accuracies = history.history["val_sparse_categorical_accuracy"]
    assert max(accuracies) > accuracies[-1] and max(accuracies) > accuracies[0]
    assert best.best_score == pytest.approx(max(accuracies))  # mode "auto": the highest
    assert "sparse_categorical_accuracy:" in capsys.readouterr().out  # the progress bar


def test_metric_objects_and_callables_named_in_logs(regression_data):
    x, y = regression_data

    class KerasStyleMean:
        name = "mean_pred"

        def __init__(self):
            self.reset_state()

        def update_state(self, y_true, y_pred):
            self.total += y_pred.sum().item()
            self.count += y_pred.numel()

        def result(self):
            return self.total / self.count

        def reset_state(self):
            self.total, self.count = 0.0, 0

    class TorchmetricsStyleMax:
        def __init__(self):
            self.reset()

        def update(self, preds, target):
            self.value = max(self.value, preds.max().item())

        def compute(self):
            return torch.tensor(self.value)

        def reset(self):
            self.value = float("-inf")

    def max_error(y_pred, y_true):
        return (y_pred - y_true).abs().amax(dim=1)

    model = linear_model()
    trainer = Trainer(
        model, loss="mse", metrics=[KerasStyleMean(), TorchmetricsStyleMax(), max_error, "mse"]
    )
    result = trainer.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    with torch.no_grad():
        predictions = model(x)
    # Keras's order: the loss, then the metrics as given, whatever their kind.
    assert list(result) == ["loss", "mean_pred", "torchmetrics_style_max", "max_error", "mse"]
    assert result["mean_pred"] == pytest.approx(predictions.mean().item(), rel=1e-5)
    assert result["torchmetrics_style_max"] == pytest.approx(predictions.max().item())
    assert result["max_error"] == pytest.approx((predictions - y).abs().mean().item(), rel=1e-5)
    assert result["mse"] == pytest.approx(result["loss"], rel=1e-6)
    as_list = trainer.evaluate(x, y, batch_size=7, verbose=0, return_dict=False)
    assert as_list == pytest.approx(list(result.values()))


class TwoHeads(torch.nn.Module):
    def __init__(self, as_dict: bool):
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.priority = torch.nn.Linear(8, 1)
        self.department = torch.nn.Linear(8, 3)
        self.as_dict = as_dict

    def forward(self, text, numeric):
        hidden = torch.relu(self.body(text + numeric))
        outputs = (torch.sigmoid(self.priority(hidden)), self.department(hidden))
        return dict(zip(("priority", "department"), outputs)) if self.as_dict else outputs


def test_multi_input_multi_output_dict_losses_and_metrics():
    generator = torch.Generator().manual_seed(3)
    inputs = {
        "text": torch.randn(30, 4, generator=generator),
        "numeric": torch.randn(30, 4, generator=generator),
    }
    targets = {
        "priority": torch.randint(0, 2, (30, 1), generator=generator).float(),
        "department": torch.randint(0, 3, (30,), generator=generator),
    }
    trainer = Trainer(
        TwoHeads(as_dict=True),
        "adam",
        loss={"priority": "binary_crossentropy", "department": "cross_entropy"},
        metrics={"priority": ["accuracy"], "department": ["accuracy"]},
    )
    history = trainer.fit(inputs, targets, batch_size=8, epochs=2, verbose=0, validation_split=0.2)
    assert set(history.history) == {
        "loss",
        "priority_loss",
        "department_loss",
        "priority_accuracy",
        "department_accuracy",
        "val_loss",
        "val_priority_loss",
        "val_department_loss",
        "val_priority_accuracy",
        "val_department_accuracy",
    }
    logs = history.history
    assert logs["loss"][-1] == pytest.approx(
        logs["priority_loss"][-1] + logs["department_loss"][-1], rel=1e-5
    )
    predictions = trainer.predict(inputs, batch_size=7, verbose=0)
    assert predictions["priority"].shape == (30, 1)
    assert predictions["department"].shape == (30, 3)


def test_multi_output_list_losses_with_tuple_inputs():
    generator = torch.Generator().manual_seed(4)
    text, numeric = torch.randn(16, 4, generator=generator), torch.randn(16, 4, generator=generator)
    targets = (
        torch.rand(16, 1, generator=generator).round(),
        torch.randint(0, 3, (16,), generator=generator),
    )
    trainer = Trainer(
        TwoHeads(as_dict=False),
        "sgd",
        loss=["binary_crossentropy", "cross_entropy"],
        metrics=["accuracy"],
    )
    result = trainer.evaluate((text, numeric), targets, verbose=0, return_dict=True)
    assert set(result) == {
        "loss",
        "output_1_loss",
        "output_2_loss",
        "output_1_accuracy",
        "output_2_accuracy",
    }
    predictions = trainer.predict((text, numeric), verbose=0)
    assert isinstance(predictions, tuple) and predictions[1].shape == (16, 3)


def test_optimizer_names_build_on_model_parameters(regression_data):
    x, y = regression_data
    for name, kind in [
        ("adam", torch.optim.Adam),
        ("SGD", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
        ("adamw", torch.optim.AdamW),
        ("adagrad", torch.optim.Adagrad),
    ]:
        model = linear_model()
        trainer = Trainer(model, name, "mse")
        assert isinstance(trainer.optimizer, kind)
        before = model.weight.detach().clone()
        trainer.fit(x, y, epochs=1, verbose=0)
        assert not torch.equal(before, model.weight)


def test_fit_with_lr_helpers_keeps_group_ratios():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[1].parameters(), "lr": 0.01},
        ]
    )
    trainer = Trainer(model, optimizer, "mse")
    trainer.set_lr(0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])
    assert trainer.get_lr() == 0.5


# -- bad input ---------------------------------------------------------------------------------
def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown loss name 'msee'.*mse"):
        Trainer(linear_model(), "sgd", "msee")
    with pytest.raises(ValueError, match=r"Unknown optimizer name 'adamm'.*adam, adamw"):
        Trainer(linear_model(), "adamm", "mse")
    with pytest.raises(ValueError, match=r"Unknown metric name 'accurcy'.*accuracy"):
        Trainer(linear_model(), "sgd", "mse", metrics=["accurcy"])


def test_fit_without_optimizer_says_how_to_pass_one(regression_data):
    x, y = regression_data
    trainer = Trainer(linear_model(), loss="mse")
    assert isinstance(trainer.evaluate(x, y, verbose=0), float)
    with pytest.raises(ValueError, match=r"without an optimizer.*optimizer="):
        trainer.fit(x, y)


def test_mismatched_x_y_lengths_name_both(regression_data):
    x, y = regression_data
    with pytest.raises(ValueError, match=r"x has 20, y has 19"):
        Trainer(linear_model(), "sgd", "mse").fit(x, y[:19], verbose=0)


def test_shape_mismatch_reports_shapes_and_loss_name(regression_data):
    x, y = regression_data
    with pytest.raises(ValueError, match=r"loss 'mse'.*\(5, 1\).*\(5, 2\)"):
        Trainer(linear_model(), "sgd", "mse").fit(x, y.repeat(1, 2), batch_size=5, verbose=0)

    def per_sample(y_pred, y_true):
        return (y_pred - y_true) ** 2

    with pytest.raises(ValueError, match=r"loss 'per_sample' returned a tensor of shape"):
        Trainer(linear_model(), "sgd", per_sample).fit(x, y, verbose=0)


def test_non_callback_is_named(regression_data):
    x, y = regression_data
    with pytest.raises(TypeError, match=r"print.*builtin_function_or_method"):
        Trainer(linear_model(), "sgd", "mse").fit(x, y, callbacks=[print], verbose=0)


def test_batches_that_are_not_pairs_are_explained(regression_data):
    x, _ = regression_data
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pair"):
        Trainer(linear_model(), "sgd", "mse").fit(DataLoader(TensorDataset(x)), verbose=0)


def test_numpy_float64_is_trained_as_float32(regression_data):
    x, y = regression_data
    history = Trainer(linear_model(), "sgd", "mse").fit(
        x.double().numpy(), y.double().numpy(), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


def _batchnorm_net():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8))
    return backbone, torch.nn.Sequential(backbone, torch.nn.ReLU(), torch.nn.Linear(8, 1))


def test_parts_set_to_eval_stay_frozen_through_fit_validation_and_graph(tmp_path, regression_data):
    """Fine-tuning: a backbone put in eval() keeps its BatchNorm statistics, although the
    loop switches modes for validation and TensorBoard traces the graph."""
    x, y = regression_data
    backbone, model = _batchnorm_net()
    backbone.eval()
    backbone.requires_grad_(False)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainer = Trainer(model, "sgd", "mse", device="cpu")
    trainer.fit(
        x, y, epochs=3, batch_size=8, validation_data=(x[:16], y[:16]), verbose=0,
        callbacks=[TensorBoard(str(tmp_path))],
    )  # fmt: skip
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert model.training and not backbone.training and not backbone[1].training


def test_a_module_in_eval_mode_as_a_whole_is_trained_in_train_mode(regression_data):
    x, y = regression_data
    backbone, model = _batchnorm_net()
    model.eval()
    before = backbone[1].running_mean.clone()
    Trainer(model, "sgd", "mse", device="cpu").fit(x, y, epochs=1, verbose=0)
    assert not torch.equal(backbone[1].running_mean, before)  # BatchNorm ran in train mode
    assert not model.training and not backbone[1].training  # and the modes are given back


def test_a_checkpoint_state_loads_into_a_fresh_trainer_and_resumes(regression_data):
    """``checkpoint_state`` → ``load_checkpoint_state``: the same predictions, and with
    ``resume=True`` the next fit continues at the saved epoch with the same optimizer."""
    x, y = regression_data
    torch.manual_seed(0)
    trainer = Trainer(linear_model(), "adam", "mse", device="cpu")
    trainer.fit(x, y, epochs=2, verbose=0)
    state = trainer.checkpoint_state(epoch=1)
    fresh = Trainer(linear_model(), "adam", "mse", device="cpu")
    fresh.load_checkpoint_state(state)
    assert torch.equal(fresh.predict(x, verbose=0), trainer.predict(x, verbose=0))
    saved_steps = trainer.optimizer.state_dict()["state"][0]["step"]
    assert fresh.optimizer.state_dict()["state"][0]["step"] == saved_steps > 0
    resumed = Trainer(linear_model(), "adam", "mse", device="cpu")
    resumed.load_checkpoint_state(state, resume=True)
    started = []
    record = LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch))
    resumed.fit(x, y, epochs=4, verbose=0, callbacks=[record])
    assert started == [2, 3]
