r"""Classification metrics: accuracy, per-class precision/recall/F1, macro and micro F1, confusion matrix.

Inputs are label strings. Multi-class: one gold and one predicted label per example. Multi-label: one
collection of labels per example (possibly empty). The definitions are scikit-learn's
(``accuracy_score``, ``precision_recall_fscore_support``, ``f1_score(average="macro" | "micro")``,
``confusion_matrix``) with ``zero_division=0``. For a class ``c`` with ``tp`` true positives, ``fp``
false positives and ``fn`` false negatives::

    precision_c = tp / (tp + fp),   recall_c = tp / (tp + fn),   f1_c = 2 tp / (2 tp + fp + fn)
    support_c   = tp + fn            (each 0 when its denominator is 0)
    macro_f1    = mean of f1_c over the classes
    micro_f1    = 2 sum(tp) / (2 sum(tp) + sum(fp) + sum(fn))

The classes are ``labels`` when given, else every label seen in gold or predictions (sorted), as in
scikit-learn. For multi-class data micro-F1 equals accuracy (every error is one fp and one fn); for
multi-label data ``accuracy`` is the exact-match (subset) accuracy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence

__all__ = [
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "macro_f1",
    "micro_f1",
    "multilabel_scores",
    "per_class",
]


def _check(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} examples but predictions have {len(pred)}")


def _classes(
    gold: Iterable[Collection[str]], pred: Iterable[Collection[str]], labels: Sequence[str] | None
) -> list[str]:
    if labels is not None:
        return list(labels)
    return sorted({lab for labs in (*gold, *pred) for lab in labs})


def _counts(gold: Sequence[Collection[str]], pred: Sequence[Collection[str]]) -> tuple[Counter, Counter, Counter]:
    """True positives, false positives and false negatives per label (label sets per example)."""
    _check(gold, pred)
    tp, fp, fn = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        g, p = set(g), set(p)
        tp.update(g & p)
        fp.update(p - g)
        fn.update(g - p)
    return tp, fp, fn


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _per_class(tp: Counter, fp: Counter, fn: Counter, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    return {
        c: {
            "precision": _ratio(tp[c], tp[c] + fp[c]),
            "recall": _ratio(tp[c], tp[c] + fn[c]),
            "f1": _ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]),
            "support": tp[c] + fn[c],
        }
        for c in classes
    }


def _singletons(labels: Sequence[str]) -> list[tuple[str]]:
    return [(lab,) for lab in labels]


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    """Fraction of examples whose prediction equals the gold label (0.0 without examples).

    Multi-label: pass label sets (e.g. ``frozenset``) to get the exact-match accuracy.
    """
    _check(gold, pred)
    return _ratio(sum(g == p for g, p in zip(gold, pred)), len(gold))


def per_class(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """``{label: {"precision", "recall", "f1", "support"}}`` for multi-class predictions (module docstring)."""
    g, p = _singletons(gold), _singletons(pred)
    return _per_class(*_counts(g, p), _classes(g, p, labels))


def macro_f1(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of the per-class F1 (0.0 without classes)."""
    scores = per_class(gold, pred, labels)
    return _ratio(sum(s["f1"] for s in scores.values()), len(scores))


def micro_f1(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """F1 of the summed counts over ``labels`` (all seen labels by default, then equal to accuracy)."""
    tp, fp, fn = _counts(_singletons(gold), _singletons(pred))
    classes = _classes(_singletons(gold), _singletons(pred), labels)
    t = sum(tp[c] for c in classes)
    return _ratio(2 * t, 2 * t + sum(fp[c] for c in classes) + sum(fn[c] for c in classes))


def confusion_matrix(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> list[list[int]]:
    """``m[i][j]``: examples of gold class ``labels[i]`` predicted as ``labels[j]`` (rows gold, columns predicted).

    Examples whose gold or predicted label is not in ``labels`` are not counted (scikit-learn's rule).
    """
    _check(gold, pred)
    classes = _classes(_singletons(gold), _singletons(pred), labels)
    index = {c: i for i, c in enumerate(classes)}
    m = [[0] * len(classes) for _ in classes]
    for g, p in zip(gold, pred):
        if g in index and p in index:
            m[index[g]][index[p]] += 1
    return m


def multilabel_scores(
    gold: Sequence[Collection[str]], pred: Sequence[Collection[str]], labels: Sequence[str] | None = None
) -> dict:
    """Multi-label scores: ``{"micro_precision", "micro_recall", "micro_f1", "macro_f1", "per_class"}``."""
    tp, fp, fn = _counts(gold, pred)
    classes = _classes(gold, pred, labels)
    scores = _per_class(tp, fp, fn, classes)
    t, f_p, f_n = (sum(c[k] for k in classes) for c in (tp, fp, fn))
    return {
        "micro_precision": _ratio(t, t + f_p),
        "micro_recall": _ratio(t, t + f_n),
        "micro_f1": _ratio(2 * t, 2 * t + f_p + f_n),
        "macro_f1": _ratio(sum(s["f1"] for s in scores.values()), len(scores)),
        "per_class": scores,
    }


def classification_report(
    gold: Sequence[str] | Sequence[Collection[str]],
    pred: Sequence[str] | Sequence[Collection[str]],
    *,
    multi_label: bool = False,
    train_labels: Iterable[str] | None = None,
) -> dict:
    """Everything ``rnnkit classify evaluate`` reports, as JSON-ready numbers.

    Args:
        gold: gold labels (multi-label: a collection of labels per example).
        pred: predictions, aligned with ``gold``.
        multi_label: the inputs are label collections.
        train_labels: the classes the model was trained with; gold labels outside it (necessarily
            errors) are counted in ``"unseen_label_examples"`` and listed in ``"unseen_labels"``, as
            the tagger's report does.

    Returns:
        ``{"accuracy", "macro_f1", "micro_f1", "per_class", "examples"}`` (multi-label: exact-match
        accuracy, plus ``"micro_precision"`` and ``"micro_recall"``), plus the ``unseen_*`` keys with
        ``train_labels``.

    Example::

        >>> classification_report(["a", "b", "b"], ["a", "a", "b"])["macro_f1"]
        0.6666666666666666
    """
    if multi_label:
        g, p = [frozenset(x) for x in gold], [frozenset(x) for x in pred]
        report = {"accuracy": accuracy(g, p), **multilabel_scores(g, p), "examples": len(g)}
    else:
        scores = per_class(gold, pred)
        report = {
            "accuracy": accuracy(gold, pred),
            "macro_f1": _ratio(sum(s["f1"] for s in scores.values()), len(scores)),
            "micro_f1": micro_f1(gold, pred),
            "per_class": scores,
            "examples": len(gold),
        }
        g = _singletons(gold)
    if train_labels is not None:
        known = set(train_labels)
        unseen = [labs for labs in g if not set(labs) <= known]
        report["unseen_label_examples"] = len(unseen)
        report["unseen_labels"] = sorted({lab for labs in unseen for lab in labs} - known)
    return report
