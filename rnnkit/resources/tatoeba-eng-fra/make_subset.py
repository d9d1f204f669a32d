"""Rebuild the bundled English->French subset from the Tatoeba export ``fra.txt`` (see README.md).

Usage (from the repository root)::

    PYTHONPATH=. python rnnkit/resources/tatoeba-eng-fra/make_subset.py ../shared/data/tatoeba-eng-fra/fra.txt

Recipe: normalise spaces (U+00A0, U+202F, U+2009 -> space; U+200B, U+00AD dropped; runs of spaces
collapsed), keep pairs whose English side starts with one of ``PREFIXES`` and has at most 8 words while
the French side has at most 10 (whitespace-separated), drop exact duplicate pairs, then split with
``rnnkit.data.pairs.split_pairs(seed=1, valid=0.05, test=0.05)`` (grouped by English sentence). Casing
and punctuation are kept as in the source.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rnnkit.data.pairs import read_tsv_pairs, split_pairs

PREFIXES = (
    "I am ", "I'm ", "He is ", "He's ", "She is ", "She's ",
    "You are ", "You're ", "We are ", "We're ", "They are ", "They're ",
)
MAX_EN_WORDS, MAX_FR_WORDS = 8, 10
SEED, VALID, TEST = 1, 0.05, 0.05
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u200b": None, "\u00ad": None})


def normalise(text: str) -> str:
    return " ".join(text.translate(_SPACES).split())


def main(fra_txt: str) -> None:
    pairs = [(normalise(en), normalise(fr)) for en, fr in read_tsv_pairs(fra_txt).pairs]
    keep = [
        (en, fr)
        for en, fr in pairs
        if en.startswith(PREFIXES) and len(en.split()) <= MAX_EN_WORDS and len(fr.split()) <= MAX_FR_WORDS
    ]
    keep = list(dict.fromkeys(keep))  # drop exact duplicates, keep file order
    out = Path(__file__).resolve().parent
    for name, split in zip(("train", "valid", "test"), split_pairs(keep, seed=SEED, valid=VALID, test=TEST)):
        text = "".join(f"{en}\t{fr}\n" for en, fr in split)
        (out / f"{name}.tsv").write_text(text, encoding="utf-8")
        print(f"{name}.tsv: {len(split)} pairs, {len({en for en, _ in split})} English sentences")


if __name__ == "__main__":
    main(sys.argv[1])
