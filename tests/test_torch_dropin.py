"""rnnkit.nn as a drop-in for torch.nn: PyTorch's own RNN tests (test_nn.py / test_modules RNN cases) adapted.

Each case runs the torch.nn layer or cell and rnnkit's with copied weights (state dicts load both ways) and
compares: unbatched input, ``proj_size``, the ``hx=`` keyword, a batch of zero sequences, the exception types
torch raises for bad shapes, and tracing with ``torch.export`` / ``torch.compile``.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rn
from rnnkit.errors import ShapeError

LAYERS = [
    (rn.LSTM, torch.nn.LSTM, {}),
    (rn.GRU, torch.nn.GRU, {}),
    (rn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
]
CELLS = [(rn.LSTMCell, torch.nn.LSTMCell), (rn.GRUCell, torch.nn.GRUCell), (rn.RNNCell, torch.nn.RNNCell)]


def _pair(ours_cls, ref_cls, args, kwargs, engine="auto"):
    torch.manual_seed(0)
    ref = ref_cls(*args, **kwargs).double()
    ours = ours_cls(*args, **kwargs, engine=engine).double()
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _state(cls, rows, batch, hidden, proj=0):
    shape = (rows, hidden) if batch is None else (rows, batch, hidden)
    h = torch.randn(*shape[:-1], proj or hidden, dtype=torch.float64)
    return (h, torch.randn(shape, dtype=torch.float64)) if cls is rn.LSTM else h


def _close(ours, ref):
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), ref if isinstance(ref, tuple) else (ref,)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["fused", "generic"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("ours_cls,ref_cls,kwargs", LAYERS)
def test_unbatched_2d_input_matches_torch(ours_cls, ref_cls, kwargs, batch_first, engine):
    # test_nn.py test_RNN_input_size / test_modules' unbatched RNN inputs: (T, H_in) and a (L*D, H) state
    ours, ref = _pair(ours_cls, ref_cls, (3, 4, 2), {**kwargs, "bidirectional": True, "batch_first": batch_first},
                      engine)
    x = torch.randn(5, 3, dtype=torch.float64)
    out, state = ours(x)
    ref_out, ref_state = ref(x)
    assert out.shape == (5, 8)
    _close(out, ref_out)
    _close(state, ref_state)
    h0 = _state(ours_cls, 4, None, 4)
    out, state = ours(x, h0)
    ref_out, ref_state = ref(x, h0)
    _close(out, ref_out)
    _close(state, ref_state)
    # torch: "For unbatched 2-D input, hx should also be 2-D": a RuntimeError, ours a ShapeError (both)
    batched = _state(ours_cls, 4, 1, 4)
    with pytest.raises(RuntimeError):
        ref(x, batched)
    with pytest.raises(RuntimeError, match=r"for unbatched 2-D input \(T, H_in\), expected a 2-D state"):
        ours(x, batched)


@pytest.mark.parametrize("ours_cls,ref_cls", CELLS)
def test_unbatched_1d_input_to_cells_matches_torch(ours_cls, ref_cls):
    torch.manual_seed(0)
    ref = ref_cls(3, 4).double()
    ours = ours_cls(3, 4).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, dtype=torch.float64)
    lstm = ours_cls is rn.LSTMCell
    h0 = (torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)) if lstm else torch.randn(
        4, dtype=torch.float64)
    for state in (None, h0):
        out, final = ours(x, state)
        expected = ref(x, state)  # torch's LSTMCell returns (h, c), the others h
        assert out.shape == (4,)
        _close(final, expected)
        _close(out, expected[0] if lstm else expected)
    with pytest.raises(RuntimeError, match=r"for unbatched 1-D input \(H_in,\), expected a state of 1-D tensors"):
        ours(x, tuple(p.unsqueeze(0) for p in h0) if lstm else h0.unsqueeze(0))


def test_unbatched_input_to_recurrent_equals_a_batch_of_one():
    torch.manual_seed(0)
    rnn = rn.Recurrent(rn.LSTMCell, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3)
    h0 = (torch.randn(4, 4), torch.randn(4, 4))
    out, (h, c) = rnn(x, h0)
    ref_out, (ref_h, ref_c) = rnn(x.unsqueeze(0), tuple(p.unsqueeze(1) for p in h0))
    assert out.shape == (5, 8) and h.shape == (4, 4) and c.shape == (4, 4)
    torch.testing.assert_close(out, ref_out[0], rtol=0, atol=0)
    torch.testing.assert_close((h, c), (ref_h[:, 0], ref_c[:, 0]), rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_proj_size_matches_torch(bidirectional):
    # test_nn.py test_LSTM_proj / test_rnn_proj: h has proj_size features, c hidden_size, weight_hr_l{k}
    ours, ref = _pair(rn.LSTM, torch.nn.LSTM, (3, 6, 2),
                      {"batch_first": True, "bidirectional": bidirectional, "proj_size": 4})
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in ref.named_parameters()] and "weight_hr_l1" in names
    assert ours.weight_hr_l0.shape == (4, 6)
    rows = 4 if bidirectional else 2
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    h0 = _state(rn.LSTM, rows, 3, 6, proj=4)
    out, (h, c) = ours(x, h0)
    ref_out, (ref_h, ref_c) = ref(x, h0)
    assert out.shape == (3, 5, (2 if bidirectional else 1) * 4) and h.shape == (rows, 3, 4) and c.shape == (rows, 3, 6)
    _close((out, h, c), (ref_out, ref_h, ref_c))
    lengths = torch.tensor([5, 2, 4])
    out, (h, c) = ours(x, h0, lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref_packed, (ref_h, ref_c) = ref(packed, h0)
    _close((out, h, c), (pad_packed_sequence(ref_packed, batch_first=True)[0], ref_h, ref_c))
    _close(ours(x[0])[0], ref(x[0])[0])  # unbatched
    ref.load_state_dict(ours.state_dict())  # and back
    # with every regulariser on (weight dropout on weight_hh, layer-by-layer variational dropout)
    regularised = rn.LSTM(3, 6, 2, batch_first=True, bidirectional=bidirectional, proj_size=4, dropout=0.3,
                          variational_dropout=True, weight_dropout=0.2).double()
    out, (h, c) = regularised(x, lengths=lengths)
    assert out.shape == (3, 5, (2 if bidirectional else 1) * 4) and h.shape == (rows, 3, 4) and c.shape == (rows, 3, 6)
    out.sum().backward()
    assert bool(regularised.weight_hr_l1.grad.abs().sum() > 0)
    with pytest.raises(RuntimeError, match=rf"expected state h of shape \({rows}, 3, 4\)"):
        ours(x, _state(rn.LSTM, rows, 3, 6))  # h with hidden_size features where proj_size is expected


def test_lstm_proj_size_zero_is_no_projection_and_generic_engine_refuses_it():
    ours, ref = _pair(rn.LSTM, torch.nn.LSTM, (3, 4), {"proj_size": 0})
    assert "weight_hr_l0" not in dict(ours.named_parameters())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    _close(ours(x)[0], ref(x)[0])
    message = "proj_size runs on torch's fused LSTM kernel only"
    with pytest.raises(ValueError, match=message):
        rn.LSTM(3, 4, proj_size=2, engine="generic")
    with pytest.raises(ValueError, match=message):
        rn.LSTM(3, 4, proj_size=2, layer_norm=True)
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):  # torch's own check
        rn.LSTM(3, 4, proj_size=4)
    assert "proj_size=2" in repr(rn.LSTM(3, 4, proj_size=2))


@pytest.mark.parametrize("ours_cls,ref_cls,kwargs", LAYERS)
def test_hx_keyword_means_state(ours_cls, ref_cls, kwargs):
    ours, ref = _pair(ours_cls, ref_cls, (3, 4), kwargs)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h0 = _state(ours_cls, 1, 2, 4)
    out, state = ours(x, hx=h0)
    ref_out, ref_state = ref(x, hx=h0)
    _close(out, ref_out)
    _close(state, ref_state)
    with pytest.raises(TypeError, match=f"{ours_cls.__name__}: got the initial state twice, as state and as hx"):
        ours(x, h0, hx=h0)


def test_hx_keyword_for_cells_and_recurrent():
    torch.manual_seed(0)
    ref = torch.nn.GRUCell(3, 4)
    cell = rn.GRUCell(3, 4)
    cell.load_state_dict(ref.state_dict())
    x, h0 = torch.randn(2, 3), torch.randn(2, 4)
    torch.testing.assert_close(cell(x, hx=h0)[1], ref(x, hx=h0))
    with pytest.raises(TypeError, match="GRUCell: got the initial state twice"):
        cell(x, h0, hx=h0)
    rnn = rn.Recurrent(cell)
    h1 = torch.randn(1, 2, 4)
    torch.testing.assert_close(rnn(x.unsqueeze(1), hx=h1)[0], rnn(x.unsqueeze(1), h1)[0], rtol=0, atol=0)
    with pytest.raises(TypeError, match="Recurrent: got the initial state twice"):
        rnn(x.unsqueeze(1), h1, hx=h1)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("ours_cls,ref_cls,kwargs", LAYERS)
def test_zero_batch_returns_empty_output_and_state_as_torch(ours_cls, ref_cls, kwargs, batch_first):
    # test_nn.py test_RNN_input_size_zero / zero-batch module inputs
    ours, ref = _pair(ours_cls, ref_cls, (3, 4, 2), {**kwargs, "bidirectional": True, "batch_first": batch_first})
    x = torch.randn((0, 5, 3) if batch_first else (5, 0, 3), dtype=torch.float64)
    out, state = ours(x)
    ref_out, ref_state = ref(x)
    assert out.shape == ref_out.shape == ((0, 5, 8) if batch_first else (5, 0, 8))
    _close(state, ref_state)
    out, state = ours(x, _state(ours_cls, 4, 0, 4), lengths=torch.zeros(0, dtype=torch.int64))
    assert out.shape == ref_out.shape
    _close(state, ref_state)


def test_zero_batch_through_recurrent():
    rnn = rn.Recurrent(rn.GRUCell, 3, 4, num_layers=2)
    out, h = rnn(torch.randn(0, 5, 3))
    assert out.shape == (0, 5, 4) and h.shape == (2, 0, 4)


def test_shape_errors_are_both_value_and_runtime_errors():
    assert issubclass(ShapeError, ValueError) and issubclass(ShapeError, RuntimeError)
    x = torch.randn(5, 2, 3)
    bad_calls = [
        (torch.nn.LSTM(3, 4), rn.LSTM(3, 4), (torch.randn(5, 2, 7),)),  # wrong H_in
        (torch.nn.GRU(3, 4), rn.GRU(3, 4), (x, torch.zeros(2, 2, 4))),  # wrong state rows
        (torch.nn.RNN(3, 4), rn.RNN(3, 4, engine="generic"), (torch.randn(5, 2, 7),)),
        (torch.nn.LSTMCell(3, 4), rn.LSTMCell(3, 4), (torch.randn(2, 7),)),
        (torch.nn.GRUCell(3, 4), rn.GRUCell(3, 4), (torch.randn(2, 3), torch.zeros(3, 4))),
    ]
    for ref, ours, args in bad_calls:
        with pytest.raises(RuntimeError):
            ref(*args)
        with pytest.raises(RuntimeError):
            ours(*args)
    with pytest.raises(RuntimeError, match="expected lengths of shape"):
        rn.Recurrent(rn.LSTMCell, 3, 4)(x, lengths=torch.tensor([1]))
    with pytest.raises(RuntimeError, match="tags: expected shape"):
        rn.CRF(3)(torch.randn(2, 4, 3), torch.zeros(2, 5, dtype=torch.int64), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("ours_cls", [rn.LSTM, rn.GRU, rn.RNN])
def test_torch_export_matches_eager(ours_cls):
    torch.manual_seed(0)
    layer = ours_cls(3, 4, num_layers=2, batch_first=True, bidirectional=True).eval()
    x, h0 = torch.randn(2, 5, 3), _state(ours_cls, 4, 2, 4)
    h0 = tuple(p.float() for p in h0) if isinstance(h0, tuple) else h0.float()
    program = torch.export.export(layer, (x, h0))
    out, state = program.module()(x, h0)
    ref_out, ref_state = layer(x, h0)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=0)


@pytest.mark.parametrize("ours_cls", [rn.LSTM, rn.GRU, rn.RNN])
def test_torch_compile_matches_eager_with_and_without_lengths(ours_cls):
    # aot_eager runs AOTAutograd, the tracing inductor uses, without needing a C++ compiler
    torch.manual_seed(0)
    layer = ours_cls(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    compiled = torch.compile(layer, backend="aot_eager")
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    for kwargs in ({}, {"lengths": lengths}):
        out, state = compiled(x, **kwargs)
        (out.sum() + sum(p.sum() for p in _parts(state))).backward()
        compiled_grads = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        ref_out, ref_state = layer(x, **kwargs)
        (ref_out.sum() + sum(p.sum() for p in _parts(ref_state))).backward()
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
        torch.testing.assert_close(state, ref_state, rtol=0, atol=0)
        for a, p in zip(compiled_grads, layer.parameters()):  # the compiled graph trains the same
            torch.testing.assert_close(a, p.grad, rtol=1e-6, atol=1e-7)
            assert bool(a.abs().sum() > 0)
        layer.zero_grad()


def _parts(state):
    return state if isinstance(state, tuple) else (state,)


def test_crf_exports_and_compiles():
    torch.manual_seed(0)
    crf = rn.CRF(4)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    em, tags = torch.randn(3, 5, 4), torch.randint(0, 4, (3, 5))
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 1])[:, None]
    expected = crf(em, tags, mask)
    program = torch.export.export(crf, (em, tags, mask))
    torch.testing.assert_close(program.module()(em, tags, mask), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.compile(crf, backend="aot_eager")(em, tags, mask), expected, rtol=0, atol=0)
    assert torch.compile(crf.decode, backend="aot_eager")(em, mask) == crf.decode(em, mask)
    gap = mask.clone()
    gap[1, 4] = True  # a token after padding
    with pytest.raises(RuntimeError, match="padding must be on the right"):  # eager still checks the values
        crf(em, tags, gap)
