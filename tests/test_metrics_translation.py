"""Translation metrics against hand-computed BLEU and sacrebleu's own classes."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from rnnkit.metrics.translation import bleu_from_stats, bleu_stats, corpus_scores, exact_match, tokenized_bleu

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


def test_bleu_smoothing_when_no_4gram_matches_by_hand():
    # hyp "the cat sat on the mat" (6 tokens) against "the cat sat under the mat" (6 tokens):
    #   1-grams: the x2, cat, sat, mat match: 5/6      2-grams: "the cat", "cat sat", "the mat": 3/5
    #   3-grams: "the cat sat": 1/4                     4-grams: none of 3 match: 0/3
    # sacrebleu's default 'exp' smoothing (mteval-v13a): the k-th order with no match counts as
    # 1 / (2^k * total), here k = 1: p4 = 1 / (2 * 3). Equal lengths: BP = 1.
    # BLEU = 100 * (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = 100 * (1/48) ** (1/4) = 37.99...
    # ('floor' would give p4 = 0.1/3, 'add-k' shifts p2..p4, 'none' gives 0.)
    hyps, refs = ["the cat sat on the mat"], ["the cat sat under the mat"]
    assert corpus_scores(hyps, refs)["bleu"] == pytest.approx(100 * (1 / 48) ** 0.25, rel=1e-12)
    assert bleu_from_stats(bleu_stats(hyps, refs)) == pytest.approx(100 * (1 / 48) ** 0.25, rel=1e-12)
    assert tokenized_bleu(hyps, refs) == 0.0  # tokenized_bleu is unsmoothed, as multi-bleu.perl
    # Two orders without a match, against "the cat ran to the mat": 1-grams 4/6 (the x2, cat, mat),
    # 2-grams 2/5 ("the cat", "the mat"), 3-grams 0/4 -> k = 1: 1/(2*4) = 1/8, 4-grams 0/3 -> k = 2:
    # 1/(4*3) = 1/12. BLEU = 100 * (4/6 * 2/5 * 1/8 * 1/12) ** (1/4) = 100 * (1/360) ** (1/4) = 22.97...
    assert corpus_scores(hyps, ["the cat ran to the mat"])["bleu"] == pytest.approx(100 * (1 / 360) ** 0.25,
                                                                                   rel=1e-12)
    # A 7-token reference "the cat sat under the mat today": the same matches as the first case and
    # BP = exp(1 - 7/6), so BLEU = 100 * exp(-1/6) * (1/48) ** (1/4) = 32.16...
    expected = 100 * math.exp(1 - 7 / 6) * (1 / 48) ** 0.25
    assert corpus_scores(hyps, ["the cat sat under the mat today"])["bleu"] == pytest.approx(expected, rel=1e-12)


MULTI_HYPS = ["the cat sat on the mat", "a dog is running in the park .", "He reads a book ."]
MULTI_REFS = [
    ["the cat sat on a mat", "a cat was sitting on the mat", "the cat is on the mat"],
    ["a dog runs in the park ."],
    ["he is reading a book .", "He reads a book ."],
]


def test_multiple_references_match_sacrebleu():
    scores = corpus_scores(MULTI_HYPS, MULTI_REFS)
    streams = [[refs[k] if k < len(refs) else None for refs in MULTI_REFS] for k in range(3)]
    assert scores["bleu"] == sacrebleu.corpus_bleu(MULTI_HYPS, streams).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(MULTI_HYPS, streams).score
    assert scores["exact_match"] == pytest.approx(1 / 3)  # the third hypothesis equals its second reference
    # more references can only add matches: every score rises above the single-reference one
    single = corpus_scores(MULTI_HYPS, [refs[0] for refs in MULTI_REFS])
    assert scores["bleu"] > single["bleu"] and scores["chrf"] > single["chrf"]
    unsmoothed = BLEU(tokenize="13a", lowercase=True, force=True, smooth_method="none")
    assert tokenized_bleu(MULTI_HYPS, MULTI_REFS) == unsmoothed.corpus_score(MULTI_HYPS, streams).score
    # statistics of two shards sum to the whole corpus, with several references too
    halves = [bleu_stats(MULTI_HYPS[:1], MULTI_REFS[:1]), bleu_stats(MULTI_HYPS[1:], MULTI_REFS[1:])]
    summed = {k: halves[0][k] + halves[1][k] for k in halves[0]}
    assert bleu_from_stats(summed) == pytest.approx(scores["bleu"], rel=1e-12)
    # a str and a one-element list are the same reference
    assert corpus_scores(HYPS, [[r] for r in REFS]) == corpus_scores(HYPS, REFS)


def test_multiple_references_by_hand():
    # hyp "the cat sat on the mat" with references "the cat sat under the mat" and "on the mat the cat sat":
    # clipped counts take the maximum over references. 1-grams 6/6; 2-grams: "the cat", "cat sat", "the mat"
    # (ref 1), "on the" (ref 2) -> 4/5 ("sat on" in neither); 3-grams: "the cat sat" (both), "on the mat"
    # (ref 2) -> 2/4; 4-grams: none of "the cat sat on", "cat sat on the", "sat on the mat" -> 0/3, exp
    # smoothing 1/(2*3). Both references have 6 tokens: BP = 1.
    # BLEU = 100 * (1 * 4/5 * 2/4 * 1/6) ** (1/4) = 100 * (1/15) ** (1/4)
    refs = [["the cat sat under the mat", "on the mat the cat sat"]]
    assert corpus_scores(["the cat sat on the mat"], refs)["bleu"] == pytest.approx(100 * (1 / 15) ** 0.25,
                                                                                   rel=1e-12)


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
        (["a"], [[]], r"expected references\[0\] to be a str or a non-empty list of str, got \[\]"),
        (["a"], [["a", 3]], r"expected references\[0\]\[1\] to be a str, got int"),
    ],
)
@pytest.mark.parametrize("fn", [corpus_scores, tokenized_bleu, exact_match])
def test_bad_input(fn, hyps, refs, message):
    with pytest.raises(ValueError, match=message):
        fn(hyps, refs)
