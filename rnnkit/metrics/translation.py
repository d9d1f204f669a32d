"""Translation metrics: sacrebleu corpus BLEU and chrF, exact match, and lowercased tokenised BLEU.

Two BLEU figures exist because papers report two:

- ``corpus_scores(...)["bleu"]`` is sacrebleu's default corpus BLEU on *detokenised* text (its ``13a``
  tokeniser, case-sensitive, ``exp`` smoothing): the comparable, reproducible figure.
- ``tokenized_bleu`` is the "lowercased, tokenised BLEU" of older seq2seq papers and tutorials (e.g. an
  attention GRU on Multi30k scored with ``multi-bleu.perl`` or torchtext's ``bleu_score`` on lowercased
  spaCy/Moses tokens). See its docstring for how it is computed and why.

All scores are on a 0-100 scale except ``exact_match``, a fraction in [0, 1]. Pure functions on lists of
strings. ``references`` holds one reference per hypothesis (a ``str``) or several (a list of ``str``, as
many as the sentence has; :func:`rnnkit.data.pairs.group_references` builds them from pairs that share a
source): BLEU then clips n-gram counts by the most any reference holds and takes the reference length
closest to the hypothesis, chrF keeps the best-scoring reference (sacrebleu's multi-reference rules), and an
exact match is a match with any reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

References = Sequence[str] | Sequence[Sequence[str]]
"""One reference per hypothesis, or a list of references per hypothesis (the two may mix)."""

__all__ = ["corpus_scores", "exact_match", "tokenized_bleu"]


def _check_corpus(hypotheses: Sequence[str], references: References) -> list[list[str]]:
    """Validate the corpus; return the references as one list per hypothesis."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"expected as many hypotheses as references, got {len(hypotheses)} and {len(references)}"
        )
    if not hypotheses:
        raise ValueError("expected at least one sentence, got 0")
    for i, sentence in enumerate(hypotheses):
        if not isinstance(sentence, str):
            raise ValueError(f"expected hypotheses[{i}] to be a str, got {type(sentence).__name__}")
    per_sentence = []
    for i, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, Sequence) or not refs:
            raise ValueError(f"expected references[{i}] to be a str or a non-empty list of str, got {refs!r}")
        for k, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ValueError(f"expected references[{i}][{k}] to be a str, got {type(ref).__name__}")
        per_sentence.append(list(refs))
    return per_sentence


def _streams(per_sentence: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: reference stream k holds every sentence's k-th reference (None where it has fewer)."""
    count = max(len(refs) for refs in per_sentence)
    return [[refs[k] if k < len(refs) else None for refs in per_sentence] for k in range(count)]


def exact_match(hypotheses: Sequence[str], references: References) -> float:
    """Fraction of sentences whose hypothesis equals the reference (one of them), in [0, 1].

    Comparison is case-sensitive after collapsing runs of whitespace and stripping both ends
    (``" ".join(s.split())``), so a trailing newline or a double space does not count as an error.

    Raises:
        ValueError: the lists differ in length, are empty, or hold non-strings.
    """
    return exact_matches(hypotheses, references) / len(hypotheses)


def exact_matches(hypotheses: Sequence[str], references: References) -> int:
    """How many hypotheses equal their reference or one of them (whitespace-normalised, as :func:`exact_match`)."""
    per_sentence = _check_corpus(hypotheses, references)
    return sum(" ".join(h.split()) in {" ".join(r.split()) for r in refs} for h, refs in zip(hypotheses, per_sentence))


BLEU_ORDER = 4


def bleu_stats(hypotheses: Sequence[str], references: References) -> dict[str, float]:
    """sacrebleu's sufficient statistics of corpus BLEU (additive over sentences, so they sum over ranks)."""
    score = BLEU().corpus_score(list(hypotheses), _streams(_check_corpus(hypotheses, references)))
    stats = {"bleu_sys_len": float(score.sys_len), "bleu_ref_len": float(score.ref_len)}
    for n in range(BLEU_ORDER):
        stats[f"bleu_correct_{n + 1}"] = float(score.counts[n])
        stats[f"bleu_total_{n + 1}"] = float(score.totals[n])
    return stats


def bleu_from_stats(stats: dict[str, float]) -> float:
    """Corpus BLEU (0-100) from summed :func:`bleu_stats`: equal to ``corpus_scores(...)["bleu"]``."""
    correct = [int(stats[f"bleu_correct_{n + 1}"]) for n in range(BLEU_ORDER)]
    total = [int(stats[f"bleu_total_{n + 1}"]) for n in range(BLEU_ORDER)]
    return float(BLEU.compute_bleu(correct, total, int(stats["bleu_sys_len"]), int(stats["bleu_ref_len"]),
                                   smooth_method="exp").score)


def corpus_scores(hypotheses: Sequence[str], references: References) -> dict[str, float | int]:
    """Corpus BLEU, chrF and exact match of detokenised hypotheses against their reference(s).

    ``bleu`` is ``sacrebleu.metrics.BLEU()`` (tokenize ``13a``, case-sensitive, ``exp`` smoothing) and
    ``chrf`` is ``sacrebleu.metrics.CHRF()`` (character 6-grams, beta 2), both corpus-level, 0-100.

    Args:
        hypotheses: system outputs, one detokenised sentence per item.
        references: reference translations, aligned with ``hypotheses``: a ``str`` each, or a list of them.

    Returns:
        ``{"bleu": float, "chrf": float, "exact_match": float in [0, 1], "sentences": int}``.

    Raises:
        ValueError: the lists differ in length, are empty, or hold non-strings.

    Example::

        >>> corpus_scores(["the cat sat down ."], ["the cat sat down ."])
        {'bleu': 100.00000000000004, 'chrf': 100.0, 'exact_match': 1.0, 'sentences': 1}

    BLEU counts n-grams up to n = 4 over the whole corpus, so a corpus of sentences shorter than four
    tokens scores 0 BLEU even when every sentence matches; chrF and exact match do not have that limit.
    """
    hyps, refs = list(hypotheses), _streams(_check_corpus(hypotheses, references))
    return {
        "bleu": float(BLEU().corpus_score(hyps, refs).score),
        "chrf": float(CHRF().corpus_score(hyps, refs).score),
        "exact_match": exact_match(hypotheses, references),
        "sentences": len(hyps),
    }


def tokenized_bleu(hypotheses: Sequence[str], references: References, lowercase: bool = True) -> float:
    """Lowercased, tokenised corpus BLEU (0-100), the way older seq2seq papers score.

    Computed as ``sacrebleu.metrics.BLEU(tokenize="13a", lowercase=lowercase, force=True,
    smooth_method="none")``:

    - ``13a`` (the Moses/mteval tokeniser) splits punctuation off words, approximating the spaCy or Moses
      tokens the anchors score on, and is close to idempotent on text that is already tokenised, so this
      function accepts either detokenised output or space-separated tokens (``"a dog , running ."``).
    - ``force=True`` only silences sacrebleu's "looks tokenised" warning: scoring tokenised text is the
      point here.
    - No smoothing, as in ``multi-bleu.perl`` and torchtext's ``bleu_score``: the score is 0 if some
      n-gram order (n <= 4) has no match in the whole corpus.

    Args:
        hypotheses: system outputs, one sentence per item.
        references: one reference per hypothesis, or a list of them.
        lowercase: lowercase both sides before scoring (default True).

    Raises:
        ValueError: the lists differ in length, are empty, or hold non-strings.
    """
    refs = _streams(_check_corpus(hypotheses, references))
    bleu = BLEU(tokenize="13a", lowercase=lowercase, force=True, smooth_method="none")
    return float(bleu.corpus_score(list(hypotheses), refs).score)
