"""rnnkit.data.tokenize: char, word and BPE subword tokenizers."""

from __future__ import annotations

import json
import random

import pytest

from rnnkit.data.tokenize import (
    CharTokenizer,
    SubwordTokenizer,
    WordTokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)

WORDS = "the cat sat on a mat and the dog ran to the old red barn while birds sang".split()


def _corpus(n_lines: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10))) for _ in range(n_lines)]
    return "\n".join(lines) + "\n"


PTB_LIKE = " the <unk> sat on N mat \n a dog ran \n the <unk> <unk> barn \n"


# -- char -----------------------------------------------------------------------------------------


def test_char_round_trip_and_stream():
    text = "hello, world\nsecond line\n\nend"
    tok = build_tokenizer("char", [text])
    assert isinstance(tok, CharTokenizer) and tok.level == "char"
    assert tok.vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert set(tok.vocab.itos[4:]) == set(text)
    assert tok.tokenize("ab\n") == ["a", "b", "\n"]
    assert tok.decode(tok.encode("hello world")) == "hello world"
    stream = tok.encode_stream(text)
    assert len(stream) == len(text)  # every character, newlines included, no <eos>
    assert tok.vocab.eos_id not in stream
    assert tok.decode_stream(stream) == text


def test_char_unknown_and_specials_in_decode():
    tok = build_tokenizer("char", ["abc"])
    ids = tok.encode("abz<")
    assert ids[2] == tok.vocab.unk_id and ids[3] == tok.vocab.unk_id
    assert tok.decode(ids) == "ab\ufffd\ufffd"  # one character per id
    assert tok.unknown("zebra <b>") == ["z", "e", "r", " ", "<", ">"]
    v = tok.vocab
    assert tok.decode([v.bos_id, v.stoi["a"], v.pad_id, v.eos_id, v.stoi["c"]]) == "ac"


def test_char_min_count_max_size():
    tok = build_tokenizer("char", ["aaaabbbcc d"], min_count=2)
    assert tok.vocab.itos[4:] == ["a", "b", "c"]
    tok = build_tokenizer("char", ["aaaabbbcc d"], max_size=2)
    assert tok.vocab.itos[4:] == ["a", "b"]


# -- word -----------------------------------------------------------------------------------------


def test_word_round_trip_and_stream_eos_per_line():
    text = "the cat sat\n\nthe  dog\n"
    tok = build_tokenizer("word", [text])
    assert isinstance(tok, WordTokenizer) and tok.level == "word"
    v = tok.vocab
    assert v.itos[4:] == ["the", "cat", "sat", "dog"]
    assert tok.tokenize("  the\tcat  ") == ["the", "cat"]
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"
    stream = tok.encode_stream(text)
    eos = v.eos_id
    # blank line gives a lone <eos>; final newline adds no empty line
    assert stream == v.encode(["the", "cat", "sat"]) + [eos, eos] + v.encode(["the", "dog"]) + [eos]
    assert tok.decode_stream(stream) == "the cat sat\n\nthe dog\n"
    assert tok.encode_stream("the cat") == tok.encode_stream("the cat\n")


def test_word_ptb_literal_unk_maps_to_unk_id():
    tok = build_tokenizer("word", [PTB_LIKE])
    v = tok.vocab
    assert v.itos.count("<unk>") == 1 and v.stoi["<unk>"] == v.unk_id
    stream = tok.encode_stream(PTB_LIKE)
    assert stream.count(v.unk_id) == 3
    assert stream.count(v.eos_id) == 3
    assert tok.decode_stream(stream) == "the <unk> sat on N mat\na dog ran\nthe <unk> <unk> barn\n"
    assert tok.unknown("the <unk> zebra N zebra") == ["zebra"]


def test_word_literal_pad_is_not_padding():
    tok = build_tokenizer("word", ["a b"])
    ids = tok.encode("a <pad> b <eos>")
    v = tok.vocab
    assert ids == [v.stoi["a"], v.unk_id, v.stoi["b"], v.eos_id]
    # the whole-corpus stream: the same per line, then <eos> at each line end
    assert tok.encode_stream("a <pad> b <eos>\n<pad>\n") == ids + [v.eos_id, v.unk_id, v.eos_id]


def test_word_min_count_max_size_and_unk():
    text = "a a a a b b b c c d\n"
    tok = build_tokenizer("word", [text], min_count=2)
    assert tok.vocab.itos[4:] == ["a", "b", "c"]
    assert tok.encode("d a") == [tok.vocab.unk_id, tok.vocab.stoi["a"]]
    tok = build_tokenizer("word", [text], max_size=1)
    assert tok.vocab.itos[4:] == ["a"] and len(tok.vocab) == 5


def test_word_without_eos_special_refuses_stream():
    tok = build_tokenizer("word", ["a b"], specials=("<pad>", "<unk>"))
    assert tok.encode("a b") == [2, 3]
    with pytest.raises(ValueError, match="<eos>"):
        tok.encode_stream("a b\n")


# -- subword --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe():
    return build_tokenizer("subword", [_corpus()], subword_vocab_size=60)


def test_subword_round_trip(bpe):
    assert isinstance(bpe, SubwordTokenizer) and bpe.level == "subword"
    assert len(bpe.vocab) <= 60
    assert bpe.vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    for line in _corpus(50, seed=1).splitlines() + ["the cat  sat ", "barn dog the"]:
        pieces = bpe.tokenize(line)
        assert all(p in bpe.vocab for p in pieces)
        ids = bpe.encode(line)
        assert bpe.vocab.unk_id not in ids
        assert ids == bpe.vocab.encode(pieces)
        assert bpe.decode(ids) == line
    # merges happened: frequent words are single pieces, fewer pieces than characters
    assert len(bpe.tokenize("the cat sat")) < len("the cat sat")


def test_subword_stream_eos_per_line(bpe):
    text = "the cat\n\nthe dog ran\n"
    stream = bpe.encode_stream(text)
    eos = bpe.vocab.eos_id
    assert stream == bpe.encode("the cat") + [eos, eos] + bpe.encode("the dog ran") + [eos]
    assert bpe.decode_stream(stream) == text


def test_subword_unknown_characters(bpe):
    ids = bpe.encode("the zebra")
    assert bpe.vocab.unk_id in ids
    assert bpe.unknown("the zebra, the cat ö") == ["z", ",", "ö"]
    assert bpe.unknown("the cat") == []


def test_subword_literal_unk_and_pad():
    text = PTB_LIKE * 20
    tok = build_tokenizer("subword", [text], subword_vocab_size=80)
    # specials are not learnt as pieces of letters
    assert not any(p in tok.vocab for p in ("<u", "nk>", "▁<unk>"))
    ids = tok.encode("the <unk> barn")
    assert ids.count(tok.vocab.unk_id) == 1
    assert tok.unknown("the <unk> barn") == []
    assert tok.decode(ids) == "the <unk> barn"
    assert tok.vocab.pad_id not in tok.encode("a <pad> b")
    assert tok.vocab.pad_id not in tok.encode_stream("a <pad> b\n")


def test_subword_min_count_limits_merges():
    text = _corpus()
    small = build_tokenizer("subword", [text], subword_vocab_size=500, min_count=200)
    big = build_tokenizer("subword", [text], subword_vocab_size=500, min_count=1)
    assert len(small.vocab) < len(big.vocab) <= 500


def test_subword_argument_errors():
    with pytest.raises(ValueError, match="max_size"):
        build_tokenizer("subword", ["a b"], max_size=10)
    with pytest.raises(ValueError, match="<unk>"):
        build_tokenizer("subword", ["a b"], specials=("<pad>", "<eos>"))
    with pytest.raises(ValueError, match="subword_vocab_size"):
        build_tokenizer("subword", ["a b"], subword_vocab_size=4)


# -- all levels -----------------------------------------------------------------------------------


def test_unknown_level_and_str_texts():
    with pytest.raises(ValueError, match="level must be one of char, word, subword, got 'byte'"):
        build_tokenizer("byte", ["a"])
    with pytest.raises(TypeError, match="got a str"):
        build_tokenizer("word", "a b c")


@pytest.mark.parametrize("level", ["char", "word", "subword"])
def test_deterministic_build(level):
    text = _corpus(200, seed=3)
    kw = {"subword_vocab_size": 120} if level == "subword" else {"max_size": 10}
    a = build_tokenizer(level, [text], **kw)
    b = build_tokenizer(level, [text], **kw)
    assert a.vocab == b.vocab
    assert a.to_dict() == b.to_dict()
    assert a.encode_stream(text) == b.encode_stream(text)


@pytest.mark.parametrize("level", ["char", "word", "subword"])
def test_dict_round_trip_through_json(level):
    text = _corpus(200, seed=4)
    kw = {"subword_vocab_size": 90} if level == "subword" else {}
    tok = build_tokenizer(level, [text], **kw)
    d = json.loads(json.dumps(tok.to_dict()))
    back = tokenizer_from_dict(d)
    assert type(back) is type(tok) and back.level == level
    assert back.vocab == tok.vocab
    probe = _corpus(20, seed=5) + "zebra <unk> ö\n"
    assert back.encode_stream(probe) == tok.encode_stream(probe)
    assert back.decode_stream(tok.encode_stream(probe)) == tok.decode_stream(tok.encode_stream(probe))
    assert back.to_dict() == tok.to_dict()


def test_from_dict_rejects_damage():
    with pytest.raises(ValueError, match="not an rnnkit tokenizer"):
        tokenizer_from_dict({"level": "word"})
    d = build_tokenizer("word", ["a b"]).to_dict()
    d["level"] = "phoneme"
    with pytest.raises(ValueError, match="unknown level 'phoneme'"):
        tokenizer_from_dict(d)
    d = build_tokenizer("subword", [_corpus(50)], subword_vocab_size=40).to_dict()
    d["bpe"] = d["bpe"][:100]
    with pytest.raises(ValueError, match="damaged 'bpe'"):
        tokenizer_from_dict(d)
    d = build_tokenizer("subword", [_corpus(50)], subword_vocab_size=40).to_dict()
    d["vocab"]["tokens"] = d["vocab"]["tokens"][::-1]
    with pytest.raises(ValueError, match="do not match"):
        tokenizer_from_dict(d)
