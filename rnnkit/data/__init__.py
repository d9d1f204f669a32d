"""Data layer shared by all tasks: reading files, vocabularies, tokenizers, batching, LM streams.

Modules: :mod:`~rnnkit.data.files` (read text with file:line errors), :mod:`~rnnkit.data.vocab`
(:class:`Vocab`), :mod:`~rnnkit.data.tokenize` (char, word and BPE subword tokenizers),
:mod:`~rnnkit.data.batching` (padding, length-bucketed batches), :mod:`~rnnkit.data.lm`
(contiguous streams and truncated-BPTT windows), :mod:`~rnnkit.data.vectors` (pre-trained word vectors).
"""

from rnnkit.data.batching import length_batches, pad_batch, padding_fraction, restore_order
from rnnkit.data.files import read_lines, read_text
from rnnkit.data.lm import BPTTStream, BPTTWindow, batchify, load_stream
from rnnkit.data.tokenize import (
    LEVELS,
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from rnnkit.data.vocab import Vocab

__all__ = [
    "BPTTStream",
    "BPTTWindow",
    "batchify",
    "load_stream",
    "LEVELS",
    "CharTokenizer",
    "SubwordTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "build_tokenizer",
    "tokenizer_from_dict",
    "Vocab",
    "length_batches",
    "pad_batch",
    "padding_fraction",
    "read_lines",
    "read_text",
    "restore_order",
]
