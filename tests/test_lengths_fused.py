"""Variable lengths on the fused engine (CPU): plain kernels on the padded batch, equal to torch's packed path.

The layers no longer pack a variable-length batch on CPU (torch's packed kernels are a per-step loop): the
forward direction runs the plain kernel on the padded batch, the reverse one on each sequence reversed within
its length, and the LSTM's final cell state is recomputed for the sequences shorter than T. These tests pin
that the results are torch's packed results (outputs, zeros at padding, final states, gradients) and that no
packing happens.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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
    ref_out = pad_packed_sequence(ref_packed, batch_first=batch_first, total_length=T)[0]
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
