"""rnnkit.data.vectors: word2vec/GloVe text files; every bad number is a one-line error naming file and line."""

from __future__ import annotations

import re

import pytest
import torch

from rnnkit.data.vectors import load_word_vectors
from rnnkit.errors import DataError


@pytest.mark.parametrize("bad, detail", [
    ("nan", "'nan' is not a finite number"),
    ("NaN", "'NaN' is not a finite number"),
    ("inf", "'inf' is not a finite number"),
    ("-Infinity", "'-Infinity' is not a finite number"),
    ("1e999", "'1e999' is not a finite number"),  # overflows float64 to inf
    ("1e39", "'1e39' is outside the float32 range"),  # finite in float64, inf in float32
])
def test_non_finite_numbers_name_file_and_line(tmp_path, bad, detail):
    p = tmp_path / "vec.txt"
    p.write_text(f"2 3\nthe 0.1 0.2 0.3\ncat 0.4 {bad} 0.6\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_word_vectors(p, ["the", "cat"])
    assert str(info.value) == f"{p}:3: {detail} (word vectors)"


def test_non_finite_number_of_an_unused_word_is_not_read(tmp_path):
    p = tmp_path / "vec.txt"
    p.write_text("the 0.5 1.5\ndog nan nan\n", encoding="utf-8")
    vectors, found = load_word_vectors(p, ["the", "cat"])
    assert torch.isfinite(vectors).all()
    assert vectors.tolist() == [[0.5, 1.5], [0.0, 0.0]] and found.tolist() == [True, False]


def test_word2vec_header_with_zero_dimensions(tmp_path):
    p = tmp_path / "vec.txt"
    p.write_text("2 0\nthe\ncat\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{p}:1: the word2vec header gives 0 dimensions (word vectors)")):
        load_word_vectors(p, ["the"])
