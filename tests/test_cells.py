"""Cells: equal to torch.nn cells and to the layer-norm equations written out here; protocol and errors."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

import rnnkit.nn as rn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TORCH_CELLS = [
    (rn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "tanh"}),
    (rn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"}),
    (rn.LSTMCell, torch.nn.LSTMCell, {}),
    (rn.GRUCell, torch.nn.GRUCell, {}),
]


@pytest.mark.parametrize("ours_cls,ref_cls,kwargs", TORCH_CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch_cell(ours_cls, ref_cls, kwargs, bias):
    torch.manual_seed(0)
    ours = ours_cls(5, 7, bias=bias, dtype=torch.float64, **kwargs)
    torch.manual_seed(0)
    ref = ref_cls(5, 7, bias=bias, dtype=torch.float64, **kwargs)
    # same names, shapes and (seeded) initial values as torch.nn
    assert list(ours.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ref.load_state_dict(ours.state_dict())
    ours.load_state_dict(ref.state_dict())

    x = torch.randn(3, 5, dtype=torch.float64)
    h = torch.randn(3, 7, dtype=torch.float64)
    if ours_cls is rn.LSTMCell:
        c = torch.randn(3, 7, dtype=torch.float64)
        y, (h1, c1) = ours(x, (h, c))
        ref_h, ref_c = ref(x, (h, c))
        torch.testing.assert_close(c1, ref_c, rtol=0, atol=1e-12)
    else:
        y, h1 = ours(x, h)
        ref_h = ref(x, h)
    torch.testing.assert_close(h1, ref_h, rtol=0, atol=1e-12)
    assert y is h1
    # default state is zeros
    y0, _ = ours(x)
    ref0 = ref(x)
    torch.testing.assert_close(y0, ref0[0] if isinstance(ref0, tuple) else ref0, rtol=0, atol=1e-12)


def _ln(a, weight, bias, eps=1e-5):
    mean = a.mean(-1, keepdim=True)
    var = ((a - mean) ** 2).mean(-1, keepdim=True)
    return (a - mean) / torch.sqrt(var + eps) * weight + bias


def _randomise(cell):
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def _ln_lstm_step(cell, x, h, c):
    """Ba et al. 2016 LN-LSTM written out, torch gate order i, f, g, o."""
    gates = (
        _ln(h @ cell.weight_hh.T, cell.ln_hh_weight, cell.ln_hh_bias)
        + _ln(x @ cell.weight_ih.T, cell.ln_ih_weight, cell.ln_ih_bias)
        + cell.bias_ih
        + cell.bias_hh
    )
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(_ln(c, cell.ln_cell_weight, cell.ln_cell_bias))
    return h, c


def _ln_gru_step(cell, x, h):
    a = _ln(x @ cell.weight_ih.T, cell.ln_ih_weight, cell.ln_ih_bias) + cell.bias_ih
    u = _ln(h @ cell.weight_hh.T, cell.ln_hh_weight, cell.ln_hh_bias) + cell.bias_hh
    ar, az, an = a.chunk(3, 1)
    ur, uz, un = u.chunk(3, 1)
    r = torch.sigmoid(ar + ur)
    z = torch.sigmoid(az + uz)
    n = torch.tanh(an + r * un)
    return (1 - z) * n + z * h


def test_layer_norm_lstm_cell_equals_equations():
    torch.manual_seed(1)
    cell = rn.LayerNormLSTMCell(4, 6, dtype=torch.float64)
    assert torch.equal(cell.ln_ih_weight, torch.ones(24, dtype=torch.float64))
    assert torch.equal(cell.ln_cell_bias, torch.zeros(6, dtype=torch.float64))
    _randomise(cell)
    x, h, c = (torch.randn(3, n, dtype=torch.float64) for n in (4, 6, 6))
    y, (h1, c1) = cell(x, (h, c))
    ref_h, ref_c = _ln_lstm_step(cell, x, h, c)
    torch.testing.assert_close(h1, ref_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(c1, ref_c, rtol=0, atol=1e-12)
    assert y is h1


def test_layer_norm_gru_cell_equals_equations():
    torch.manual_seed(2)
    cell = rn.LayerNormGRUCell(4, 6, dtype=torch.float64)
    _randomise(cell)
    x, h = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    y, h1 = cell(x, h)
    torch.testing.assert_close(h1, _ln_gru_step(cell, x, h), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell_cls", [rn.LayerNormLSTMCell, rn.LayerNormGRUCell])
def test_layer_norm_cells_gradcheck(cell_cls):
    torch.manual_seed(3)
    cell = cell_cls(2, 3, dtype=torch.float64)
    _randomise(cell)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    lstm = cell_cls is rn.LayerNormLSTMCell

    def f(x, h, c, *ps):
        state = (h, c) if lstm else h
        _, new = torch.func.functional_call(cell, dict(zip(names, ps)), (x, state))
        return new if lstm else (new, c * 0)

    assert torch.autograd.gradcheck(f, (x, h, c, *params), fast_mode=True)


def test_layer_norm_cell_without_bias():
    cell = rn.LayerNormLSTMCell(3, 4, bias=False)
    assert cell.bias_ih is None and "bias_ih" not in dict(cell.named_parameters())
    y, (h, c) = cell(torch.randn(2, 3))
    assert h.shape == c.shape == (2, 4)


def _reference_step(cell, x, state):
    """One step of ``cell`` computed independently: torch.nn's cell with the same weights, or the LN equations."""
    if isinstance(cell, rn.LayerNormLSTMCell):
        h, c = _ln_lstm_step(cell, x, *state)
        return h, (h, c)
    if isinstance(cell, rn.LayerNormGRUCell):
        h = _ln_gru_step(cell, x, state)
        return h, h
    ref_cls = {rn.LSTMCell: torch.nn.LSTMCell, rn.GRUCell: torch.nn.GRUCell, rn.RNNCell: torch.nn.RNNCell}[type(cell)]
    kwargs = {"nonlinearity": cell.nonlinearity} if isinstance(cell, rn.RNNCell) else {}
    ref = ref_cls(cell.input_size, cell.hidden_size, dtype=torch.float64, **kwargs)
    ref.load_state_dict(cell.state_dict())
    out = ref(x, state)
    return (out[0], out) if isinstance(cell, rn.LSTMCell) else (out, out)


def test_projection_hoisted_out_of_the_loop_equals_stepping_the_reference():
    # The runner projects all T steps at once, then calls step per time step; that must equal the
    # reference cell (torch.nn, or the LN equations above) applied step after step.
    torch.manual_seed(4)
    cells = [rn.LSTMCell(3, 5), rn.GRUCell(3, 5), rn.RNNCell(3, 5, nonlinearity="relu"), rn.LayerNormLSTMCell(3, 5),
             rn.LayerNormGRUCell(3, 5)]
    for cell in cells:
        cell = cell.double()
        _randomise(cell)
        x = torch.randn(4, 6, 3, dtype=torch.float64)  # (T, B, H_in)
        projected = cell.project_input(x.reshape(24, 3)).reshape(4, 6, -1)  # every step in one call
        state = ref_state = cell.init_state(6, dtype=torch.float64)
        for t in range(4):
            y, state = cell.step(projected[t], state)
            ref_y, ref_state = _reference_step(cell, x[t], ref_state)
            torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-12, msg=type(cell).__name__)
            torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-12, msg=type(cell).__name__)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "transposed_views"])
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)], ids=["both", "input", "weight"])
def test_linear_float32_cpu_runs_onednn_and_equals_f_linear(monkeypatch, bias, transposed, needs):
    # float32 on CPU goes through oneDNN (its own autograd node), values and all gradients equal to
    # F.linear's to float32 rounding, for transposed views too (the backward products use them)
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 7 * 9 * 6)  # this product, as small as a test allows
    torch.manual_seed(5)
    x, w = torch.randn(7, 6), torch.randn(9, 6)
    if transposed:
        x, w = torch.randn(6, 7).t(), torch.randn(6, 9).t()
    b = torch.randn(9) if bias else None
    leaves = [x.requires_grad_(needs[0]), w.requires_grad_(needs[1])] + ([b.requires_grad_()] if bias else [])
    g = torch.randn(7, 9)
    got = rn.cells.linear(x, w, b)
    assert type(got.grad_fn).__name__ == "_OneDNNLinearBackward"
    got_grads = torch.autograd.grad(got, [t for t in leaves if t.requires_grad], g)
    want = F.linear(x, w, b)
    want_grads = torch.autograd.grad(want, [t for t in leaves if t.requires_grad], g)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, e in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_linear_is_f_linear_off_float32_cpu(monkeypatch):
    # a product below ONEDNN_MIN_MACS, float64 (oneDNN has no float64 product), a 2-D bias, autocast and
    # compiling are F.linear itself
    torch.manual_seed(6)
    x, w = torch.randn(7, 6, requires_grad=True), torch.randn(9, 6)
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 7 * 9 * 6 + 1)
    assert type(rn.cells.linear(x, w).grad_fn).__name__ == "MmBackward0"
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 0)
    x, w, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), None
    assert torch.equal(rn.cells.linear(x, w, b), F.linear(x, w, b))
    x, w, b = torch.randn(4, 3), torch.randn(5, 3), torch.randn(5)
    rows = torch.randn(4, 5)  # a (N, M) bias, as F.linear broadcasts it: addmm
    assert torch.equal(rn.cells.linear(x, w, rows), F.linear(x, w, rows))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rn.cells.linear(x, w, b)
        assert got.dtype == torch.bfloat16 and torch.equal(got, F.linear(x, w, b))
    compiled = torch.compile(lambda a: rn.cells.linear(a, w, b), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_cell_bad_input_and_state_raise():
    cell = rn.LSTMCell(3, 5)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, H_in=3\) or \(H_in,\), got \(2, 4\)"):
        cell(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"got \(2, 7, 3\)"):
        cell(torch.randn(2, 7, 3))
    with pytest.raises(ValueError, match=r"expected state part 1 of shape \(2, 5\) \(B, S\), got \(2, 4\)"):
        cell(torch.randn(2, 3), (torch.zeros(2, 5), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="tuple of 2 tensors"):
        cell(torch.randn(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"expected state of shape \(2, 5\) \(B, S\), got \(3, 5\)"):
        rn.GRUCell(3, 5)(torch.randn(2, 3), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="nonlinearity"):
        rn.RNNCell(3, 5, nonlinearity="sigmoid")


def test_rnn_cell_relu_clamps():
    cell = rn.RNNCell(2, 3, nonlinearity="relu")
    y, _ = cell(torch.randn(50, 2) * 10)
    assert (y >= 0).all() and (y == 0).any()
    assert "nonlinearity='relu'" in repr(cell)


def test_cells_match_gates_after_state_dict_from_torch_lstm_cell():
    ref = torch.nn.LSTMCell(3, 4)
    ours = rn.LSTMCell(3, 4)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3)
    h, c = ref(x)
    y, (h1, c1) = ours(x)
    assert F.l1_loss(h1, h) < 1e-6 and F.l1_loss(c1, c) < 1e-6


@pytest.mark.parametrize(
    "mode,layer_norm", [("LSTM", False), ("GRU", False), ("RNN", False), ("LSTM", True), ("GRU", True)]
)
def test_generic_layer_on_onednn_equals_it_on_f_linear(monkeypatch, mode, layer_norm):
    # A float32 training forward and backward of the generic engine, stacked, bidirectional, variable lengths,
    # all dropouts on: with the cells' products on oneDNN it equals the same run with F.linear to float32
    # rounding, and draws the same dropout masks (oneDNN draws no random numbers). Through two layer-norm
    # layers each run is about 4e-5 (relative) from a float64 run, hence 1e-4; a wrong mask or product is O(1).
    torch.manual_seed(7)
    layer = getattr(rn, mode)(
        6, 8, 2, batch_first=True, dropout=0.3, bidirectional=True, engine="generic", layer_norm=layer_norm,
        weight_dropout=0.2, input_dropout=0.1, output_dropout=0.1,
    )
    x, lengths = torch.randn(5, 7, 6), torch.tensor([7, 2, 5, 7, 1])
    w_out = torch.randn(5, 7, 16)

    def run():  # noqa: ANN202
        torch.manual_seed(8)
        layer.zero_grad()
        xs = x.clone().requires_grad_()
        out, final = layer(xs, lengths=lengths)
        finals = final if isinstance(final, tuple) else (final,)
        ((out * w_out).sum() + sum(f.square().sum() for f in finals)).backward()
        return [out, *finals, xs.grad, *(p.grad for p in layer.parameters())]

    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 0)  # every product of these tiny sizes on oneDNN
    on_onednn = run()
    monkeypatch.setattr(rn.cells, "_ONEDNN_LINEAR", None)
    on_f_linear = run()
    assert len(on_onednn) == len(on_f_linear)
    for got, want in zip(on_onednn, on_f_linear, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _graph_names(tensor: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``tensor``."""
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _generic_lstm_grads(layer, x, lengths):  # noqa: ANN001, ANN202
    layer.zero_grad()
    out, (h, c) = layer(x, lengths=lengths)
    (out.square().sum() + c.sum()).backward()
    return [p.grad.clone() for p in layer.parameters()]


def test_generic_layer_defers_recurrent_weight_gradients(monkeypatch):
    # In the time loop each recurrent weight's products record their (gradient, input) blocks and one node
    # multiplies them at the end (or every ROWS_ELEMENTS): the gradients equal those of the per-step
    # products (_OneDNNLinear, as outside a loop) to float32 rounding, however often the record flushes.
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 0)
    torch.manual_seed(9)
    layer = rn.LSTM(6, 8, 2, batch_first=True, bidirectional=True, engine="generic")
    x, lengths = torch.randn(5, 7, 6), torch.tensor([7, 2, 5, 7, 1])
    out, _ = layer(x, lengths=lengths)
    names = _graph_names(out)
    assert {"_CollectWeightGradBackward", "_OneDNNLinearBackward"} <= names
    deferred = _generic_lstm_grads(layer, x, lengths)
    monkeypatch.setattr(rn.cells._WeightGradRecord, "ROWS_ELEMENTS", 3 * (32 + 8))  # a flush every 3 rows
    flushed = _generic_lstm_grads(layer, x, lengths)
    monkeypatch.setattr(rn.recurrent, "deferred_weight_gradients", contextlib.nullcontext)
    per_step = _generic_lstm_grads(layer, x, lengths)
    out, _ = layer(x, lengths=lengths)
    assert "_CollectWeightGradBackward" not in _graph_names(out)
    for a, b, c in zip(deferred, flushed, per_step, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)


def test_deferred_weight_gradients_across_backward_passes(monkeypatch):
    # retain_graph: a pass that asks only for the input's gradient leaves blocks in the records that no
    # collecting node consumes; the next pass must not count them (it would double the weight gradient)
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 0)
    torch.manual_seed(10)
    layer = rn.GRU(4, 6, batch_first=True, engine="generic")
    x = torch.randn(3, 5, 4, requires_grad=True)
    out, _ = layer(x)
    loss = out.square().sum()
    (want,) = torch.autograd.grad(loss, [layer.weight_hh_l0], retain_graph=True)
    torch.autograd.grad(loss, [x], retain_graph=True)  # records blocks, collects nothing
    (again,) = torch.autograd.grad(loss, [layer.weight_hh_l0], retain_graph=True)
    torch.testing.assert_close(again, want, rtol=0, atol=0)
    loss.backward(retain_graph=True)
    loss.backward()  # two passes accumulate into .grad: twice the gradient
    torch.testing.assert_close(layer.weight_hh_l0.grad, 2 * want, rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(rn.recurrent, "deferred_weight_gradients", contextlib.nullcontext)
    out, _ = layer(x)
    (plain,) = torch.autograd.grad(out.square().sum(), [layer.weight_hh_l0])
    torch.testing.assert_close(want, plain, rtol=1e-5, atol=1e-5)


def test_time_loop_lays_out_its_recurrent_weight_once(monkeypatch):
    # From a weight's second use in a time loop, its forward products use one copy laid out by oneDNN and its
    # backward products one of its transpose, made once per backward pass; a one-step loop lays out nothing.
    # Values and gradients equal the plain products' to float32 rounding.
    assert rn.cells._ONEDNN_PACK is not None  # torch's CPU build has oneDNN
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 0)
    pack, calls = rn.cells._ONEDNN_PACK, []

    def counted(weight, batch):  # noqa: ANN001, ANN202
        calls.append(tuple(weight.shape))
        return pack(weight, batch)

    monkeypatch.setattr(rn.cells, "_ONEDNN_PACK", counted)
    torch.manual_seed(11)
    layer = rn.GRU(6, 8, batch_first=True, engine="generic")
    x = torch.randn(4, 5, 6, requires_grad=True)
    leaves = [x, *layer.parameters()]
    out, h = layer(x)
    assert calls == [(24, 8)]  # weight_hh (3H, H), at the second step
    loss = out.square().sum() + h.sum()
    grads = torch.autograd.grad(loss, leaves, retain_graph=True)
    assert calls == [(24, 8), (8, 24)]  # its transpose, for the input gradients
    again = torch.autograd.grad(loss, leaves)
    assert calls == [(24, 8), (8, 24), (8, 24)]  # a new pass lays it out again
    for a, b in zip(grads, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    monkeypatch.setattr(rn.cells, "_ONEDNN_PACK", None)
    plain_out, plain_h = layer(x)
    plain = torch.autograd.grad(plain_out.square().sum() + plain_h.sum(), leaves)
    torch.testing.assert_close(out, plain_out, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    monkeypatch.setattr(rn.cells, "_ONEDNN_PACK", counted)
    calls.clear()
    one_step, _ = layer(x[:, :1])
    one_step.sum().backward()
    assert calls == []
    with torch.no_grad():  # inference packs too (no record, no backward)
        layer(x)
    assert calls == [(24, 8)]


def test_cells_work_under_torch_func_transforms(monkeypatch):
    # torch.func.vmap over a cell (per-sample gradients, ensembles) failed on the oneDNN path ("does not have
    # vmap support"); under torch.func transforms linear is F.linear, so vmap and grad give F.linear's results
    monkeypatch.setattr(rn.cells, "ONEDNN_MIN_MACS", 0)
    torch.manual_seed(12)
    cell = rn.LSTMCell(3, 4)
    x = torch.randn(5, 3)
    params = dict(cell.named_parameters())

    def loss(p: dict, row: torch.Tensor) -> torch.Tensor:
        out, _ = torch.func.functional_call(cell, p, (row[None],))
        return out.square().sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(5):
        expected = torch.autograd.grad(loss(params, x[i]), list(params.values()))
        for name, e in zip(params, expected, strict=True):
            torch.testing.assert_close(per_sample[name][i], e, rtol=1e-5, atol=1e-6)
    outs = torch.func.vmap(lambda row: cell(row[None])[0][0])(x)
    torch.testing.assert_close(outs, cell(x)[0], rtol=1e-5, atol=1e-6)
