"""Metrics: pure functions from model outputs (as numbers or strings) to scores."""

from rnnkit.metrics.lm import bits_per_token, lm_summary, perplexity
from rnnkit.metrics.tagging import accuracy, span_scores, tagging_report
from rnnkit.metrics.translation import corpus_scores, exact_match, tokenized_bleu

__all__ = [
    "accuracy",
    "bits_per_token",
    "corpus_scores",
    "exact_match",
    "lm_summary",
    "perplexity",
    "span_scores",
    "tagging_report",
    "tokenized_bleu",
]
