"""Variable lengths on the fused engine (CPU): plain kernels on the padded batch, equal to torch's packed path.

The layers no longer pack a variable-length batch on CPU (torch's packed kernels are a per-step loop): the
forward direction runs the plain kernel on the padded batch, the reverse one on each sequence reversed within
its length, both in time segments over the rows still alive (longest first), and the LSTM's final cell state is
recomputed for the sequences that end inside a segment. These tests pin that the results are torch's packed
results (outputs, zeros at padding, final states, gradients) whatever the segments, that no packing happens, and
that the segments are the cheapest under their cost model.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn.layers as layers
import rnnkit.nn.recurrent as recurrent
from rnnkit.nn import GRU, LSTM, RNN

PAIRS = [(LSTM, torch.nn.LSTM), (GRU, torch.nn.GRU), (RNN, torch.nn.RNN)]
IN, HID, B, T = 5, 4, 6, 7
LENGTHS = torch.tensor([7, 3, 1, 5, 7, 2])


@pytest.fixture
def no_packing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any packing of a padded batch inside the layers fail."""

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the fused CPU path packed the batch")

    monkeypatch.setattr(recurrent, "pack_padded_sequence", refuse)


def pair(ours_cls, ref_cls, dtype, **kwargs):  # noqa: ANN001, ANN003, ANN201
    torch.manual_seed(0)
    ours = ours_cls(IN, HID, dtype=dtype, **kwargs)
    ref = ref_cls(IN, HID, dtype=dtype, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def as_tuple(state):  # noqa: ANN001, ANN201
    return tuple(state) if isinstance(state, tuple) else (state,)


def run_both(ours, ref, x, lengths, state, batch_first):  # noqa: ANN001, ANN201
    """Both layers' outputs, final states and gradients (input, then every parameter) of one loss."""
    out, final = ours(x, state, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    ref_packed, ref_final = ref(packed, state)
    steps = x.size(1 if batch_first else 0)
    ref_out = pad_packed_sequence(ref_packed, batch_first=batch_first, total_length=steps)[0]
    weights = torch.randn_like(out)
    results = []
    for module, y, s in ((ours, out, final), (ref, ref_out, ref_final)):
        loss = (y * weights).sum() + sum((part * part.flip(-1)).sum() for part in as_tuple(s))
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append((y, as_tuple(s), grads))
    return results


@pytest.mark.parametrize("ours_cls, ref_cls", PAIRS, ids=["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
def test_variable_lengths_equal_torch_packed_float64(ours_cls, ref_cls, bidirectional, num_layers, batch_first,
                                                     no_packing):
    ours, ref = pair(ours_cls, ref_cls, torch.float64, num_layers=num_layers, bidirectional=bidirectional,
                     batch_first=batch_first)
    shape = (B, T, IN) if batch_first else (T, B, IN)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    rows = num_layers * (2 if bidirectional else 1)
    h0 = torch.randn(rows, B, HID, dtype=torch.float64)
    state = (h0, torch.randn_like(h0)) if ours_cls is LSTM else h0
    (out, final, grads), (ref_out, ref_final, ref_grads) = run_both(ours, ref, x, LENGTHS, state, batch_first)
    assert ours.last_engine == "fused"
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    padded = torch.arange(T)[None, :] >= LENGTHS[:, None]  # (B, T)
    assert (out if batch_first else out.transpose(0, 1))[padded].abs().max() == 0  # exactly 0 at padding
    assert len(final) == len(ref_final)
    for ours_part, ref_part in zip(final, ref_final):
        torch.testing.assert_close(ours_part, ref_part, rtol=1e-10, atol=1e-12)
    names = ["input"] + [n for n, _ in ours.named_parameters()]
    for name, g, ref_g in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref_g, rtol=1e-9, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("ours_cls, ref_cls", PAIRS[:2], ids=["LSTM", "GRU"])
def test_variable_lengths_equal_torch_packed_float32(ours_cls, ref_cls, no_packing):
    """float32 takes oneDNN's LSTM kernel on CPU; the recomputed final c agrees to rounding."""
    ours, ref = pair(ours_cls, ref_cls, torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, IN, requires_grad=True)
    (out, final, grads), (ref_out, ref_final, ref_grads) = run_both(ours, ref, x, LENGTHS, None, True)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    for ours_part, ref_part in zip(final, ref_final):
        torch.testing.assert_close(ours_part, ref_part, rtol=1e-5, atol=1e-6)
    for g, ref_g in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref_g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_lengths_all_equal_to_T_take_the_plain_path(cls, no_packing):
    """No packing when nothing is padded: the same numbers as a call without lengths, bit for bit."""
    torch.manual_seed(0)
    layer = cls(IN, HID, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, IN)
    out, final = layer(x)
    out_full, final_full = layer(x, lengths=torch.full((B,), T))
    assert torch.equal(out, out_full)
    for a, b in zip(as_tuple(final), as_tuple(final_full)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_non_finite_padding_leaks_into_neither_outputs_nor_gradients(cls, no_packing):
    torch.manual_seed(0)
    layer = cls(IN, HID, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, IN)
    padded = torch.arange(T)[None, :] >= LENGTHS[:, None]
    noisy = x.clone()
    noisy[padded] = float("nan")
    noisy[padded.roll(1, 0) & padded] = float("inf")
    grads = []
    for data in (x, noisy):
        layer.zero_grad()
        data = data.clone().requires_grad_()
        out, final = layer(data, lengths=LENGTHS)
        (out.sum() + sum(p.sum() for p in as_tuple(final))).backward()
        grads.append([data.grad] + [p.grad.clone() for p in layer.parameters()])
        assert torch.isfinite(out).all()
    assert (grads[1][0][padded] == 0).all()
    for clean, dirty in zip(grads[0], grads[1]):
        torch.testing.assert_close(dirty, clean, rtol=0, atol=0)


def test_training_dropout_between_layers_keeps_padding_zero_and_lengths_respected(no_packing):
    """In training the between-layer dropout (plain or variational) runs on the padded batch; a sequence's
    results do not depend on the padding."""
    for variational in (False, True):
        layer = LSTM(IN, HID, num_layers=2, bidirectional=True, batch_first=True, dropout=0.5,
                     variational_dropout=variational).train()
        x = torch.randn(B, T, IN)
        noisy = x.clone()
        padded = torch.arange(T)[None, :] >= LENGTHS[:, None]
        noisy[padded] = 1e3
        torch.manual_seed(1)
        out, (h, c) = layer(x, lengths=LENGTHS)
        torch.manual_seed(1)
        out2, (h2, c2) = layer(noisy, lengths=LENGTHS)
        assert out[padded].abs().max() == 0
        assert torch.equal(out, out2) and torch.equal(h, h2) and torch.equal(c, c2)


def modelled_cost(lengths: list[int], segments: list[tuple[int, int]], redo: float) -> float:
    """The cost :func:`layers._segments` minimises, written out for ``(start, stop)`` segments."""
    return sum((stop - start) * (sum(n > start for n in lengths) + layers._STEP_COST) + layers._CALL_COST
               + redo * sum(n - start for n in lengths if start < n < stop) for start, stop in segments)


def brute_force_cost(lengths: list[int], redo: float) -> float:
    """The least modelled cost over every set of boundaries drawn from the lengths (the last one included)."""
    distinct = sorted(set(lengths))
    best = float("inf")
    for mask in range(2 ** (len(distinct) - 1)):
        stops = [d for i, d in enumerate(distinct[:-1]) if mask >> i & 1] + [distinct[-1]]
        best = min(best, modelled_cost(lengths, list(zip([0, *stops[:-1]], stops)), redo))
    return best


def test_segments_tile_the_lengths_with_the_rows_alive_at_the_cheapest_modelled_cost():
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = int(torch.randint(1, 12, (1,), generator=generator))
        steps = int(torch.randint(1, 80, (1,), generator=generator))
        lengths = torch.randint(1, steps + 1, (batch,), generator=generator).sort(descending=True).values.tolist()
        for redo in (0, 1, 3):
            segments = layers._segments(lengths, redo)
            assert [start for start, _, _ in segments] == [0] + [stop for _, stop, _ in segments[:-1]]
            assert segments[-1][1] == lengths[0]
            assert all(rows == sum(n > start for n in lengths) for start, _, rows in segments)
            spans = [(start, stop) for start, stop, _ in segments]
            assert modelled_cost(lengths, spans, redo) == brute_force_cost(lengths, redo)
    assert layers._segments([5, 5, 5]) == [(0, 5, 3)]
    uniform = torch.randint(1, 65, (32,), generator=generator).sort(descending=True).values.tolist()
    segments = layers._segments(uniform)
    cells = sum((stop - start) * rows for start, stop, rows in segments)
    assert 1 < len(segments) <= 8 and cells < 1.4 * sum(uniform)  # one call would run 32 * 64 cells


def test_segments_consider_at_most_max_boundaries_candidates():
    lengths = list(range(200, 0, -1))
    segments = layers._segments(lengths)
    assert len(segments) <= layers._MAX_BOUNDARIES and segments[-1][1] == 200


LENGTH_CASES = {
    "all equal": (9, [6, 6, 6, 6]),
    "one long many short": (9, [2, 2, 9, 1, 2, 2, 1, 2]),
    "uniform": (12, [12, 3, 7, 1, 12, 5, 9, 2, 7, 4]),
    "length 1": (6, [1, 1, 6, 1]),
    "B=1": (7, [4]),
}
POLICIES = {  # cost-model settings: the default, one call per distinct length, few segments with rows ending inside
    "default": {},
    "per length": {"_CALL_COST": 0, "_STEP_COST": 0},
    "coarse": {"_CALL_COST": 0, "_STEP_COST": 0, "_MAX_BOUNDARIES": 2},
}


@pytest.mark.parametrize("ours_cls, ref_cls", PAIRS[:2], ids=["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("case", list(LENGTH_CASES))
@pytest.mark.parametrize("policy", list(POLICIES))
def test_segmented_runs_equal_torch_packed_float64(ours_cls, ref_cls, bidirectional, num_layers, case, policy,
                                                   monkeypatch, no_packing):
    for name, value in POLICIES[policy].items():
        monkeypatch.setattr(layers, name, value)
    steps, lengths = LENGTH_CASES[case]
    lengths = torch.tensor(lengths)
    sorted_lengths = lengths.sort(descending=True).values.tolist()
    if policy != "default" and len(set(sorted_lengths)) > 1:
        assert len(layers._segments(sorted_lengths)) > 1  # the case really runs in several segments
    ours, ref = pair(ours_cls, ref_cls, torch.float64, num_layers=num_layers, bidirectional=bidirectional,
                     batch_first=True)
    x = torch.randn(len(lengths), steps, IN, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(num_layers * (2 if bidirectional else 1), len(lengths), HID, dtype=torch.float64)
    state = (h0, torch.randn_like(h0)) if ours_cls is LSTM else h0
    (out, final, grads), (ref_out, ref_final, ref_grads) = run_both(ours, ref, x, lengths, state, True)
    assert ours.last_engine == "fused"
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    padded = torch.arange(steps)[None, :] >= lengths[:, None]  # (B, T)
    assert not padded.any() or out[padded].abs().max() == 0
    for ours_part, ref_part in zip(final, ref_final, strict=True):
        torch.testing.assert_close(ours_part, ref_part, rtol=1e-10, atol=1e-12)
    names = ["input"] + [n for n, _ in ours.named_parameters()]
    for name, g, ref_g in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref_g, rtol=1e-9, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("ours_cls, ref_cls", PAIRS[:2], ids=["LSTM", "GRU"])
def test_segmented_runs_equal_torch_packed_float32(ours_cls, ref_cls, monkeypatch, no_packing):
    """Uniform lengths in [1, 40] over 24 rows, in the segments of the default cost model."""
    lengths = torch.randint(1, 41, (24,), generator=torch.Generator().manual_seed(3))
    assert len(layers._segments(lengths.sort(descending=True).values.tolist())) > 1
    ours, ref = pair(ours_cls, ref_cls, torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(24, 40, IN, requires_grad=True)
    (out, final, grads), (ref_out, ref_final, ref_grads) = run_both(ours, ref, x, lengths, None, True)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    for ours_part, ref_part in zip(final, ref_final, strict=True):
        torch.testing.assert_close(ours_part, ref_part, rtol=1e-5, atol=1e-6)
    for g, ref_g in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref_g, rtol=1e-4, atol=1e-5)
