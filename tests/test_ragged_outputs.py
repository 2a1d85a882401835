"""Outputs of batches of different lengths: `predict` returns one row per example, padded to
the longest with -100 (HuggingFace's value), or a list of rows where no padding lines them
up; the built-in accuracy leaves -100 labels out. Tested with a real BERT token classifier
(tiny config, random weights) fed by HuggingFace's own collator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from conftest import bert_config
from torch.utils.data import DataLoader
from transformers import (
    BertForTokenClassification,
    BertTokenizerFast,
    DataCollatorForTokenClassification,
)

from torchcallbacks import Trainer

LABELS = 3


@pytest.fixture(scope="module")
def collator(tmp_path_factory) -> DataCollatorForTokenClassification:
    """HuggingFace's collator with a BERT tokenizer from a vocabulary written here."""
    vocab = tmp_path_factory.mktemp("tokenizer") / "vocab.txt"
    words = [f"w{i}" for i in range(40)]
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    return DataCollatorForTokenClassification(BertTokenizerFast(vocab_file=str(vocab)))


def token_rows(count: int) -> list[dict]:
    """Tokenized sentences of 3 to 12 tokens: [CLS] words [SEP], special tokens labelled
    -100, as a token-classification dataset gives them."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        length = int(torch.randint(1, 11, (1,), generator=generator))
        words = torch.randint(5, 45, (length,), generator=generator).tolist()
        labels = [w % LABELS for w in words]
        rows.append({"input_ids": [2, *words, 3], "labels": [-100, *labels, -100]})
    return rows


def token_classifier() -> BertForTokenClassification:
    torch.manual_seed(0)
    config = bert_config(vocab_size=45, max_position_embeddings=32, num_labels=LABELS)
    return BertForTokenClassification(config)


def test_token_classification_predict_gives_one_row_per_example_padded_with_minus_100(collator):
    rows = token_rows(13)
    loader = DataLoader(rows, batch_size=4, collate_fn=collator)  # each batch its own length
    model = token_classifier()
    trainer = Trainer(model, optimizer="adam", metrics=["accuracy"])
    trainer.fit(loader, epochs=2, verbose=0)

    logits = trainer.predict(loader, verbose=0)
    longest = max(len(row["input_ids"]) for row in rows)
    assert logits.shape == (len(rows), longest, LABELS)
    model.eval()
    batch_accuracies, sizes, hand_logits = [], [], []
    with torch.no_grad():  # the hand loop over the same batches
        for batch in loader:
            labels = batch.pop("labels")
            output = model(**batch).logits
            hand_logits += list(output)
            kept = labels != -100
            hits = output.argmax(-1)[kept] == labels[kept]
            batch_accuracies.append(hits.float().mean().item())
            sizes.append(len(labels))
    padded_width = 0
    for row, hand, example in zip(logits, hand_logits, rows):
        width = len(hand)  # the length of the example's batch
        assert torch.equal(row[:width], hand)
        assert (row[width:] == -100).all()  # the pad value, across the other batches' lengths
        padded_width = max(padded_width, longest - width)
        assert len(example["input_ids"]) <= width
    assert padded_width > 0  # some batches were shorter than the longest

    # Predictions line up with labels padded the same way: -100 marks what to leave out.
    labels = torch.full((len(rows), longest), -100)
    for i, example in enumerate(rows):
        labels[i, : len(example["labels"])] = torch.tensor(example["labels"])
    kept = labels != -100
    token_hits = logits.argmax(-1)[kept] == labels[kept]
    unpadded = torch.cat(
        [
            hand[: len(ex["labels"])].argmax(-1)[torch.tensor(ex["labels"]) != -100]
            == torch.tensor([t for t in ex["labels"] if t != -100])
            for hand, ex in zip(hand_logits, rows)
        ]
    )
    assert torch.equal(token_hits, unpadded)

    # evaluate's accuracy leaves the -100 labels out: the batch accuracies over real tokens,
    # averaged weighted by batch size as every metric is.
    results = trainer.evaluate(loader, verbose=0, return_dict=True)
    expected = sum(a * n for a, n in zip(batch_accuracies, sizes)) / sum(sizes)
    assert results["accuracy"] == pytest.approx(expected, rel=1e-6)


class RaggedModel(torch.nn.Module):
    """Per-position outputs of several kinds: float scores, int classes, bool flags."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = x * self.scale
        return {"scores": scores, "classes": x.long(), "positive": x > 0}


def ragged_batches() -> Iterator[torch.Tensor]:
    """An iterable of batches (a list of tensors would be one batch of several inputs)."""
    return iter([torch.arange(1.0, 7.0).reshape(2, 3), torch.arange(1.0, 11.0).reshape(2, 5)])


def test_dict_outputs_of_ragged_batches_pad_each_kind_with_its_pad_value():
    predicted = Trainer(RaggedModel()).predict(ragged_batches(), verbose=0)
    scores, classes, positive = predicted["scores"], predicted["classes"], predicted["positive"]
    assert scores.shape == classes.shape == positive.shape == (4, 5)
    assert scores[:2, :3].tolist() == (torch.arange(1.0, 7.0).reshape(2, 3) * 2).tolist()
    assert scores[:2, 3:].eq(-100).all() and classes[:2, 3:].eq(-100).all()
    assert classes.dtype == torch.int64 and positive.dtype == torch.bool
    assert not positive[:2, 3:].any() and positive[:2, :3].all()  # booleans pad with False
    assert scores[2:].tolist() == (torch.arange(1.0, 11.0).reshape(2, 5) * 2).tolist()


def test_outputs_that_no_padding_lines_up_come_back_as_one_row_per_example():
    batches = iter([torch.ones(2, 3), torch.ones(3, 2, 2)])  # different numbers of dimensions
    rows = Trainer(torch.nn.Identity()).predict(batches, verbose=0)
    assert isinstance(rows, list) and len(rows) == 5
    assert [tuple(r.shape) for r in rows] == [(3,), (3,), (2, 2), (2, 2), (2, 2)]
