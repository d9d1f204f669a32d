"""rnnkit.data.vocab.Vocab: ids, unk handling, deterministic builds, serialisation."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch

from rnnkit.data.vocab import Vocab


def test_specials_first_and_lookup():
    v = Vocab(["the", "cat"], specials=("<pad>", "<unk>", "<bos>", "<eos>"))
    assert v.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat"]
    assert v.stoi == {s: i for i, s in enumerate(v.itos)}
    assert len(v) == 6
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3)
    assert "cat" in v and "dog" not in v and "<eos>" in v
    assert v.index("cat") == 5
    assert v.index("dog") == v.unk_id
    assert v.encode(["the", "dog", "cat"]) == [4, 1, 5]
    assert v.decode([4, 1, 5, 0]) == ["the", "<unk>", "cat", "<pad>"]
    assert v.decode(torch.tensor([4, 5])) == ["the", "cat"]


def test_absent_specials_are_none():
    v = Vocab(["a"])
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, None, None)
    v = Vocab(["a"], specials=(), unk=None)
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (None, None, None, None)
    assert v.itos == ["a"]


def test_no_unk_raises_keyerror():
    v = Vocab(["a", "b"], specials=("<pad>",), unk=None)
    assert v.encode(["a", "b"]) == [1, 2]
    with pytest.raises(KeyError, match="'zz'"):
        v.index("zz")
    with pytest.raises(KeyError):
        v.encode(["a", "zz"])


def test_custom_unk_symbol():
    v = Vocab(["x"], specials=("<pad>", "UNK"), unk="UNK")
    assert v.unk_id == 1 and v.index("nope") == 1


def test_invalid_construction():
    with pytest.raises(ValueError, match="must be one of specials"):
        Vocab(["a"], specials=("<pad>",), unk="<unk>")
    with pytest.raises(ValueError, match="duplicate symbol 'a'"):
        Vocab(["a", "b", "a"])
    with pytest.raises(ValueError, match="duplicate symbol '<unk>'"):
        Vocab(["<unk>"])
    with pytest.raises(ValueError, match="distinct"):
        Vocab([], specials=("<pad>", "<pad>"), unk=None)


def test_decode_out_of_range():
    v = Vocab(["a"])
    with pytest.raises(ValueError, match="id 3 is out of range for a vocabulary of size 3"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="id -1"):
        v.decode([-1])


def test_build_orders_by_count_then_first_occurrence():
    seqs = [["b", "a", "c"], ["c", "d", "a"], ["e", "c"]]
    # counts: c=3, a=2, b=1, d=1, e=1 -> ties b, d, e in first-occurrence order
    v = Vocab.build(seqs)
    assert v.itos == ["<pad>", "<unk>", "c", "a", "b", "d", "e"]


def test_build_min_count_and_max_size():
    seqs = [["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]]
    assert Vocab.build(seqs, min_count=2).itos[2:] == ["a", "b", "c"]
    assert Vocab.build(seqs, max_size=2).itos[2:] == ["a", "b"]
    assert Vocab.build(seqs, min_count=3, max_size=10).itos[2:] == ["a", "b"]
    v = Vocab.build(seqs, max_size=0)
    assert v.itos == ["<pad>", "<unk>"] and v.encode(["a"]) == [1]
    with pytest.raises(ValueError, match="min_count"):
        Vocab.build(seqs, min_count=0)
    with pytest.raises(TypeError, match="got a str"):
        Vocab.build("abc")


def test_build_matches_brute_force_and_is_deterministic():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    seqs = [[rng.choice(words[: rng.randint(1, 40)]) for _ in range(rng.randint(0, 12))] for _ in range(200)]
    v = Vocab.build(seqs, min_count=2, max_size=25)
    flat = [t for s in seqs for t in s]
    counts = Counter(flat)
    first = {}
    for i, t in enumerate(flat):
        first.setdefault(t, i)
    expected = sorted((t for t in counts if counts[t] >= 2), key=lambda t: (-counts[t], first[t]))[:25]
    assert v.itos[2:] == expected
    assert Vocab.build([list(s) for s in seqs], min_count=2, max_size=25) == v


def test_build_literal_special_in_data_keeps_special_id():
    # PTB contains the literal token <unk>: it must not become an ordinary token
    seqs = [["a", "<unk>", "b"], ["<unk>", "<unk>"]]
    v = Vocab.build(seqs, specials=("<pad>", "<unk>", "<eos>"))
    assert v.itos == ["<pad>", "<unk>", "<eos>", "a", "b"]
    assert v.encode(seqs[0]) == [3, 1, 4]


def test_unknown_distinct_in_first_occurrence_order():
    v = Vocab(["a", "b"])
    assert v.unknown(["x", "a", "y", "x", "<unk>", "b", "z"]) == ["x", "y", "z"]
    assert v.unknown(["a"]) == []


def test_dict_round_trip_through_json():
    v = Vocab.build([["é", "ü", "x", "x"]], specials=("<pad>", "<unk>", "<bos>", "<eos>"))
    d = json.loads(json.dumps(v.to_dict()))
    w = Vocab.from_dict(d)
    assert w == v and w.itos == v.itos and w.stoi == v.stoi
    assert (w.pad_id, w.unk_id, w.bos_id, w.eos_id) == (v.pad_id, v.unk_id, v.bos_id, v.eos_id)
    v2 = Vocab(["a"], specials=("<pad>",), unk=None)
    assert Vocab.from_dict(v2.to_dict()).unk_id is None


def test_from_dict_rejects_garbage():
    with pytest.raises(ValueError, match="not an rnnkit vocabulary"):
        Vocab.from_dict({"itos": ["a"]})
    with pytest.raises(ValueError, match="not an rnnkit vocabulary"):
        Vocab.from_dict(["a"])
    d = Vocab(["a"]).to_dict()
    del d["tokens"]
    with pytest.raises(ValueError, match="missing the field 'tokens'"):
        Vocab.from_dict(d)
    d = Vocab(["a"]).to_dict()
    d["tokens"] = ["a", "a"]
    with pytest.raises(ValueError, match="duplicate"):
        Vocab.from_dict(d)
    d["tokens"] = [1]
    with pytest.raises(ValueError, match="damaged"):
        Vocab.from_dict(d)
