"""Weight dropout, locked (variational) dropout and their train/eval behaviour in the layers."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rn
from rnnkit.nn.dropout import locked_dropout_mask


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hh_names(num_layers, bidirectional):
    return [f"weight_hh_l{k}{s}" for k in range(num_layers) for s in ("", "_reverse")[: 1 + bidirectional]]


@pytest.mark.parametrize("engine", ["fused", "generic"])
def test_weight_dropout_equals_torch_lstm_with_the_dropped_weights(engine):
    p, seed = 0.4, 11
    torch.manual_seed(0)
    ours = rn.LSTM(3, 4, 2, batch_first=True, bidirectional=True, weight_dropout=p, engine=engine).double()
    ref = torch.nn.LSTM(3, 4, 2, batch_first=True, bidirectional=True).double()
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 6, 1])
    names = _hh_names(2, True)

    torch.manual_seed(seed)
    out, (h, c) = ours(x, lengths=lengths)
    (out.sum() + h.sum()).backward()

    # the same masks: documented draw order weight_hh_l0, _l0_reverse, _l1, _l1_reverse, by F.dropout
    torch.manual_seed(seed)
    dropped = {n: F.dropout(getattr(ours, n).detach(), p, True) for n in names}
    ref.load_state_dict({**ours.state_dict(), **dropped})
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref_out, (ref_h, ref_c) = ref(packed)
    ref_out = pad_packed_sequence(ref_out, batch_first=True, total_length=6)[0]
    (ref_out.sum() + ref_h.sum()).backward()
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, ref_c, rtol=0, atol=1e-12)
    assert ours.last_engine == engine
    for n in names:
        kept = (dropped[n] != 0).double() / (1 - p)
        assert 0 < int((dropped[n] == 0).sum()) < dropped[n].numel()
        # the raw parameter gets the chain-rule gradient through the mask
        torch.testing.assert_close(getattr(ours, n).grad, getattr(ref, n).grad * kept, rtol=0, atol=1e-12)
    # other parameters are used undropped
    torch.testing.assert_close(ours.weight_ih_l1.grad, ref.weight_ih_l1.grad, rtol=0, atol=1e-12)
    # the registered parameters stay the raw weights: state_dict unchanged, torch-compatible
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU, rn.RNN])
def test_weight_dropout_is_fresh_in_train_and_off_in_eval(cls):
    torch.manual_seed(1)
    layer = cls(3, 4, 2, weight_dropout=0.5)
    plain = cls(3, 4, 2)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    a, _ = layer(x)
    b, _ = layer(x)
    assert not torch.allclose(a, b)  # a new mask each forward
    layer.eval()
    for engine in ("fused", "generic"):
        layer.engine = engine
        torch.testing.assert_close(layer(x)[0], plain(x)[0], rtol=0, atol=1e-6)


def test_locked_dropout_mask_is_constant_over_time_and_differs_across_sequences():
    torch.manual_seed(2)
    drop = rn.LockedDropout(0.5)
    x = torch.ones(64, 9, 5)
    y = drop(x)
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    assert torch.equal(y, y[:, :1].expand_as(y))  # same mask at every step
    assert len({tuple(row.tolist()) for row in y[:, 0]}) > 1  # sequences get different masks
    assert 0.3 < float((y == 0).double().mean()) < 0.7
    drop.eval()
    assert torch.equal(drop(x), x)
    time_major = rn.LockedDropout(0.5, batch_first=False)
    y = time_major(torch.ones(9, 64, 5))  # (T, B, F)
    assert torch.equal(y, y[:1].expand_as(y))
    with pytest.raises(ValueError, match="p must be a probability"):
        rn.LockedDropout(1.5)
    with pytest.raises(ValueError, match=r"expected a 3-D input \(B, T, F\), got shape \(4, 5\)"):
        rn.locked_dropout(torch.ones(4, 5), 0.5)


@pytest.mark.parametrize("engine", ["fused", "generic"])
def test_output_dropout_is_one_mask_per_sequence(engine):
    torch.manual_seed(3)
    layer = rn.GRU(3, 8, batch_first=True, output_dropout=0.5, engine=engine).double()
    x = torch.randn(6, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 7, 2, 6])
    out, h = layer(x, lengths=lengths)
    layer.eval()
    clean, clean_h = layer(x, lengths=lengths)
    torch.testing.assert_close(h, clean_h, rtol=0, atol=1e-12)  # the state is not dropped
    for b, n in enumerate(lengths.tolist()):
        ratio = out[b, :n] / clean[b, :n]  # (n, H): 0 or 2, the same at every step
        assert bool(((ratio - 0).abs() < 1e-9).logical_or((ratio - 2).abs() < 1e-9).all())
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=0, atol=1e-9)
        assert bool((out[b, n:] == 0).all())
    assert len({tuple((out[b, 0] == 0).tolist()) for b in range(6)}) > 1


def test_input_and_between_layer_locked_dropout_equal_manual_composition():
    p_in, p_mid, p_out, seed = 0.3, 0.5, 0.2, 5
    torch.manual_seed(4)
    layer = rn.LSTM(
        3, 4, 2, batch_first=True, bidirectional=True, dropout=p_mid, variational_dropout=True,
        input_dropout=p_in, output_dropout=p_out,
    ).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 4, 2])  # sorted, so packed order is batch order
    torch.manual_seed(seed)
    out, (h, c) = layer(x, lengths=lengths)
    assert layer.last_engine == "fused"

    layers = []
    for k in range(2):
        single = torch.nn.LSTM(3 if k == 0 else 8, 4, batch_first=True, bidirectional=True).double()
        single.load_state_dict({n.replace(f"_l{k}", "_l0"): v for n, v in layer.state_dict().items() if f"_l{k}" in n})
        layers.append(single)
    torch.manual_seed(seed)
    m_in = locked_dropout_mask(3, 3, p_in, dtype=torch.float64)  # (B, F), one per sequence
    m_mid = locked_dropout_mask(3, 8, p_mid, dtype=torch.float64)
    m_out = locked_dropout_mask(3, 8, p_out, dtype=torch.float64)
    y = x * m_in[:, None]
    states = []
    for k, single in enumerate(layers):
        packed, state = single(pack_padded_sequence(y, lengths, batch_first=True))
        y = pad_packed_sequence(packed, batch_first=True, total_length=5)[0]
        states.append(state)
        y = y * (m_mid if k == 0 else m_out)[:, None]
    torch.testing.assert_close(out, y, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, torch.cat([s[0] for s in states]), rtol=0, atol=1e-12)

    # the generic engine draws the same masks in the same order
    layer.engine = "generic"
    torch.manual_seed(seed)
    out_generic, _ = layer(x, lengths=lengths)
    assert layer.last_engine == "generic"
    torch.testing.assert_close(out_generic, out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ["fused", "generic"])
def test_all_dropouts_active_in_train_and_identity_in_eval(engine):
    torch.manual_seed(6)
    options = {"dropout": 0.3, "weight_dropout": 0.3, "input_dropout": 0.3, "output_dropout": 0.3}
    for variational in (False, True):
        layer = rn.LSTM(3, 4, 3, batch_first=True, variational_dropout=variational, engine=engine, **options)
        plain = rn.LSTM(3, 4, 3, batch_first=True)
        plain.load_state_dict(layer.state_dict())
        x = torch.randn(2, 5, 3)
        lengths = torch.tensor([5, 3])
        a, _ = layer(x, lengths=lengths)
        b, _ = layer(x, lengths=lengths)
        assert not torch.allclose(a, b)
        assert bool((a[1, 3:] == 0).all())
        layer.eval()
        torch.testing.assert_close(layer(x, lengths=lengths)[0], plain(x, lengths=lengths)[0], rtol=0, atol=1e-6)


def test_layer_norm_layer_with_regularisers_trains():
    torch.manual_seed(7)
    layer = rn.GRU(3, 4, 2, batch_first=True, layer_norm=True, weight_dropout=0.2, dropout=0.2,
                   variational_dropout=True, input_dropout=0.1)
    out, h = layer(torch.randn(2, 5, 3), lengths=torch.tensor([2, 5]))
    out.sum().backward()
    assert layer.last_engine == "generic"
    for name, p in layer.named_parameters():
        assert p.grad is not None and bool(p.grad.isfinite().all()) and bool(p.grad.abs().sum() > 0), name
