"""Tagging metrics: accuracy, conlleval span scores (checked against seqeval), scheme detection, report."""

from __future__ import annotations

import random
import warnings

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from rnnkit.metrics.tagging import accuracy, detect_scheme, get_chunks, span_scores, tagging_report


def _random_corpus(rng: random.Random, prefixes: str, types=("PER", "LOC", "MISC")) -> list[list[str]]:
    """Random, often ill-formed label sequences (I- after O, E- without B-, type switches)."""
    labels = ["O"] + [f"{p}-{t}" for p in prefixes for t in types]
    weights = [3] + [1] * (len(labels) - 1)
    return [rng.choices(labels, weights, k=rng.randint(1, 8)) for _ in range(rng.randint(1, 6))]


def _noisy_copy(rng: random.Random, corpus: list[list[str]], prefixes: str) -> list[list[str]]:
    labels = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC", "MISC")]
    return [[lab if rng.random() < 0.7 else rng.choice(labels) for lab in sent] for sent in corpus]


def _seqeval(gold, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings: seqeval then returns 0, as we do
        return precision_score(gold, pred), recall_score(gold, pred), f1_score(gold, pred)


@pytest.mark.parametrize("prefixes", ["BI", "BIES"])
def test_span_scores_match_seqeval_on_random_sequences(prefixes):
    rng = random.Random(1234 + len(prefixes))
    checked = 0
    for _ in range(300):
        gold = _random_corpus(rng, prefixes)
        pred = _noisy_copy(rng, gold, prefixes)
        ours = span_scores(gold, pred)
        assert ours["span_level"]  # also for a gold corpus of only "O": seqeval scores it 0, not accuracy
        p, r, f = _seqeval(gold, pred)
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f), abs=1e-12)
        gold_labels = {lab for s in gold for lab in s}
        if gold_labels == {"O"}:
            checked += 1
        else:
            assert ours["scheme"] == detect_scheme(gold_labels)
        for sent in gold + pred:
            assert get_chunks(sent) == [tuple(e) for e in get_entities(sent)]
    assert checked > 0  # the loop met corpora without a gold chunk


def test_span_scores_hand_cases():
    # conlleval: I- after O starts a chunk; a type switch inside I- splits chunks
    assert get_chunks(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 2)]
    assert get_chunks(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert get_chunks(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
    assert get_chunks(["S-X", "B-X", "E-X", "I-X"]) == [("X", 0, 0), ("X", 1, 2), ("X", 3, 3)]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG"]]
    s = span_scores(gold, pred)
    assert s["span_level"] and s["scheme"] == "BIO"
    assert (s["correct"], s["predicted"], s["gold"]) == (2, 2, 3)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(0.8)
    # chunks never cross a sentence boundary
    assert span_scores([["B-X"], ["B-X"]], [["B-X"], ["I-X"]])["f1"] == 1.0
    # no predicted chunks: precision 0 (not a division error)
    assert span_scores([["B-X"]], [["O"]]) == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "span_level": True, "scheme": "BIO",
         "correct": 0, "predicted": 0, "gold": 1}
    )


def test_no_entities_on_either_side_scores_zero_as_seqeval():
    gold = pred = [["O", "O"], ["O"]]
    s = span_scores(gold, pred)
    assert (s["precision"], s["recall"], s["f1"]) == _seqeval(gold, pred) == (0.0, 0.0, 0.0)
    assert s["span_level"] and (s["correct"], s["predicted"], s["gold"]) == (0, 0, 0)
    assert span_scores([[]], [[]])["f1"] == 0.0  # no tokens at all
    assert tagging_report(gold, pred)["f1"] == 0.0
    # no gold chunk, one predicted: precision 0 of 1, recall 0 of 0
    s = span_scores([["O", "O"]], [["O", "S-PER"]])
    assert s["scheme"] == "BIOES" and (s["predicted"], s["gold"], s["f1"]) == (1, 0, 0.0)


def test_a_stray_predicted_label_does_not_switch_to_token_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "NOUN"], ["O", "B-ORG"]]  # one label outside BIO
    s = span_scores(gold, pred)
    assert s["span_level"] and s["scheme"] == "BIO"
    assert (s["correct"], s["predicted"], s["gold"]) == (2, 3, 3)  # "NOUN" is a wrong chunk, as seqeval reads it
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx(_seqeval(gold, pred), abs=1e-12)
    # with the training tag set given, the report decides the scheme from it
    report = tagging_report(gold, pred, train_labels=["O", "B-PER", "I-PER", "B-LOC", "B-ORG"])
    assert report["span_level"] and report["f1"] == pytest.approx(2 / 3)
    assert not tagging_report(gold, pred, train_labels=["NOUN", "VERB"])["span_level"]


def test_token_level_for_other_tag_sets():
    gold = [["NOUN", "VERB", "PUNCT"], ["DET", "NOUN"]]
    pred = [["NOUN", "NOUN", "PUNCT"], ["DET", "PROPN"]]
    s = span_scores(gold, pred)
    assert not s["span_level"] and s["scheme"] is None
    assert s["precision"] == s["recall"] == s["f1"] == accuracy(gold, pred) == 3 / 5
    forced = span_scores([["B-X", "I-X"]], [["B-X", "O"]], "token")
    assert not forced["span_level"] and forced["f1"] == 0.5
    with pytest.raises(ValueError, match="scheme: expected"):
        span_scores(gold, pred, "IOB1")


def test_detect_scheme():
    assert detect_scheme(["O", "B-PER", "I-PER"]) == "BIO"
    assert detect_scheme(["O", "I-PER", "I-LOC"]) == "BIO"  # IOB1
    assert detect_scheme(["O", "B-PER", "E-PER", "S-LOC"]) == "BIOES"
    assert detect_scheme(["NOUN", "VERB"]) is None
    assert detect_scheme(["O", "B-PER", "NOUN"]) is None
    assert detect_scheme(["O", "X-PER"]) is None
    assert detect_scheme(["O", "B-"]) is None
    assert detect_scheme(["O"]) is None
    assert detect_scheme([]) is None


def test_accuracy_and_alignment_errors():
    assert accuracy([["a", "b"], ["c"]], [["a", "x"], ["c"]]) == pytest.approx(2 / 3)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="gold has 2 sentences but predictions have 1"):
        accuracy([["a"], ["b"]], [["a"]])
    with pytest.raises(ValueError, match="sentence 1: gold has 1 labels but prediction has 2"):
        span_scores([["a"], ["b"]], [["a"], ["b", "c"]])


def test_tagging_report():
    gold = [["NOUN", "VERB", "INTJ"], ["SYM"]]
    pred = [["NOUN", "VERB", "NOUN"], ["NOUN"]]
    report = tagging_report(gold, pred, train_labels=["NOUN", "VERB", "SYM"])
    assert report == {
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "tokens": 4,
        "span_level": False,
        "scheme": None,
        "unseen_label_tokens": 1,
        "unseen_labels": ["INTJ"],
    }
    ner = tagging_report([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "B-LOC"]])
    assert ner["span_level"] and ner["f1"] == pytest.approx(2 / 3) and ner["accuracy"] == pytest.approx(2 / 3)
    assert "unseen_labels" not in ner
    assert all(0.0 <= ner[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1"))
