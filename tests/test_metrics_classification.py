"""Classification metrics against scikit-learn's definitions, on cases computed by hand."""

import pytest

from rnnkit.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    micro_f1,
    multilabel_scores,
    per_class,
)

# gold/pred: a->a, a->b, b->b, b->b, c->a, c->c
GOLD = ["a", "a", "b", "b", "c", "c"]
PRED = ["a", "b", "b", "b", "a", "c"]
# tp a1 b2 c1; fp a1 (c->a) b1 (a->b) c0; fn a1 b0 c1


def test_per_class_precision_recall_f1_support():
    scores = per_class(GOLD, PRED)
    assert list(scores) == ["a", "b", "c"]
    assert scores["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert scores["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert scores["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})


def test_accuracy_macro_micro():
    assert accuracy(GOLD, PRED) == pytest.approx(4 / 6)
    assert macro_f1(GOLD, PRED) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # every multi-class error is one fp and one fn: micro-F1 = accuracy
    assert micro_f1(GOLD, PRED) == pytest.approx(4 / 6)
    # restricted to class a: tp 1, fp 1, fn 1
    assert micro_f1(GOLD, PRED, labels=["a"]) == pytest.approx(0.5)


def test_label_only_predicted_counts_with_f1_zero_in_macro():
    # sklearn's default labels are those of gold and predictions together; z has F1 0 (zero_division=0)
    assert per_class(["a", "a"], ["a", "z"])["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert macro_f1(["a", "a"], ["a", "z"]) == pytest.approx((2 / 3 + 0.0) / 2)
    assert macro_f1(["a", "a"], ["a", "z"], labels=["a"]) == pytest.approx(2 / 3)


def test_confusion_matrix_rows_gold_columns_predicted():
    assert confusion_matrix(GOLD, PRED) == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion_matrix(GOLD, PRED, labels=["c", "a"]) == [[1, 1], [0, 1]]


def test_multilabel_scores():
    gold = [{"a", "b"}, {"b"}, set(), {"c"}]
    pred = [{"a"}, {"b", "c"}, set(), set()]
    # tp a1 b1; fp c1; fn b1 c1
    s = multilabel_scores(gold, pred)
    assert s["per_class"]["a"]["f1"] == 1.0
    assert s["per_class"]["b"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert s["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["macro_f1"] == pytest.approx(5 / 9)
    assert s["micro_precision"] == pytest.approx(2 / 3)
    assert s["micro_recall"] == pytest.approx(0.5)
    assert s["micro_f1"] == pytest.approx(4 / 7)
    report = classification_report(gold, pred, multi_label=True)
    assert report["accuracy"] == pytest.approx(0.25)  # exact match: only the empty set
    assert report["micro_f1"] == pytest.approx(4 / 7) and report["examples"] == 4


def test_report_counts_labels_unseen_in_training():
    report = classification_report(GOLD + ["new"], PRED + ["a"], train_labels=["a", "b", "c"])
    assert report["unseen_label_examples"] == 1 and report["unseen_labels"] == ["new"]
    assert report["accuracy"] == pytest.approx(4 / 7)
    assert report["per_class"]["new"]["recall"] == 0.0
    assert set(report) == {"accuracy", "macro_f1", "micro_f1", "per_class", "examples", "unseen_label_examples",
                           "unseen_labels"}
    multi = classification_report([["a", "x"], ["b"]], [["a"], ["b"]], multi_label=True, train_labels=["a", "b"])
    assert multi["unseen_label_examples"] == 1 and multi["unseen_labels"] == ["x"]


def test_length_mismatch_and_empty_input():
    with pytest.raises(ValueError, match="gold has 2 examples but predictions have 1"):
        accuracy(["a", "b"], ["a"])
    assert accuracy([], []) == 0.0 and macro_f1([], []) == 0.0
