"""rnnkit.data.lm: batchify, BPTT windows, variable lengths, resume."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.data.lm import BPTTStream, batchify, ids_tensor, load_stream
from rnnkit.data.tokenize import build_tokenizer
from rnnkit.errors import DataError


def test_batchify_rows_are_contiguous_chunks():
    out = batchify(list(range(23)), 4)
    assert out.dtype == torch.int64 and out.shape == (4, 5)
    assert out.tolist() == [list(range(r * 5, r * 5 + 5)) for r in range(4)]  # tail 20..22 dropped
    t = batchify(torch.arange(10, dtype=torch.int32), 2)
    assert t.dtype == torch.int64 and t.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert batchify([1, 2], 1).tolist() == [[1, 2]]


def test_batchify_too_short():
    with pytest.raises(ValueError, match=r"text of 7 tokens is too short for batch size 4 \(each of the 4"):
        batchify(list(range(7)), 4)
    with pytest.raises(ValueError, match="1-D"):
        batchify(torch.zeros(2, 8, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="batch_size"):
        batchify([1, 2, 3], 0)


def test_load_stream_names_file(tmp_path):
    tok = build_tokenizer("word", ["a b c"])
    p = tmp_path / "valid.txt"
    p.write_text("a b\nc\n")  # 5 tokens with <eos>
    assert load_stream(p, tok, 2).shape == (2, 2)
    with pytest.raises(DataError) as info:
        load_stream(p, tok, 3, what="validation text")
    assert str(info.value) == (
        f"{p}: text of 5 tokens is too short for batch size 3 (each of the 3 streams needs at least 2 tokens)"
        " (validation text)"
    )
    with pytest.raises(DataError, match="no such file"):
        load_stream(tmp_path / "missing.txt", tok, 2)


def _data(b: int = 3, n: int = 50) -> torch.Tensor:
    return batchify(torch.arange(b * n), b)


@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("bptt", [1, 4, 7, 49, 60])
def test_windows_cover_stream_once_with_next_token_targets(variable, bptt):
    data = _data()
    stream = BPTTStream(data, bptt, variable=variable, seed=3)
    xs, ys = [], []
    for x, y, scale in stream:
        assert x.shape == y.shape and x.shape[0] == 3 and x.shape[1] >= 1
        assert torch.equal(y, x + 1)  # data is arange: the target is the next token of the same row
        assert scale > 0
        xs.append(x)
        ys.append(y)
    assert torch.equal(torch.cat(xs, dim=1), data[:, :-1])
    assert torch.equal(torch.cat(ys, dim=1), data[:, 1:])
    if not variable:
        assert len(xs) == len(stream)
    assert stream.pos == 0  # ready for the next epoch


def test_fixed_lengths_and_scale():
    stream = BPTTStream(_data(2, 21), 6)
    wins = list(stream)
    assert [w.x.shape[1] for w in wins] == [6, 6, 6, 2]
    assert all(w.lr_scale == 1.0 for w in wins)
    assert len(stream) == 4 and stream.tokens_per_epoch == 2 * 20 and stream.batch_size == 2


def test_variable_lengths_reproducible_by_seed_and_bounded():
    data = _data(2, 3000)

    def lengths(seed):
        return [(w.x.shape[1], w.lr_scale) for w in BPTTStream(data, 20, variable=True, seed=seed)]

    a = lengths(0)
    torch.manual_seed(99)  # the global RNG plays no part
    assert lengths(0) == a
    assert lengths(1) != a
    ls = [n for n, _ in a[:-1]]  # the last window may be cut by the end of the data
    assert min(ls) >= 5 and max(ls) <= 40
    assert len(set(ls)) > 5  # lengths actually vary
    assert 14 < sum(ls) / len(ls) < 22  # mean near 0.95 * 20 + 0.05 * 10
    assert all(scale == pytest.approx(n / 20) for n, scale in a[:-1])
    # a short base (bptt / 2) is drawn now and then
    assert any(n < 12 for n in ls)


def test_variable_global_rng_untouched():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(BPTTStream(_data(), 5, variable=True))
    assert torch.equal(torch.get_rng_state(), before)


def test_small_bptt_variable_clips_to_bptt_range():
    ls = [w.x.shape[1] for w in BPTTStream(_data(1, 400), 2, variable=True)][:-1]
    assert min(ls) >= 2 and max(ls) <= 4


def test_epochs_restart_at_zero_with_new_lengths():
    stream = BPTTStream(_data(2, 500), 10, variable=True, seed=7)
    e1 = [w.x[0, 0].item() for w in stream]
    e2 = [w.x[0, 0].item() for w in stream]
    assert e1[0] == 0 and e2[0] == 0
    assert e1 != e2  # the generator continues: new lengths in the new epoch


def _windows(stream, limit=None):
    out = []
    for i, (x, y, s) in enumerate(stream):
        if limit is not None and i == limit:
            break
        out.append((x.clone(), y.clone(), s))
    return out


@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("k", [0, 1, 5])
def test_resume_mid_epoch_yields_remaining_windows(variable, k):
    data = _data(3, 300)
    ref_stream = BPTTStream(data, 8, variable=variable, seed=11)
    ref = _windows(ref_stream) + _windows(ref_stream)  # two epochs

    stream = BPTTStream(data, 8, variable=variable, seed=11)
    it = iter(stream)
    first = [next(it) for _ in range(k)]  # train on k windows, then save
    state = json.loads(json.dumps(stream.state_dict()))  # must survive a JSON file
    restored = BPTTStream(data, 8, variable=variable, seed=12345)  # the seed must come from the state
    restored.load_state_dict(state)
    rest = _windows(restored) + _windows(restored)  # rest of epoch 1, then epoch 2
    got = [(x, y, s) for x, y, s in first] + rest
    assert len(got) == len(ref)
    for (x1, y1, s1), (x2, y2, s2) in zip(got, ref):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and s1 == s2


def test_resume_after_break_and_at_epoch_end():
    data = _data(2, 41)
    stream = BPTTStream(data, 10)
    it = iter(stream)
    got = [next(it) for _ in range(4)]  # all 4 windows, the loop left before it runs out
    assert got[-1].x.shape[1] == 10 and stream.pos == 40
    restored = BPTTStream(data, 10)
    restored.load_state_dict(stream.state_dict())
    assert _windows(restored) == []  # the epoch is over: the loop ends at once
    assert [w[0][0, 0].item() for w in _windows(restored)] == [0, 10, 20, 30]


def test_load_state_dict_rejects_mismatch():
    stream = BPTTStream(_data(2, 30), 5, variable=True)
    state = stream.state_dict()
    with pytest.raises(ValueError, match="shape"):
        BPTTStream(_data(3, 30), 5, variable=True).load_state_dict(state)
    with pytest.raises(ValueError, match="bptt=5"):
        BPTTStream(_data(2, 30), 6, variable=True).load_state_dict(state)
    with pytest.raises(ValueError, match="not an rnnkit BPTT stream state"):
        stream.load_state_dict({"pos": 3})
    bad = dict(state, pos=99)
    with pytest.raises(ValueError, match="invalid position 99"):
        stream.load_state_dict(bad)
    bad = dict(state, generator="AAAA")
    with pytest.raises(ValueError, match="damaged generator"):
        stream.load_state_dict(bad)


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        BPTTStream(torch.arange(10), 3)
    with pytest.raises(ValueError, match="at least 2 columns"):
        BPTTStream(torch.zeros(4, 1, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="bptt"):
        BPTTStream(_data(), 0)


def test_ids_tensor_equals_torch_tensor():
    ids = [5, 0, 2**40, 3]
    got = ids_tensor(ids)
    assert got.dtype == torch.int64 and got.tolist() == ids
    assert torch.equal(got, torch.tensor(ids, dtype=torch.int64))
    assert ids_tensor([]).shape == (0,) and ids_tensor([]).dtype == torch.int64
