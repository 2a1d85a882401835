"""Inputs as users have them: pandas objects, float64 tensors, int32 labels, torchmetrics
objects without a name, and outputs whose structure does not fit the loss."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAUROC, MulticlassF1Score

from torchcallbacks import EarlyStopping, Trainer


def classifier(features: int = 4, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(features, 16), torch.nn.ReLU(), torch.nn.Linear(16, classes)
    )


def frame(samples: int = 60) -> tuple[pd.DataFrame, pd.Series]:
    generator = np.random.default_rng(0)
    features = pd.DataFrame(
        {
            "age": generator.normal(40, 10, samples),  # float64
            "visits": generator.integers(0, 20, samples),  # int64
            "score": generator.normal(0, 1, samples).astype("float32"),
            "member": generator.random(samples) > 0.5,  # bool
        }
    )
    labels = pd.Series((features["score"] > 0).astype("int32") + (features["visits"] > 10))
    return features, labels


def test_pandas_dataframe_and_series_train_evaluate_and_predict_like_numpy():
    features, labels = frame()
    as_numpy = features.to_numpy(dtype=np.float32), labels.to_numpy()

    results = []
    for x, y in [(features, labels), as_numpy]:
        trainer = Trainer(classifier(), "adam", "cross_entropy", metrics=["accuracy"])
        history = trainer.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
        evaluation = trainer.evaluate(x, y, verbose=0, return_dict=True)
        predictions = trainer.predict(x, verbose=0)
        results.append((history.history, evaluation, predictions))
    (history, evaluation, predictions), (np_history, np_evaluation, np_predictions) = results
    assert history.keys() == np_history.keys()
    for key, values in history.items():
        assert values == pytest.approx(np_history[key]), key
    assert evaluation == pytest.approx(np_evaluation)
    assert predictions.shape == (60, 3)
    assert torch.allclose(predictions, np_predictions)

    # validation_data as DataFrame/Series, and a single-column frame as targets
    trainer = Trainer(classifier(4, 1), "sgd", "mse")
    history = trainer.fit(
        features,
        features[["score"]],
        validation_data=(features.head(10), features[["score"]].head(10)),
        epochs=1,
        verbose=0,
    )
    assert set(history.history) == {"loss", "val_loss"}


def test_pandas_non_numeric_columns_are_named():
    features, labels = frame(8)
    features["city"] = ["Oslo", "Lima"] * 4
    with pytest.raises(TypeError, match=r"non-numeric column.*'city'.*get_dummies"):
        Trainer(classifier(5), "adam", "cross_entropy").fit(features, labels, verbose=0)


def test_data_that_is_missing_or_not_data_is_refused_by_the_method_given_it():
    trainer = Trainer(classifier(), "adam", "cross_entropy")
    with pytest.raises(TypeError, match=r"^evaluate needs the data: evaluate\(x, y"):
        trainer.evaluate(None, verbose=0)
    with pytest.raises(TypeError, match=r"^predict needs the inputs: predict\(x"):
        trainer.predict(None, verbose=0)
    with pytest.raises(TypeError, match=r"^fit needs the training data"):
        trainer.fit(None, verbose=0)
    # a path is not data (its characters would be taken as batches)
    with pytest.raises(TypeError, match=r"the str 'data\.csv'.*pandas\.read_csv"):
        trainer.predict("data.csv", verbose=0)
    with pytest.raises(TypeError, match=r"cannot make batches of a float: pass a DataLoader"):
        trainer.evaluate(3.0, verbose=0)


def test_a_python_list_of_labels_is_refused_naming_the_array_to_pass():
    x = torch.randn(8, 4)
    with pytest.raises(TypeError, match=r"list of 8 numbers.*np\.asarray\(values\)"):
        Trainer(classifier(), "adam", "cross_entropy").fit(x, [0, 1, 2, 1] * 2, verbose=0)


def test_float64_tensors_are_cast_to_the_parameters_dtype():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    trainer = Trainer(classifier(), "sgd", "cross_entropy", device="cpu")
    history = trainer.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with torch.no_grad():
        expected = trainer.model(x.float())
    assert torch.equal(trainer.predict(x, verbose=0), expected)
    # and a float64 model gets float64 inputs (float32 tensors and DataLoader batches)
    double = classifier().double()
    loader = DataLoader(TensorDataset(x.float(), y), batch_size=8)
    result = Trainer(double, "sgd", "cross_entropy", device="cpu").evaluate(loader, verbose=0)
    with torch.no_grad():
        assert result == pytest.approx(F.cross_entropy(double(x.float().double()), y).item())


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
@pytest.mark.parametrize("loss", ["cross_entropy", "sparse_categorical_crossentropy"])
def test_integer_labels_of_any_dtype_work_with_the_crossentropy_losses(dtype, loss):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(24, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = classifier()
    if loss == "sparse_categorical_crossentropy":
        model = torch.nn.Sequential(model, torch.nn.Softmax(-1))
    trainer = Trainer(model, "sgd", loss, metrics=["accuracy"], device="cpu")
    result = trainer.evaluate(x, y.to(dtype), verbose=0, return_dict=True)
    with torch.no_grad():
        logits = classifier()(x)
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert np.isfinite(trainer.fit(x, y.to(dtype), epochs=1, verbose=0).history["loss"][0])


def test_class_labels_as_a_column_are_compared_per_sample_as_keras_does():
    # Keras's datasets (CIFAR-10) and df[["label"]] give labels of shape (N, 1).
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(24, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    column = y[:, None].numpy().astype(np.int32)
    with torch.no_grad():
        logits = classifier()(x)
    expected_accuracy = (logits.argmax(-1) == y).float().mean().item()
    probabilities = torch.nn.Sequential(classifier(), torch.nn.Softmax(-1))
    trainer = Trainer(probabilities, "sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    result = trainer.evaluate(x, column, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected_accuracy)

    # accuracy never broadcasts (N,) predictions against (N, 1) labels, whatever the loss
    def own_loss(y_pred, y_true):
        return F.cross_entropy(y_pred, y_true.squeeze(-1).long())

    trainer = Trainer(classifier(), "sgd", own_loss, metrics=["accuracy"], device="cpu")
    result = trainer.evaluate(x, column, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(expected_accuracy)
    with pytest.raises(ValueError, match=r"'cross_entropy'.*\(24, 1\).*y\.squeeze\(-1\)"):
        Trainer(classifier(), "sgd", "cross_entropy").evaluate(x, column, batch_size=24, verbose=0)


def test_metric_objects_without_a_name_are_logged_in_keras_snake_case():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(90, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    trainer = Trainer(
        classifier(),
        "adam",
        "cross_entropy",
        metrics=[MulticlassAUROC(num_classes=3), MulticlassF1Score(num_classes=3)],
    )
    stopper = EarlyStopping(monitor="val_multiclass_auroc", patience=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing monitor would warn
        history = trainer.fit(x, y, epochs=5, validation_split=0.3, verbose=0, callbacks=[stopper])
    assert list(history.history) == [
        "loss",
        "multiclass_auroc",
        "multiclass_f1_score",
        "val_loss",
        "val_multiclass_auroc",
        "val_multiclass_f1_score",
    ]
    assert stopper.best == max(history.history["val_multiclass_auroc"])  # higher is better


class DictOutput(torch.nn.Module):
    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)
        self.as_tuple = as_tuple

    def forward(self, x):
        logits = self.layer(x)
        if self.as_tuple:
            return logits, logits.softmax(-1)
        return {"logits": logits, "probabilities": logits.softmax(-1)}


def test_structured_outputs_with_a_single_loss_name_the_keys_and_the_fix():
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError) as info:
        Trainer(DictOutput(), "sgd", "cross_entropy").fit(x, y, verbose=0)
    message = str(info.value)
    assert "'logits': shape (8, 3)" in message and "'probabilities'" in message
    assert "loss={'logits': 'cross_entropy'}" in message
    with pytest.raises(ValueError, match=r"tuple of 2 outputs.*loss=\['mse', \.\.\.\]"):
        Trainer(DictOutput(as_tuple=True), "sgd", "mse").fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"loss is a dict over the outputs \['logits'\].*single"):
        Trainer(DictOutput(), "sgd", {"logits": "cross_entropy"}).fit(x, y, verbose=0)
    # What the messages propose works.
    history = Trainer(DictOutput(), "sgd", {"logits": "cross_entropy"}).fit(
        x, {"logits": y}, verbose=0
    )
    assert set(history.history) == {"loss", "logits_loss"}

    def first_output(outputs, targets):  # a callable of the user's may take the structure
        return F.cross_entropy(outputs[0], targets)

    history = Trainer(DictOutput(as_tuple=True), "sgd", first_output).fit(x, y, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_pandas_lightning_and_transformers_stay_unimported():
    """The optional packages are imported only when the user's own objects come from them."""
    code = (
        "import sys, numpy as np, torch\n"
        "from torchcallbacks import Trainer\n"
        "x = np.random.rand(16, 3); y = np.random.rand(16, 1)\n"
        "Trainer(torch.nn.Linear(3, 1), 'sgd', 'mse').fit(x, y, verbose=0)\n"
        "print(sorted({'pandas', 'lightning', 'transformers', 'torchmetrics'} & set(sys.modules)))"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_plain_module_without_a_loss_is_told_to_pass_one():
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    trainer = Trainer(classifier(), "sgd")
    with pytest.raises(ValueError, match=r"No loss given: pass loss=.*it returned a Tensor"):
        trainer.fit(x, y, verbose=0)
    assert trainer.predict(x, verbose=0).shape == (8, 3)  # predict needs no loss


class ScoresItself(torch.nn.Module):
    """Returns its own loss as a dict key when given labels, as HuggingFace models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 3)

    def forward(self, x, scale, labels=None):
        logits = self.layer(x) * scale
        if labels is None:
            return {"logits": logits}
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def test_a_module_returning_its_own_loss_from_tensor_inputs():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(40, 4, generator=generator)
    scale = torch.full((40, 1), 2.0)
    y = (x[:, 0] > 0).long()
    model = ScoresItself()
    trainer = Trainer(model, "sgd", metrics=["accuracy"], device="cpu")
    history = trainer.fit((x, scale), y, epochs=3, batch_size=8, verbose=0)  # labels=y_batch
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = trainer.evaluate((x, scale), y, verbose=0, return_dict=True)
    with torch.no_grad():
        logits = model(x, scale)["logits"]
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert torch.allclose(trainer.predict((x, scale), verbose=0), logits)  # the logits


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy"])
def test_a_pandas_series_target_goes_with_a_one_unit_output(loss):
    """Keras matches the ranks of a 1-D target and an (N, 1) output: the common tabular case
    ``fit(df[features], df["label"])`` for regression and binary models."""
    features, labels = frame()
    target = (labels > 0).astype("float32")
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 1)] + ([torch.nn.Sigmoid()] if loss != "mse" else [])
    model = torch.nn.Sequential(*layers)
    reference = copy.deepcopy(model)  # the weights before training
    trainer = Trainer(model, "sgd", loss, device="cpu")
    history = trainer.fit(features, target, epochs=2, batch_size=60, shuffle=False, verbose=0)
    # the same as a column target of shape (N, 1), computed by hand on the first batch
    x = torch.tensor(features.to_numpy(dtype="float32"))
    y = torch.tensor(target.to_numpy()).unsqueeze(1)
    expected = (F.mse_loss if loss == "mse" else F.binary_cross_entropy)(reference(x), y)
    assert history.history["loss"][0] == pytest.approx(expected.item(), rel=1e-5)
    assert trainer.evaluate(features, target, verbose=0) == pytest.approx(
        trainer.evaluate(x, y, verbose=0)
    )
    with pytest.raises(
        ValueError, match=r"output has shape \(\d+, 1\) but the target has shape \(\d+, 2\)"
    ):
        trainer.evaluate(features, torch.zeros(60, 2), verbose=0)


def test_integer_and_boolean_frames_are_features_like_float_ones():
    """Keras trains a frame of counts or flags: it becomes floating point like any frame."""
    generator = np.random.default_rng(0)
    counts = pd.DataFrame(generator.integers(0, 5, (32, 4)), columns=list("abcd"))
    flags = counts > 2
    labels = pd.Series(generator.integers(0, 3, 32))
    for features in (counts, flags):
        trainer = Trainer(classifier(), "adam", "cross_entropy", metrics=["accuracy"])
        history = trainer.fit(features, labels, epochs=1, batch_size=8, verbose=0)
        reference = Trainer(classifier(), "adam", "cross_entropy", metrics=["accuracy"])
        as_floats = features.to_numpy(dtype=np.float32), labels.to_numpy()
        expected = reference.fit(*as_floats, epochs=1, batch_size=8, verbose=0)
        for key, values in expected.history.items():
            assert history.history[key] == pytest.approx(values), key


def test_predict_on_dict_batches_leaves_their_labels_out():
    """The loader that trained (dict batches with "labels") also predicts, as Keras's
    predict ignores targets."""

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = classifier()

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.linear(features)

    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    rows = [{"features": x[i], "labels": y[i]} for i in range(32)]
    loader = DataLoader(rows, batch_size=8)
    model = Features()
    trainer = Trainer(model, "adam", "cross_entropy")
    trainer.fit(loader, epochs=1, verbose=0)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(trainer.predict(loader, verbose=0), expected)
    assert torch.allclose(trainer.predict_on_batch(next(iter(loader))), expected[:8])


class SampleStream(torch.utils.data.IterableDataset):
    """A streaming dataset: one ``(features, target)`` sample at a time, as torch's
    IterableDatasets yield them for a DataLoader to batch."""

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for _ in range(40):
            x = torch.randn(4, generator=generator)
            yield x, x.sum(0, keepdim=True)


def test_an_iterable_dataset_given_a_batch_size_is_batched_with_it():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    expected = copy.deepcopy(model)
    optimizer = torch.optim.SGD(expected.parameters(), lr=0.1)
    for x, y in DataLoader(SampleStream(), batch_size=8):  # the hand loop
        optimizer.zero_grad()
        F.mse_loss(expected(x), y).backward()
        optimizer.step()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the batch size is used: no warning that it is not
        history = trainer.fit(SampleStream(), batch_size=8, verbose=0)
    assert torch.equal(model.weight, expected.weight) and torch.equal(model.bias, expected.bias)
    batched = DataLoader(SampleStream(), batch_size=10)
    assert trainer.evaluate(SampleStream(), batch_size=10, verbose=0) == pytest.approx(
        trainer.evaluate(batched, verbose=0), rel=1e-6
    )
    assert trainer.predict(SampleStream(), batch_size=10, verbose=0).shape == (40, 1)
    assert len(history.history["loss"]) == 1
