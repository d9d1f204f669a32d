"""Language-model metrics: perplexity, bits per token and the summary dict."""

from __future__ import annotations

import math

import pytest

from rnnkit.metrics.lm import bits_per_token, lm_summary, perplexity


def test_perplexity_is_exp_of_mean_nll():
    assert perplexity(0.0) == 1.0
    # a uniform model over V tokens has mean NLL ln V and perplexity V
    assert perplexity(math.log(65)) == pytest.approx(65.0, rel=1e-12)
    assert perplexity(2.5) == pytest.approx(math.exp(2.5), rel=1e-15)


def test_perplexity_overflow_and_non_finite():
    assert perplexity(709.0) == pytest.approx(math.exp(709.0))
    assert perplexity(710.0) == math.inf  # math.exp would raise OverflowError
    assert perplexity(1e308) == math.inf
    assert perplexity(math.inf) == math.inf
    assert math.isnan(perplexity(math.nan))


def test_bits_per_token():
    assert bits_per_token(math.log(2)) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_token(math.log(256)) == pytest.approx(8.0, rel=1e-15)
    assert bits_per_token(0.0) == 0.0


@pytest.mark.parametrize("fn", [perplexity, bits_per_token])
def test_negative_nll_rejected(fn):
    with pytest.raises(ValueError, match=r"mean NLL must be >= 0 \(nats per token\), got -0.1"):
        fn(-0.1)


def test_lm_summary():
    total, tokens = 4 * math.log(10), 4
    summary = lm_summary(total, tokens)
    assert set(summary) == {"loss", "perplexity", "bits_per_token", "tokens"}
    assert summary["loss"] == pytest.approx(math.log(10))
    assert summary["perplexity"] == pytest.approx(10.0)
    assert summary["bits_per_token"] == pytest.approx(math.log2(10))
    assert summary["tokens"] == 4 and isinstance(summary["tokens"], int)


@pytest.mark.parametrize("tokens", [0, -3, 2.5, True])
def test_lm_summary_rejects_bad_token_counts(tokens):
    with pytest.raises(ValueError, match="tokens must be a positive integer"):
        lm_summary(1.0, tokens)


def test_lm_summary_rejects_negative_total():
    with pytest.raises(ValueError, match="mean NLL must be >= 0"):
        lm_summary(-1.0, 3)
