"""Decoding: greedy and beam search for encoder-decoder models (:mod:`rnnkit.decode.search`)."""

from rnnkit.decode.search import Hypothesis, beam_search, greedy_search

__all__ = ["Hypothesis", "beam_search", "greedy_search"]
