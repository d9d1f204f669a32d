"""rnnkit.nn.RNN/LSTM/GRU as drop-in torch.nn layers: constructor, state_dict, packing, engines, properties, errors.

The exactness grid against torch.nn lives in test_recurrent.py.
"""

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit.nn as rn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PAIRS = [
    (rn.LSTM, torch.nn.LSTM, {}),
    (rn.GRU, torch.nn.GRU, {}),
    (rn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    (rn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
]


def _parts(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("ours_cls,ref_cls,kwargs", PAIRS)
def test_constructor_defaults_names_init_and_state_dict_match_torch(ours_cls, ref_cls, kwargs):
    for args in [(3, 5), (3, 5, 2), (3, 5, 2, False, True, 0.25, True)]:
        if ours_cls is rn.RNN and len(args) > 3:  # torch.nn.RNN takes nonlinearity fourth
            args = (*args[:3], kwargs["nonlinearity"], *args[3:])
            kw = {}
        else:
            kw = kwargs
        torch.manual_seed(0)
        ours = ours_cls(*args, **kw)
        torch.manual_seed(0)
        ref = ref_cls(*args, **kw)
        for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
            assert getattr(ours, attr) == getattr(ref, attr), attr
        ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
        assert list(ours_sd) == list(ref_sd)
        for key in ref_sd:  # same seeded initial values, so the same shapes
            assert torch.equal(ours_sd[key], ref_sd[key]), key
        # round trip both ways, strict
        other = ref_cls(*args, **kw)
        other.load_state_dict(ours_sd)
        ours.load_state_dict(other.state_dict())
    assert rn.LSTM(3, 5).batch_first is False  # torch's default, not the task models'


def test_repr_shows_extra_options():
    layer = rn.LSTM(3, 5, 2, weight_dropout=0.3, variational_dropout=True, dropout=0.2)
    text = repr(layer)
    assert "LSTM(3, 5, num_layers=2, dropout=0.2, weight_dropout=0.3, variational_dropout=True)" in text
    assert "nonlinearity='relu'" in repr(rn.RNN(2, 3, nonlinearity="relu"))


@pytest.mark.parametrize("engine", ["fused", "generic"])
def test_packed_sequence_in_packed_sequence_out(engine):
    torch.manual_seed(1)
    ref = torch.nn.LSTM(3, 4, 2, bidirectional=True).double()
    ours = rn.LSTM(3, 4, 2, bidirectional=True, engine=engine).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    for enforce_sorted, lengths in ((False, torch.tensor([2, 6, 4])), (True, torch.tensor([6, 4, 2]))):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        out, (h, c) = ours(packed)
        ref_out, (ref_h, ref_c) = ref(packed)
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        torch.testing.assert_close(out.data, ref_out.data, rtol=0, atol=1e-12)
        torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-12)
        torch.testing.assert_close(c, ref_c, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="carries its lengths"):
        ours(packed, lengths=lengths)


@pytest.mark.parametrize("engine", ["fused", "generic"])
@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU])
def test_padding_content_and_batch_neighbours_change_nothing(engine, cls):
    torch.manual_seed(2)
    layer = cls(3, 4, 2, batch_first=True, bidirectional=True, engine=engine).double()
    lengths = torch.tensor([5, 2, 7, 1])
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    out, state = layer(x, lengths=lengths)
    noisy = x.clone()
    for b, n in enumerate(lengths.tolist()):
        noisy[b, n:] = 100.0
    noisy = torch.cat([noisy, torch.full((4, 3, 3), -50.0, dtype=torch.float64)], 1)  # extra padding: T = 10
    out2, state2 = layer(noisy, lengths=lengths)
    torch.testing.assert_close(out2[:, :7], out, rtol=0, atol=1e-12)
    assert bool((out2[:, 7:] == 0).all())
    torch.testing.assert_close(state2, state, rtol=0, atol=1e-12)
    for b, n in enumerate(lengths.tolist()):  # each sequence alone, unpadded
        alone, alone_state = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1, :n], alone, rtol=0, atol=1e-12)
        for s, a in zip(_parts(state), _parts(alone_state)):
            torch.testing.assert_close(s[:, b : b + 1], a, rtol=0, atol=1e-12)


def test_reverse_direction_equals_flipped_sequence():
    torch.manual_seed(3)
    bi = rn.GRU(3, 4, batch_first=True, bidirectional=True).double()
    backward = rn.GRU(3, 4, batch_first=True).double()
    backward.load_state_dict({k.replace("_reverse", ""): v for k, v in bi.state_dict().items() if "reverse" in k})
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 6])
    out, h = bi(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        rev, rev_h = backward(x[b : b + 1, :n].flip(1))
        torch.testing.assert_close(out[b, :n, 4:], rev[0].flip(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(h[1, b], rev_h[0, 0], rtol=0, atol=1e-12)


ENGINE_CASES = [
    ({}, "fused"),
    ({"engine": "generic"}, "generic"),
    ({"engine": "fused"}, "fused"),
    ({"weight_dropout": 0.3}, "fused"),
    ({"input_dropout": 0.2, "output_dropout": 0.2}, "fused"),
    ({"dropout": 0.3, "variational_dropout": True}, "fused"),
    ({"dropout": 0.3}, "fused"),
    ({"layer_norm": True}, "generic"),
    ({"layer_norm": True, "weight_dropout": 0.3, "dropout": 0.3, "variational_dropout": True}, "generic"),
    ({"weight_dropout": 0.3, "engine": "generic"}, "generic"),
]


@pytest.mark.parametrize("options,engine", ENGINE_CASES)
@pytest.mark.parametrize("cls", [rn.LSTM, rn.GRU])
def test_last_engine_per_option_set(cls, options, engine):
    layer = cls(3, 4, 2, batch_first=True, **options)
    assert layer.last_engine is None
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        out, _ = layer(torch.randn(2, 5, 3), lengths=torch.tensor([5, 3]))
        assert layer.last_engine == engine
        assert out.shape == (2, 5, 4)


def test_rnn_engines_and_layer_norm_restriction():
    layer = rn.RNN(3, 4, nonlinearity="relu", engine="generic", weight_dropout=0.2)
    layer(torch.randn(5, 2, 3))
    assert layer.last_engine == "generic"
    with pytest.raises(ValueError, match="layer_norm is available for LSTM and GRU"):
        rn.RNN(3, 4, layer_norm=True)


@pytest.mark.parametrize("cls,cell_cls", [(rn.LSTM, rn.LayerNormLSTMCell), (rn.GRU, rn.LayerNormGRUCell)])
def test_layer_norm_layer_equals_recurrent_of_layer_norm_cells(cls, cell_cls):
    torch.manual_seed(4)
    layer = cls(3, 4, 2, batch_first=True, bidirectional=True, layer_norm=True).double()
    names = [n for n, _ in layer.named_parameters()]
    assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert "ln_ih_weight_l1_reverse" in names and "ln_hh_bias_l0" in names
    assert ("ln_cell_weight_l0" in names) == (cls is rn.LSTM)
    assert torch.equal(layer.ln_hh_weight_l1, torch.ones_like(layer.ln_hh_weight_l1))
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    runner = rn.Recurrent(cell_cls, 3, 4, 2, bidirectional=True).double()
    mapped = {}
    for k, cell in enumerate(runner.cells):
        suffix = f"_l{k // 2}" + ("_reverse" if k % 2 else "")
        for name, _ in cell.named_parameters():
            mapped[f"cells.{k}.{name}"] = getattr(layer, name + suffix)
    runner.load_state_dict(mapped)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 4])
    out, state = layer(x, lengths=lengths)
    ref_out, ref_state = runner(x, lengths=lengths)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-12)
    # a layer-norm state_dict carries torch's keys plus the ln_* keys
    sd = layer.state_dict()
    plain = torch.nn.LSTM(3, 4, 2, bidirectional=True) if cls is rn.LSTM else torch.nn.GRU(3, 4, 2, bidirectional=True)
    plain.load_state_dict({k: v for k, v in sd.items() if not k.startswith("ln_")})


def test_layer_moves_dtype_and_copies_with_generic_engine():
    layer = rn.LSTM(3, 4, layer_norm=True)
    x = torch.randn(5, 2, 3)
    out32, _ = layer(x)
    copied = copy.deepcopy(layer).double()
    for (name, a), b in zip(layer.named_parameters(), copied.parameters()):
        assert b.dtype == torch.float64 and b.data_ptr() != a.data_ptr(), name
        assert torch.equal(b, a.double()), name
    out, (h, c) = copied(x.double())
    assert out.dtype == h.dtype == c.dtype == torch.float64
    torch.testing.assert_close(out, out32.double(), rtol=0, atol=1e-6)  # the same function, in float64
    out.sum().backward()
    for name, p in copied.named_parameters():  # every weight, the LN gains and shifts too, gets a gradient
        assert p.grad.dtype == torch.float64 and bool(p.grad.abs().sum() > 0), name
    assert layer.weight_hh_l0.grad is None  # the original is untouched


def test_bad_input_raises_with_expected_and_actual_shapes():
    lstm = rn.LSTM(3, 4, 2, batch_first=True)
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"expected a 3-D input \(B, T, H_in\) or an unbatched 2-D input \(T, H_in\) "
                       r"with H_in=3, got shape \(1, 5, 3, 1\)"):
        lstm(torch.randn(1, 5, 3, 1))
    with pytest.raises(ValueError, match=r"expected input \(B, T, H_in\) with H_in=3, got shape \(2, 5, 7\)"):
        lstm(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"expected input \(T, B, H_in\) with H_in=3, got shape \(2, 5, 7\)"):
        rn.GRU(3, 4)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"expected lengths of shape \(2,\), one per sequence, got \(3,\)"):
        lstm(x, lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"expected every length in \[1, T=5\], got min 0 and max 4"):
        lstm(x, lengths=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"expected every length in \[1, T=5\], got min 2 and max 6"):
        lstm(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="expected integer lengths, got dtype torch.float32"):
        lstm(x, lengths=torch.tensor([2.0, 3.0]))
    h = torch.zeros(2, 2, 4)
    with pytest.raises(ValueError, match=r"expected state c of shape \(2, 2, 4\) .* got \(2, 3, 4\)"):
        lstm(x, (h, torch.zeros(2, 3, 4)))  # wrong batch size in the state
    with pytest.raises(ValueError, match=r"expected state h of shape \(2, 2, 4\) .* got \(1, 2, 4\)"):
        lstm(x, (torch.zeros(1, 2, 4), h))
    with pytest.raises(ValueError, match=r"expected state as a pair \(h, c\), got Tensor"):
        lstm(x, h)
    with pytest.raises(ValueError, match=r"expected state h of shape \(4, 2, 4\) .* got \(2, 2, 4\)"):
        rn.GRU(3, 4, 2, batch_first=True, bidirectional=True)(x, h)
    with pytest.raises(ValueError, match=r"expected at least one time step, got \(2, 0, 3\)"):
        lstm(torch.randn(2, 0, 3))


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="engine must be one of"):
        rn.LSTM(3, 4, engine="cudnn")
    with pytest.raises(ValueError, match="layer_norm=True needs the generic engine"):
        rn.GRU(3, 4, layer_norm=True, engine="fused")
    with pytest.raises(ValueError, match=r"weight_dropout must be a probability in \[0, 1\), got 1.0"):
        rn.LSTM(3, 4, weight_dropout=1.0)
    with pytest.raises(ValueError, match="input_dropout must be a probability"):
        rn.LSTM(3, 4, input_dropout=-0.1)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        rn.RNN(3, 4, nonlinearity="gelu")


def test_variational_layer_flattens_one_cudnn_buffer_per_layer(monkeypatch):
    # With locked dropout between layers the fused kernels run one layer at a time; on GPU each layer's
    # weights must then be a cuDNN buffer of their own (a later layer's weights part-way into a whole-stack
    # buffer make cuDNN copy them at every call). Off CUDA flattening is a no-op, so the cuDNN calls are
    # recorded here instead: one per layer, with that layer's weights, input size and both directions.
    calls = []

    def record(weights, arrays, input_size, mode, hidden, proj, layers, batch_first, bidirectional):  # noqa: ANN001, ANN202
        calls.append(([id(w) for w in weights], arrays, input_size, mode, hidden, proj, layers, bidirectional))

    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", record)
    monkeypatch.setattr(rn.layers, "_cudnn_flattenable", lambda weights, names: True)
    import torch.backends.cudnn.rnn as cudnn_rnn

    monkeypatch.setattr(cudnn_rnn, "get_cudnn_mode", lambda mode: mode)  # needs cuDNN's bindings otherwise
    layer = rn.LSTM(3, 5, 3, bidirectional=True, dropout=0.2, variational_dropout=True)
    assert layer.runs_per_layer
    calls.clear()
    layer.flatten_parameters()
    params = dict(layer.named_parameters())
    want = []
    for index, size in enumerate((3, 10, 10)):
        names = [f"{kind}_l{index}{suffix}" for suffix in ("", "_reverse")
                 for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        want.append(([id(params[n]) for n in names], 4, size, "LSTM", 5, 0, 1, True))
    assert calls == want
    for kwargs in ({"dropout": 0.2}, {"dropout": 0.0, "variational_dropout": True}):  # one whole-stack call
        other = rn.LSTM(3, 5, 3, bidirectional=True, **kwargs)
        assert not other.runs_per_layer
        monkeypatch.setattr(torch.nn.RNNBase, "flatten_parameters", lambda self: calls.append("torch.nn"))
        calls.clear()
        other.flatten_parameters()
        assert calls == ["torch.nn"]


def test_variational_layer_runs_its_kernels_per_layer_in_training(monkeypatch):
    # in training one kernel call per layer (the locked mask goes between them); in evaluation on CPU one call
    # for the stack, with the same outputs as the per-layer calls without dropout
    counted = []
    kernel = rn.layers._KERNELS["GRU"]
    monkeypatch.setitem(rn.layers._KERNELS, "GRU", lambda *args: counted.append(1) or kernel(*args))
    torch.manual_seed(11)
    layer = rn.GRU(4, 6, 3, batch_first=True, dropout=0.3, variational_dropout=True)
    x = torch.randn(2, 5, 4)
    layer.train()
    layer(x)
    assert len(counted) == 3
    counted.clear()
    layer.eval()
    whole, _ = layer(x)
    assert len(counted) == 1
    layer.train()
    layer.dropout = 0.0  # per-layer calls without dropout: the same outputs as the stack's call
    monkeypatch.setattr(type(layer), "runs_per_layer", property(lambda self: True))
    counted.clear()
    per_layer, _ = layer(x)
    assert len(counted) == 3
    torch.testing.assert_close(per_layer, whole, rtol=1e-6, atol=1e-6)
