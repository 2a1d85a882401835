"""HuggingFace transformers models, built from tiny configs with random weights (nothing is
downloaded), trained by our Trainer as their users feed them: dict batches, own loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import bert_config
from torch.utils.data import DataLoader
from transformers import (
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
)

from torchcallbacks import EarlyStopping, ModelCheckpoint, Trainer, load_checkpoint

SEQUENCE = 8


def gpt2_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=32,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )


def classification_rows(samples: int, seed: int, random_labels: bool = False) -> list[dict]:
    """What a tokenizer and a datasets.Dataset give: one dict per example."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (samples, SEQUENCE), generator=generator)
    labels = (ids[:, 0] < 32).long()
    if random_labels:
        labels = torch.randint(0, 2, (samples,), generator=generator)
    mask = torch.ones(SEQUENCE, dtype=torch.long)
    return [
        {"input_ids": ids[i], "attention_mask": mask, "labels": labels[i]} for i in range(samples)
    ]


def test_bert_trains_on_its_own_loss_with_early_stopping_and_a_reloadable_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config())
    train = DataLoader(classification_rows(64, seed=1), batch_size=16, shuffle=True)
    # Validation labels are noise: the better the model fits, the worse val_loss gets.
    val = DataLoader(classification_rows(32, seed=2, random_labels=True), batch_size=16)
    stopper = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    checkpoint = ModelCheckpoint(
        str(tmp_path / "best.pt"), monitor="val_loss", save_best_only=True, save_weights_only=True
    )
    trainer = Trainer(  # no loss=: the model's own loss, from the batch's labels
        model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
        metrics=["accuracy"],
        device="cpu",
    )
    history = trainer.fit(
        train, validation_data=val, epochs=20, verbose=0, callbacks=[stopper, checkpoint]
    )
    logged = history.history
    assert list(logged) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert logged["loss"][-1] < logged["loss"][0]
    assert stopper.stopped_epoch == stopper.best_epoch + 1 == len(history.epoch) - 1 < 19

    # accuracy scores the logits against the batch's labels, exactly
    result = trainer.evaluate(val, verbose=0, return_dict=True)
    batch = next(iter(DataLoader(classification_rows(32, seed=2, random_labels=True), 32)))
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    assert result["loss"] == pytest.approx(output.loss.item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx(
        (output.logits.argmax(-1) == batch["labels"]).float().mean().item()
    )
    assert result["loss"] == pytest.approx(min(logged["val_loss"]), rel=1e-5)  # best restored

    # The checkpoint reloads into a fresh model with identical outputs; predict gives logits.
    torch.manual_seed(1)
    fresh = BertForSequenceClassification(bert_config())
    fresh.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    logits = trainer.predict(val, verbose=0)
    assert logits.shape == (32, 2)
    assert torch.equal(Trainer(fresh, device="cpu").predict(val, verbose=0), logits)
    assert torch.allclose(logits, output.logits, atol=1e-6)


def test_gpt2_language_model_trains_from_dict_batches_and_resumes_from_full_checkpoint(tmp_path):
    torch.manual_seed(0)
    # Counting sequences (t, t+1, ...) mod 32: learnable next-token structure.
    starts = torch.randint(0, 32, (48, 1), generator=torch.Generator().manual_seed(3))
    sequences = (torch.arange(12) + starts) % 32
    mask = torch.ones(12, dtype=torch.long)
    rows = [{"input_ids": s, "attention_mask": mask, "labels": s} for s in sequences]
    loader = DataLoader(rows, batch_size=16, shuffle=True)
    model = GPT2LMHeadModel(gpt2_config())
    stopper = EarlyStopping(monitor="loss", patience=1)
    checkpoint = ModelCheckpoint(str(tmp_path / "lm-{epoch}.pt"), save_weights_only=False)
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=1e-2), device="cpu")
    history = trainer.fit(loader, epochs=4, verbose=0, callbacks=[stopper, checkpoint])
    losses = history.history["loss"]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.9 * losses[0]

    ordered = DataLoader(rows, batch_size=16)
    logits = trainer.predict(ordered, verbose=0)
    assert logits.shape == (48, 12, 32)
    fresh = GPT2LMHeadModel(gpt2_config())
    load_checkpoint(str(tmp_path / "lm-4.pt"), model=fresh)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(
            fresh(input_ids=sequences, attention_mask=mask.expand(48, -1)).logits, logits
        )

    # Resuming continues with the model's own loss: the fifth epoch improves again.
    resumed = Trainer(fresh, torch.optim.AdamW(fresh.parameters(), lr=1e-2), device="cpu")
    with pytest.warns(UserWarning, match="EarlyStopping #1, ModelCheckpoint #1"):
        # the rerun leaves out the callbacks of the first run: their saved states are named
        more = resumed.fit(loader, epochs=5, verbose=0, resume_from=str(tmp_path / "lm-4.pt"))
    # The checkpoint carries History: the resumed run's History continues it.
    assert more.epoch == [0, 1, 2, 3, 4] and more.history["loss"][:4] == losses
    assert more.history["loss"][4] < losses[-1]


def test_a_loss_given_scores_the_model_output_logits():
    """loss= on a ModelOutput applies to its logits, from (inputs dict, labels) pairs with
    int32 labels, and from dict batches whose 'labels' are the targets."""
    rows = classification_rows(64, seed=4)
    ids = torch.stack([row["input_ids"] for row in rows])
    labels = torch.stack([row["labels"] for row in rows])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config())
    trainer = Trainer(model, "adam", "cross_entropy", ["accuracy"], device="cpu")
    history = trainer.fit(inputs, labels.int(), epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    result = trainer.evaluate(inputs, labels.int(), verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert torch.allclose(trainer.predict(inputs, verbose=0), logits, atol=1e-6)

    def focal(logits, targets):  # a callable of the user's gets the logits too
        return F.cross_entropy(logits, targets, reduction="none").mul(2).mean()

    trainer = Trainer(model, "adam", focal, ["accuracy"], device="cpu")
    result = trainer.evaluate(DataLoader(rows, batch_size=16), verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(2 * F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_outputs_without_logits_or_loss_are_explained():
    rows = classification_rows(8, seed=5)
    encoder = BertModel(bert_config())
    inputs = {key: torch.stack([row[key] for row in rows]) for key in ("input_ids",)}
    with pytest.raises(ValueError, match=r"'last_hidden_state'.*'pooler_output'.*single loss"):
        Trainer(encoder, "adam", loss="mse").fit(inputs, torch.zeros(8, 16), verbose=0)
    with pytest.raises(ValueError, match="No loss given.*must return its own loss"):
        Trainer(encoder, "adam").fit(DataLoader(rows, batch_size=4), verbose=0)
    # A classifier fed no labels computes no loss: the same message.
    unlabeled = [{k: v for k, v in row.items() if k != "labels"} for row in rows]
    classifier = BertForSequenceClassification(bert_config())
    with pytest.raises(ValueError, match="No loss given.*HuggingFace models do when the batch"):
        Trainer(classifier, "adam").fit(DataLoader(unlabeled, batch_size=4), verbose=0)


def test_bert_dict_batches_one_at_a_time_and_in_memory_dicts_with_labels():
    """``train_on_batch``/``test_on_batch`` on a collated dict batch with ``labels``, and
    ``fit`` on in-memory dicts whose ``labels`` key holds the targets (no ``y``)."""
    torch.manual_seed(0)
    rows = classification_rows(32, seed=0)
    batch = next(iter(DataLoader(rows, batch_size=32)))
    model = BertForSequenceClassification(bert_config())
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), metrics=["accuracy"])
    loss, accuracy = trainer.test_on_batch(batch)
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    assert loss == pytest.approx(output.loss.item(), rel=1e-5)
    expected_accuracy = (output.logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert accuracy == pytest.approx(expected_accuracy)
    trained = trainer.train_on_batch(batch)  # [loss, accuracy] in train mode (dropout on)
    assert len(trained) == 2 and 0 <= trained[1] <= 1
    assert trainer.test_on_batch(batch)[0] < loss
    history = trainer.fit(dict(batch), epochs=2, batch_size=8, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_own_loss_models_refuse_sample_and_class_weights_before_a_step():
    rows = classification_rows(16, seed=0)
    batch = next(iter(DataLoader(rows, batch_size=16)))
    labels = batch.pop("labels")
    model = BertForSequenceClassification(bert_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, "adam")
    with pytest.raises(ValueError, match="computes its own loss.*sample weights.*loss="):
        trainer.fit(batch, labels, sample_weight=torch.ones(16), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="computes its own loss.*class_weight.*loss="):
        trainer.fit(batch, labels, class_weight={0: 2.0, 1: 1.0}, epochs=1, verbose=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_own_loss_models_report_weighted_metrics_as_plain_ones_without_weights():
    """No weights reach an own-loss model, so a weighted metric equals its plain twin."""
    torch.manual_seed(0)
    rows = classification_rows(32, seed=0)
    model = BertForSequenceClassification(bert_config())
    trainer = Trainer(model, "adam", metrics=["accuracy"], weighted_metrics=["accuracy"])
    history = trainer.fit(DataLoader(rows, batch_size=8), epochs=1, verbose=0).history
    assert set(history) == {"loss", "accuracy", "weighted_accuracy"}
    assert history["weighted_accuracy"] == pytest.approx(history["accuracy"])
