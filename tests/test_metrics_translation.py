"""Translation metrics against hand-computed BLEU and sacrebleu's own classes."""

from __future__ import annotations

import math

import pytest
from sacrebleu.metrics import BLEU, CHRF

from rnnkit.metrics.translation import corpus_scores, exact_match, tokenized_bleu

HYPS = ["the cat sat on the mat", "a dog is running in the park .", "He reads a book ."]
REFS = ["the cat sat on a mat", "a dog runs in the park .", "he is reading a book ."]


def test_identical_corpus_scores_100():
    scores = corpus_scores(REFS, REFS)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert scores["exact_match"] == 1.0
    assert scores["sentences"] == 3
    assert tokenized_bleu(REFS, REFS) == pytest.approx(100.0)


def test_disjoint_corpus_scores_0():
    hyps, refs = ["a b c d e", "f g h i"], ["v w x y z", "q r s t"]
    scores = corpus_scores(hyps, refs)
    assert scores == {"bleu": 0.0, "chrf": 0.0, "exact_match": 0.0, "sentences": 2}
    assert tokenized_bleu(hyps, refs) == 0.0


def test_bleu_by_hand():
    # unigrams 5/6 (the second "the" is clipped), bigrams 3/5, trigrams 2/4, 4-grams 1/3; equal lengths: BP 1
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    scores = corpus_scores(HYPS[:1], REFS[:1])
    assert scores["bleu"] == pytest.approx(expected, rel=1e-9)
    assert tokenized_bleu(HYPS[:1], REFS[:1]) == pytest.approx(expected, rel=1e-9)


def test_brevity_penalty_by_hand():
    # hypothesis 4 tokens, all n-grams match; reference 6 tokens: BLEU = exp(1 - 6/4)
    scores = corpus_scores(["the cat sat on"], ["the cat sat on the mat"])
    assert scores["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 4), rel=1e-9)


def test_corpus_scores_equal_sacrebleu_classes():
    scores = corpus_scores(HYPS, REFS)
    assert scores["bleu"] == BLEU().corpus_score(HYPS, [REFS]).score
    assert scores["chrf"] == CHRF().corpus_score(HYPS, [REFS]).score
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    assert scores["exact_match"] == 0.0


def test_tokenized_bleu_lowercases_and_tokenises():
    hyps, refs = ["hello , world . how are you ?"], ["Hello, world. How are you?"]
    assert tokenized_bleu(hyps, refs) == pytest.approx(100.0)
    assert tokenized_bleu(hyps, refs, lowercase=False) < 100.0
    expected = BLEU(tokenize="13a", lowercase=True, force=True, smooth_method="none")
    assert tokenized_bleu(HYPS, REFS) == expected.corpus_score(HYPS, [REFS]).score
    # lowercasing makes sentence 3's "He" match, so the tokenised score is higher than the cased one
    assert tokenized_bleu(HYPS, REFS) > corpus_scores(HYPS, REFS)["bleu"]


def test_exact_match_fraction_and_whitespace():
    hyps = ["a b", "c  d\n", "E f", "g"]
    refs = ["a b", "c d", "e f", "h"]
    assert exact_match(hyps, refs) == 0.5  # case matters; whitespace runs and ends do not
    assert corpus_scores(hyps, refs)["exact_match"] == 0.5


@pytest.mark.parametrize(
    ("hyps", "refs", "message"),
    [
        (["a"], ["a", "b"], "expected as many hypotheses as references, got 1 and 2"),
        ([], [], "expected at least one sentence, got 0"),
        ([["a", "b"]], ["a b"], r"expected hypotheses\[0\] to be a str, got list"),
    ],
)
@pytest.mark.parametrize("fn", [corpus_scores, tokenized_bleu, exact_match])
def test_bad_input(fn, hyps, refs, message):
    with pytest.raises(ValueError, match=message):
        fn(hyps, refs)
