"""Decoding: greedy and beam search for encoder-decoder models (:mod:`rnnkit.decode.search`) and sampling
from language models (:mod:`rnnkit.decode.sampling`)."""

from rnnkit.decode.sampling import generate, sample_next
from rnnkit.decode.search import Hypothesis, beam_search, greedy_search

__all__ = ["Hypothesis", "beam_search", "generate", "greedy_search", "sample_next"]
