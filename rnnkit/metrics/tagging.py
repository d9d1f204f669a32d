"""Sequence-labelling metrics: token accuracy and conlleval span precision/recall/F1.

Inputs are gold and predicted label strings, one list per sentence, aligned token by token. A
label is compared as a string, so a gold label the model never saw in training is simply an error.

Span scores follow conlleval (the CoNLL shared-task script; seqeval's default mode is the same
algorithm, extended with the ``S-``/``E-`` rules for BIOES): a label ``P-TYPE`` has prefix ``P``
and chunk type ``TYPE``, ``O`` is outside. A chunk ends before token ``t`` when the previous token
was ``E``/``S``, when ``B``/``I`` is followed by ``B``, ``S`` or ``O``, or when the type changes; it
starts at ``B`` or ``S``, at ``I``/``E`` after ``O``, ``E`` or ``S`` (so an ``I-X`` after ``O`` starts
a chunk, as in conlleval), or where the type changes. Chunks never cross sentence boundaries.
A predicted chunk is correct when its type, first and last token equal a gold chunk's, and::

    precision = correct / predicted chunks,  recall = correct / gold chunks,
    f1 = 2 * precision * recall / (precision + recall)          (each 0 when its denominator is 0)

For tag sets that are not BIO/BIOES (part-of-speech tags), every token is its own unit and the
micro-averaged precision, recall and F1 all equal accuracy; results say which definition was used
with ``"span_level"``. Which one applies is decided by the gold labels (or the training tag set), never by
the predictions: a stray predicted label outside the scheme is just a wrong chunk, and gold data with no
chunk at all (only ``O``) is scored at span level, F1 0 as seqeval and conlleval give.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["accuracy", "detect_scheme", "get_chunks", "gold_scheme", "span_scores", "tagging_report"]

Labels = Sequence[Sequence[str]]


def _check(gold: Labels, pred: Labels) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences but predictions have {len(pred)}")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: gold has {len(g)} labels but prediction has {len(p)}")


def accuracy(gold: Labels, pred: Labels) -> float:
    """Fraction of tokens whose predicted label equals the gold label (0.0 when there are no tokens)."""
    _check(gold, pred)
    total = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return correct / total if total else 0.0


def detect_scheme(labels: Iterable[str]) -> str | None:
    """The chunk scheme of a tag set: ``"BIOES"``, ``"BIO"`` or ``None``.

    ``"BIO"`` if every label is ``O``, ``B-TYPE`` or ``I-TYPE`` and at least one is not ``O``
    (IOB1 files, with ``I-`` starting chunks, count as BIO: conlleval reads both the same way);
    ``"BIOES"`` if labels also use ``E-``/``S-`` (and nothing else); otherwise ``None``.
    """
    prefixes = set()
    for label in labels:
        if label == "O":
            continue
        prefix, sep, kind = label.partition("-")
        if not sep or not kind or prefix not in ("B", "I", "E", "S"):
            return None
        prefixes.add(prefix)
    if not prefixes:
        return None
    return "BIOES" if prefixes & {"E", "S"} else "BIO"


def gold_scheme(gold: Labels, pred: Labels) -> str | None:
    """The scheme to score with when none is given: :func:`detect_scheme` of the gold labels alone.

    A gold corpus of only ``O`` (or of no tokens) is a chunk corpus without chunks: ``"BIO"`` (``"BIOES"``
    when the predictions use that scheme), so it scores F1 0 as seqeval does, not token accuracy.
    """
    labels = {lab for sent in gold for lab in sent}
    if labels <= {"O"}:
        return "BIOES" if detect_scheme({lab for sent in pred for lab in sent}) == "BIOES" else "BIO"
    return detect_scheme(labels)


def _split(label: str) -> tuple[str, str]:
    """(prefix, type) as conlleval/seqeval read a label: ``"B-PER"`` -> ``("B", "PER")``."""
    return label[:1], label[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_end(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        prev_tag in ("E", "S")
        or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
        or (prev_tag not in ("O", ".") and prev_type != type_)
    )


def _chunk_start(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (
        tag in ("B", "S")
        or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
        or (tag not in ("O", ".") and prev_type != type_)
    )


def get_chunks(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks of one sentence as ``(type, first, last)`` token indices, conlleval's rules."""
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, label in enumerate([*labels, "O"]):
        tag, type_ = _split(label)
        if _chunk_end(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _chunk_start(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _prf(correct: int, predicted: int, actual: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / actual if actual else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def span_scores(gold: Labels, pred: Labels, scheme: str | None = None) -> dict:
    """Micro precision, recall and F1 over chunks (BIO/BIOES) or tokens (other tag sets).

    Args:
        gold: gold labels, one list per sentence.
        pred: predicted labels, aligned with ``gold``.
        scheme: ``"BIO"`` or ``"BIOES"`` for chunk scores, ``"token"`` for token scores, ``None``
            (default) to decide from the gold labels (:func:`gold_scheme`).

    Returns:
        ``{"precision", "recall", "f1"}`` in [0, 1], ``"span_level"`` (True for chunk scores),
        ``"scheme"`` (``"BIO"``, ``"BIOES"`` or ``None``), and the counts ``"correct"``,
        ``"predicted"``, ``"gold"`` (chunks, or tokens).
    """
    _check(gold, pred)
    if scheme is None:
        scheme = gold_scheme(gold, pred)
    elif scheme == "token":
        scheme = None
    elif scheme not in ("BIO", "BIOES"):
        raise ValueError(f"scheme: expected 'BIO', 'BIOES', 'token' or None, got {scheme!r}")
    if scheme is None:
        tokens = sum(len(g) for g in gold)
        correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
        counts = (correct, tokens, tokens)
    else:
        correct = predicted = actual = 0
        for g, p in zip(gold, pred):
            gold_chunks, pred_chunks = set(get_chunks(g)), set(get_chunks(p))
            correct += len(gold_chunks & pred_chunks)
            predicted += len(pred_chunks)
            actual += len(gold_chunks)
        counts = (correct, predicted, actual)
    precision, recall, f1 = _prf(*counts)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "span_level": scheme is not None,
        "scheme": scheme,
        "correct": counts[0],
        "predicted": counts[1],
        "gold": counts[2],
    }


def tagging_report(
    gold: Labels, pred: Labels, *, scheme: str | None = None, train_labels: Iterable[str] | None = None
) -> dict:
    """Everything ``rnnkit tag evaluate`` reports, as JSON-ready numbers.

    Args:
        gold: gold labels, one list per sentence.
        pred: predicted labels, aligned with ``gold``.
        scheme: as for :func:`span_scores`; default: :func:`detect_scheme` of ``train_labels`` (token level
            when that finds none) if given, else decided by the gold labels.
        train_labels: the tag set the model was trained with; when given, gold labels outside it
            (necessarily errors) are counted in ``"unseen_label_tokens"`` and listed in ``"unseen_labels"``.

    Returns:
        ``{"accuracy", "precision", "recall", "f1", "tokens", "span_level", "scheme"}`` (fractions in
        [0, 1]; ``tokens`` is the number of gold tokens), plus the ``unseen_*`` keys with ``train_labels``.

    Example::

        >>> tagging_report([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "B-LOC"]])["f1"]
        0.6666666666666666
    """
    if scheme is None and train_labels is not None:
        scheme = detect_scheme(train_labels) or "token"
    spans = span_scores(gold, pred, scheme)
    report = {
        "accuracy": accuracy(gold, pred),
        "precision": spans["precision"],
        "recall": spans["recall"],
        "f1": spans["f1"],
        "tokens": sum(len(g) for g in gold),
        "span_level": spans["span_level"],
        "scheme": spans["scheme"],
    }
    if train_labels is not None:
        known = set(train_labels)
        unseen = [lab for sent in gold for lab in sent if lab not in known]
        report["unseen_label_tokens"] = len(unseen)
        report["unseen_labels"] = sorted(set(unseen))
    return report
