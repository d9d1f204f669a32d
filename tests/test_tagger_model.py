"""Tagger model: shapes, padding never leaks, batched == one at a time, overfitting, vectors, config."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rnnkit.data.vectors import load_word_vectors
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.models.tagger import Tagger, TaggerBatch, TaggerConfig, collate_tagged
from rnnkit.nn.crf import bio_constraints


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a busy shared CPU, spinning OpenMP threads make tiny ops 30x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


HEADS = [
    pytest.param({"crf": False, "use_chars": True}, id="softmax-chars"),
    pytest.param({"crf": True, "use_chars": True}, id="crf-chars"),
    pytest.param({"crf": False, "use_chars": False}, id="softmax-words"),
    pytest.param({"crf": True, "use_chars": False}, id="crf-words"),
]


def _config(**kw) -> TaggerConfig:
    base = dict(num_words=20, num_tags=5, num_chars=12, emb=8, char_emb=6, char_hidden=5, hidden=7, layers=2,
                dropout=0.3, crf=False, use_chars=True, word_pad_id=0, char_pad_id=0, cell="lstm", char_cell="lstm")
    base.update(kw)
    return TaggerConfig(**base)


def _random_sentences(rng: random.Random, n: int, cfg: TaggerConfig):
    """n sentences of (word ids, char ids per word, tag ids), ids avoiding the pad id 0."""
    out = []
    for _ in range(n):
        length = rng.randint(1, 6)
        words = [rng.randrange(1, cfg.num_words) for _ in range(length)]
        chars = [[rng.randrange(1, cfg.num_chars) for _ in range(rng.randint(1, 5))] for _ in range(length)]
        tags = [rng.randrange(cfg.num_tags) for _ in range(length)]
        out.append((words, chars, tags))
    return out


def _collate(sents, use_chars=True) -> TaggerBatch:
    words, chars, tags = zip(*sents)
    return collate_tagged(list(words), list(chars) if use_chars else None, list(tags))


def _model(kw, seed=0) -> Tagger:
    torch.manual_seed(seed)
    cfg = _config(**kw)
    constraints = None
    if cfg.crf:
        # a constrained CRF over tags O, B-X, I-X, B-Y, I-Y
        constraints = bio_constraints(["O", "B-X", "I-X", "B-Y", "I-Y"], "BIO")
    model = Tagger(cfg, crf_constraints=constraints)
    with torch.no_grad():
        if model.crf is not None:
            model.crf.transitions.normal_()
    return model.eval()


def test_collate():
    batch = collate_tagged([[3, 4], [5]], [[[1, 2], [3]], [[4, 5, 6]]], [[1, 2], [3]])
    assert batch.words.tolist() == [[3, 4], [5, 0]]
    assert batch.lengths.tolist() == [2, 1]
    assert batch.char_lengths.tolist() == [[2, 1], [3, 0]]
    assert batch.chars.tolist() == [[[1, 2, 0], [3, 0, 0]], [[4, 5, 6], [0, 0, 0]]]
    assert batch.tags.tolist() == [[1, 2], [3, 0]]
    assert batch.num_tokens == 3
    with pytest.raises(ValueError, match="tags: expected one tag per word"):
        collate_tagged([[3, 4]], tags=[[1]])
    with pytest.raises(ValueError, match="at least one word"):
        collate_tagged([[3], []])
    with pytest.raises(ValueError, match="word 0 of sentence 0 has no characters"):
        collate_tagged([[3]], [[[]]])


@pytest.mark.parametrize("kw", HEADS)
def test_shapes_and_loss(kw):
    model = _model(kw)
    batch = _collate(_random_sentences(random.Random(0), 4, model.config), kw["use_chars"])
    emissions = model(batch.words, batch.chars, batch.lengths, batch.char_lengths)
    assert emissions.shape == (4, batch.words.size(1), 5)
    loss, n = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    assert n == int(batch.lengths.sum())
    paths = model.predict(batch)
    assert [len(p) for p in paths] == batch.lengths.tolist()
    assert all(0 <= y < 5 for p in paths for y in p)


@pytest.mark.parametrize("kw", HEADS)
def test_padding_never_leaks(kw):
    model = _model(kw, seed=1)
    batch = _collate(_random_sentences(random.Random(1), 6, model.config), kw["use_chars"])
    mask = torch.arange(batch.words.size(1)).unsqueeze(0) < batch.lengths.unsqueeze(1)
    ref_em = model(batch.words, batch.chars, batch.lengths, batch.char_lengths)
    ref_loss, _ = model.loss(batch)
    ref_pred = model.predict(batch)

    # junk in every padded cell: padded words, padded tags, padded chars of real and padded words,
    # plus one extra all-padding time step and one extra character column
    g = torch.Generator().manual_seed(2)
    b, t = batch.words.shape
    words = torch.randint(0, 20, (b, t + 1), generator=g)
    words[:, :t][mask] = batch.words[mask]
    tags = torch.randint(0, 5, (b, t + 1), generator=g)
    tags[:, :t][mask] = batch.tags[mask]
    junk = TaggerBatch(words, batch.lengths, tags=tags)
    if kw["use_chars"]:
        c = batch.chars.size(2)
        chars = torch.randint(0, 12, (b, t + 1, c + 1), generator=g)
        char_mask = torch.arange(c).view(1, 1, c) < batch.char_lengths.unsqueeze(2)  # (B, T, C)
        chars[:, :t, :c][char_mask] = batch.chars[char_mask]
        char_lengths = torch.randint(0, 3, (b, t + 1), generator=g)
        char_lengths[:, :t][mask] = batch.char_lengths[mask]
        junk.chars, junk.char_lengths = chars, char_lengths

    em = model(junk.words, junk.chars, junk.lengths, junk.char_lengths)
    torch.testing.assert_close(em[:, :t][mask], ref_em[mask], rtol=0, atol=1e-6)
    loss, _ = model.loss(junk)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-5)
    assert model.predict(junk) == ref_pred


@pytest.mark.parametrize("kw", HEADS)
def test_batched_equals_one_at_a_time(kw):
    model = _model(kw, seed=3)
    sents = _random_sentences(random.Random(3), 7, model.config)
    batched = model.predict(_collate(sents, kw["use_chars"]))
    batched_loss, _ = model.loss(_collate(sents, kw["use_chars"]))
    single = [model.predict(_collate([s], kw["use_chars"]))[0] for s in sents]
    single_loss = sum(model.loss(_collate([s], kw["use_chars"]))[0] for s in sents)
    assert batched == single
    torch.testing.assert_close(batched_loss, single_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("crf", [False, True])
def test_overfits_tiny_tagging_set(crf):
    """Tags depend on the word and its left neighbour; the model must fit 40 sentences exactly."""
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = _config(num_words=12, num_tags=4, num_chars=8, emb=16, char_emb=8, char_hidden=8, hidden=24,
                  layers=1, dropout=0.0, crf=crf)
    sents = []
    for _ in range(40):
        words = [rng.randrange(1, 12) for _ in range(rng.randint(2, 7))]
        tags = [(w + (words[i - 1] if i else 0)) % 4 for i, w in enumerate(words)]
        chars = [[1 + w % 7, 1 + (w * 3) % 7] for w in words]
        sents.append((words, chars, tags))
    batch = _collate(sents)
    gold = [s[2] for s in sents]
    model = Tagger(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.eval()
    assert model.predict(batch) != gold
    for step in range(1, 301):
        model.train()
        opt.zero_grad()
        loss, n = model.loss(batch)
        (loss / n).backward()
        opt.step()
        if step % 10 == 0:
            model.eval()
            if model.predict(batch) == gold:
                break
    assert model.predict(batch) == gold, f"not fitted after {step} steps"


def test_config_json_round_trip_and_validation():
    cfg = _config(crf=True)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert TaggerConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown TaggerConfig fields: bogus"):
        TaggerConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="num_chars must be >= 1 when use_chars"):
        _config(num_chars=0)
    assert _config(num_chars=0, use_chars=False).num_chars == 0
    with pytest.raises(ValueError, match="dropout must be in"):
        _config(dropout=1.0)
    with pytest.raises(ValueError, match="crf_constraints need config.crf=True"):
        Tagger(_config(), crf_constraints=bio_constraints(["O", "B-X", "I-X", "B-Y", "I-Y"], "BIO"))


def test_state_dict_restores_crf_constraints():
    model = _model({"crf": True, "use_chars": True})
    fresh = Tagger(model.config)  # built from the config alone, as when loading a checkpoint
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.crf.allowed_transitions, model.crf.allowed_transitions)
    assert not bool(fresh.crf.allowed_start[2])  # I-X may not start a sentence


def test_forward_shape_errors():
    model = _model({"crf": False, "use_chars": True})
    words = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="chars and char_lengths are required"):
        model(words, None, torch.tensor([3, 2]), None)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(2,\), got \(3,\)"):
        model(words, torch.ones(2, 3, 2, dtype=torch.long), torch.tensor([3, 2, 1]), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"chars: expected shape \(2, 3, C\), got \(2, 2, 2\)"):
        model(words, torch.ones(2, 2, 2, dtype=torch.long), torch.tensor([3, 2]), torch.ones(2, 3))


def test_load_word_vectors_formats(tmp_path):
    vocab = Vocab(["the", "Cat", "sat", "dog"])  # <pad>, <unk>, the, Cat, sat, dog
    glove = tmp_path / "glove.txt"
    glove.write_text("the 1 2 3\ncat 4 5 6\nsat 7 8 9\nthe 0 0 0\n", encoding="utf-8")
    vectors, found = load_word_vectors(glove, vocab)
    assert vectors.shape == (6, 3)
    assert found.tolist() == [False, False, True, True, True, False]
    assert vectors[2].tolist() == [1, 2, 3]  # first occurrence wins
    assert vectors[3].tolist() == [4, 5, 6]  # "Cat" falls back to "cat"
    assert vectors[5].tolist() == [0, 0, 0]
    w2v = tmp_path / "w2v.txt"
    w2v.write_text("3 2\nCat 1 1\ncat 2 2\ndog -0.5 1e-1\n", encoding="utf-8")
    vectors, found = load_word_vectors(w2v, vocab.itos)
    assert vectors[3].tolist() == [1, 1]  # exact match beats the lowercase one
    assert vectors[5].tolist() == pytest.approx([-0.5, 0.1])
    model = Tagger(_config(num_words=6, num_tags=2, emb=2, use_chars=False))
    before = model.word_embedding.weight.detach().clone()
    assert model.set_word_vectors(vectors, found) == 2
    assert model.word_embedding.weight[5].tolist() == pytest.approx([-0.5, 0.1])
    assert torch.equal(model.word_embedding.weight[2], before[2])  # not found: untouched
    with pytest.raises(ValueError, match=r"vectors: expected shape \(6, 2\)"):
        model.set_word_vectors(torch.zeros(6, 3))


def test_load_word_vectors_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2 3\ncat 4 5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:2: expected 3 numbers after the word, got 2 \(word vectors\)"):
        load_word_vectors(bad, ["the", "cat"])
    nan = tmp_path / "nan.txt"
    nan.write_text("2 2\nthe 1 2\ncat 4 x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nan\.txt:3: 'x' is not a number"):
        load_word_vectors(nan, ["the", "cat"])
    lonely = tmp_path / "lonely.txt"
    lonely.write_text("the\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lonely\.txt:1: expected a word followed by numbers"):
        load_word_vectors(lonely, ["the"])
    with pytest.raises(DataError, match=r"missing\.txt: no such file"):
        load_word_vectors(tmp_path / "missing.txt", ["the"])
