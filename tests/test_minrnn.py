"""minGRU / minLSTM: the parallel log-space scan equals the cells' step loop (outputs, final states, gradients),
the cells follow the paper's equations, padding never leaks, streaming equals whole sequences."""

import zlib

import pytest
import torch

import rnnkit.nn as rn
from rnnkit.nn import minrnn

B, T, H_IN, H = 5, 7, 3, 4
VARIABLE = [3, 7, 1, 6, 2]  # length 1, the full length, unsorted
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
LAYERS = {"mingru": rn.MinGRU, "minlstm": rn.MinLSTM}


def assert_near(got, want, tol, what):
    """Max error at most ``tol`` times the tensor's scale (its largest magnitude, at least 1): parameter
    gradients are sums over B * T steps whose float32 rounding depends on the summation order."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.detach(), want.detach()
    err, scale = float((got - want).abs().max()), max(1.0, float(want.abs().max()))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} * {scale:.3g}"


def run(layer, x, state, lengths, w_out, w_state):
    """Forward + weighted-sum backward; returns output, final state and the grads of input, state, parameters."""
    layer.zero_grad()
    x = x.clone().requires_grad_()
    state = state.clone().requires_grad_()
    out, final = layer(x, state, lengths=lengths)
    ((out * w_out).sum() + (final * w_state).sum()).backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return out.detach(), final.detach(), x.grad, state.grad, grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tf"])
@pytest.mark.parametrize("variable", [False, True], ids=["equal", "variable"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_parallel_scan_equals_step_loop(kind, num_layers, bidirectional, variable, batch_first, dtype):
    torch.manual_seed(zlib.crc32(repr((kind, num_layers, bidirectional, variable, batch_first)).encode()))
    d = 2 if bidirectional else 1
    layer = LAYERS[kind](H_IN, H, num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype)
    x = torch.randn(B, T, H_IN, dtype=dtype) * 2
    w_out = torch.randn(B, T, d * H, dtype=dtype)
    if not batch_first:
        x, w_out = x.transpose(0, 1), w_out.transpose(0, 1)
    state = torch.randn(num_layers * d, B, H, dtype=dtype)
    w_state = torch.randn(num_layers * d, B, H, dtype=dtype)
    lengths = torch.tensor(VARIABLE) if variable else None
    layer.engine = "generic"
    want = run(layer, x, state, lengths, w_out, w_state)
    assert layer.last_engine == "generic"
    layer.engine = "parallel"
    got = run(layer, x, state, lengths, w_out, w_state)
    assert layer.last_engine == "parallel"
    tol = TOL[dtype]
    for what, a, b in zip(("output", "final state", "input grad", "state grad"), got, want):
        assert_near(a, b, tol, what)
    assert set(got[4]) == set(want[4]) and len(got[4]) == num_layers * d * 2
    for name, grad in want[4].items():
        assert_near(got[4][name], grad, tol, f"grad {name}")
    if variable:
        padding = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T)
        assert bool((got[0][padding if batch_first else padding.T] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_long_sequence_stays_finite_and_equal(kind, dtype):
    torch.manual_seed(1)
    steps = 2000
    layer = LAYERS[kind](H_IN, H, bidirectional=True, dtype=dtype)
    x = torch.randn(3, steps, H_IN, dtype=dtype) * 3  # saturating gates: decays far below float32's range
    lengths = torch.tensor([steps, 1500, 7])
    w_out = torch.randn(3, steps, 2 * H, dtype=dtype)
    state, w_state = torch.randn(2, 3, H, dtype=dtype), torch.randn(2, 3, H, dtype=dtype)
    layer.engine = "generic"
    want = run(layer, x, state, lengths, w_out, w_state)
    layer.engine = "parallel"
    got = run(layer, x, state, lengths, w_out, w_state)
    for what, a, b in zip(("output", "final state", "input grad", "state grad"), got, want):
        assert bool(torch.isfinite(a).all()), what
        assert_near(a, b, TOL[dtype], what)
    for name, grad in want[4].items():
        assert_near(got[4][name], grad, TOL[dtype], f"grad {name}")


def test_unchunked_scan_loses_float32_precision_that_chunks_keep():
    """Why log_scan works in chunks: one scan over 2,000 steps cancels two exponents of size ~|a*_t|."""
    torch.manual_seed(2)
    log_a = -torch.rand(2, 2000, 8, dtype=torch.float64) * 1.5
    log_b = torch.randn(2, 2000, 8, dtype=torch.float64)
    h0 = torch.randn(2, 8, dtype=torch.float64)
    exact = minrnn.log_scan(log_a, log_b, h0, chunk=1)  # chunk 1 is the plain linear recurrence
    whole = minrnn.log_scan(log_a.float(), log_b.float(), h0.float(), chunk=2000).double()
    chunked = minrnn.log_scan(log_a.float(), log_b.float(), h0.float()).double()
    relative = lambda h: float(((h - exact).abs() / exact.abs().clamp_min(1.0)).max())  # noqa: E731
    assert relative(chunked) < 1e-5 < relative(whole)
    assert_near(minrnn.log_scan(log_a, log_b, h0, chunk=2000), exact, 1e-10, "float64 one chunk")


@pytest.mark.parametrize("kind", list(LAYERS))
def test_bfloat16_scans_in_float32(kind):
    torch.manual_seed(9)
    layer = LAYERS[kind](H_IN, H).to(torch.bfloat16)
    x = torch.randn(2, 300, H_IN).to(torch.bfloat16)
    reference = LAYERS[kind](H_IN, H).double()
    reference.load_state_dict(layer.state_dict())
    layer.engine = reference.engine = "generic"
    want = reference(x.double())[0]
    layer.engine = "parallel"
    got = layer(x)[0]
    assert got.dtype == torch.bfloat16
    assert_near(got.double(), want, 2e-2, "bfloat16 scan")  # one bfloat16 rounding of each output: 4e-3


def test_cells_follow_the_papers_equations():
    torch.manual_seed(3)
    x, h = torch.randn(6, H_IN, dtype=torch.float64) * 3, torch.randn(6, H, dtype=torch.float64)

    def g(v):
        return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))

    gru = rn.MinGRUCell(H_IN, H).double()
    w_z, w_h = gru.weight_ih.chunk(2)
    b_z, b_h = gru.bias_ih.chunk(2)
    z = torch.sigmoid(x @ w_z.T + b_z)
    y, state = gru(x, h)
    assert_near(y, (1 - z) * h + z * g(x @ w_h.T + b_h), 1e-12, "minGRU")
    assert y is state

    lstm = rn.MinLSTMCell(H_IN, H, bias=False).double()
    w_f, w_i, w_h = lstm.weight_ih.chunk(3)
    f, i = torch.sigmoid(x @ w_f.T), torch.sigmoid(x @ w_i.T)
    y, _ = lstm(x, h)
    assert_near(y, f / (f + i) * h + i / (f + i) * g(x @ w_h.T), 1e-12, "minLSTM")
    assert lstm.bias_ih is None and [n for n, _ in lstm.named_parameters()] == ["weight_ih"]


def test_log_g_is_log_of_g_with_finite_gradients():
    v = torch.tensor([-200.0, -30.0, -1.0, 0.0, 1e-8, 2.0, 1e6], dtype=torch.float64, requires_grad=True)
    out = minrnn.log_g(v)
    assert_near(out[1:], torch.log(minrnn.g(v[1:])), 1e-12, "log g")
    far = torch.tensor(-200.0)  # float32: log(sigmoid(-200)) is log(0)
    assert float(torch.log(minrnn.g(far))) == float("-inf") and float(minrnn.log_g(far)) == pytest.approx(-200.0)
    out.sum().backward()
    assert bool(torch.isfinite(v.grad).all())


@pytest.mark.parametrize("kind", list(LAYERS))
def test_padding_never_leaks(kind):
    """Each row of a padded batch equals the sequence run alone; NaN padding reaches no output or gradient."""
    torch.manual_seed(4)
    layer = LAYERS[kind](H_IN, H, 2, bidirectional=True).double()
    x = torch.randn(B, T, H_IN, dtype=torch.float64)
    lengths = torch.tensor(VARIABLE)
    padding = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T)
    x[padding] = float("nan")
    x.requires_grad_()
    state = torch.randn(4, B, H, dtype=torch.float64)
    out, final = layer(x, state, lengths)
    (out.sum() + final.sum()).backward()
    assert bool(torch.isfinite(out).all()) and bool((out[padding] == 0).all())
    assert bool(torch.isfinite(x.grad[~padding]).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
    for b, n in enumerate(VARIABLE):
        alone, alone_final = layer(x[b : b + 1, :n].detach(), state[:, b : b + 1])
        assert_near(out[b : b + 1, :n].detach(), alone.detach(), 1e-10, f"row {b} output")
        assert_near(final[:, b : b + 1].detach(), alone_final.detach(), 1e-10, f"row {b} final state")


@pytest.mark.parametrize("kind", list(LAYERS))
def test_streaming_equals_whole_sequence_with_one_step_per_token(kind, monkeypatch):
    torch.manual_seed(5)
    layer = LAYERS[kind](H_IN, H, 3, dtype=torch.float64).eval()
    x = torch.randn(2, 40, H_IN, dtype=torch.float64)
    whole, whole_final = layer(x)
    assert layer.last_engine == "parallel"
    pieces, state = [], None
    for start, stop in ((0, 9), (9, 10), (10, 33), (33, 40)):  # chunk after chunk, the state carried
        out, state = layer(x[:, start:stop], state)
        pieces.append(out)
    assert_near(torch.cat(pieces, 1), whole, 1e-10, "chunked output")
    assert_near(state, whole_final, 1e-10, "chunked final state")

    steps = []
    for cell in layer.cells:
        monkeypatch.setattr(cell, "step", lambda p, s, step=cell.step: steps.append(1) or step(p, s))
    tokens, state = [], None
    for t in range(40):  # generation: one token at a time
        out, state = layer(x[:, t : t + 1], state)
        assert layer.last_engine == "generic"
        tokens.append(out)
    assert len(steps) == 40 * 3  # one step per token and layer
    assert_near(torch.cat(tokens, 1), whole, 1e-10, "token-by-token output")


@pytest.mark.parametrize("kind", list(LAYERS))
def test_cells_run_in_recurrent_with_the_layers_state_dict(kind):
    torch.manual_seed(6)
    layer = LAYERS[kind](H_IN, H, 2, bidirectional=True).double()
    runner = rn.Recurrent(layer.cells[0].__class__, H_IN, H, 2, bidirectional=True).double()
    runner.load_state_dict(layer.state_dict())
    assert layer.cells[0].layer_class is type(layer)
    x, lengths = torch.randn(B, T, H_IN, dtype=torch.float64), torch.tensor(VARIABLE)
    for a, b in zip(layer(x, lengths=lengths), runner(x, lengths=lengths)):
        assert_near(a.detach(), b.detach(), 1e-10, "Recurrent")


@pytest.mark.parametrize("variational", [False, True], ids=["elementwise", "locked"])
def test_dropout_between_layers_and_on_input_output(variational):
    torch.manual_seed(7)
    p = 0.4
    layer = rn.MinGRU(H_IN, H, 2, dropout=p, variational_dropout=variational, input_dropout=0.3,
                      output_dropout=0.2).double()
    x, lengths = torch.randn(B, T, H_IN, dtype=torch.float64), torch.tensor(VARIABLE)
    torch.manual_seed(8)
    out, final = layer(x, lengths=lengths)
    # the same draws by hand: input mask, between-layer mask, output mask
    first = rn.MinGRU(H_IN, H, dtype=torch.float64)
    second = rn.MinGRU(H, H, dtype=torch.float64)
    first.cells[0].load_state_dict(layer.cells[0].state_dict())
    second.cells[0].load_state_dict(layer.cells[1].state_dict())
    torch.manual_seed(8)
    y, h1 = first(rn.locked_dropout(x, 0.3), lengths=lengths)
    if variational:
        y = rn.locked_dropout(y, p)
        full = y[1]  # the full-length sequence: one mask per feature, the same at every step
        assert bool(((full == 0).all(0) | (full != 0).all(0)).all()) and bool((full == 0).any())
    else:
        y = torch.nn.functional.dropout(y, p)
    y, h2 = second(y, lengths=lengths)
    assert_near(out, rn.locked_dropout(y, 0.2), 1e-12, "output")
    assert_near(final, torch.cat([h1, h2]), 1e-12, "final state")
    layer.eval()
    plain = second(first(x, lengths=lengths)[0], lengths=lengths)[0]
    assert_near(layer(x, lengths=lengths)[0], plain, 1e-12, "eval: no dropout")


def test_errors_are_clear():
    with pytest.raises(ValueError, match="MinGRU: weight_dropout does not apply: the cell has no hidden-to-hidden"):
        rn.MinGRU(3, 4, weight_dropout=0.5)
    with pytest.raises(ValueError, match=r"MinLSTM: engine must be one of \('auto', 'parallel', 'generic'\)"):
        rn.MinLSTM(3, 4, engine="fused")
    layer = rn.MinLSTM(3, 4, 2)
    with pytest.raises(ValueError, match=r"MinLSTM: expected state of shape \(2, 5, 4\)"):
        layer(torch.randn(5, 6, 3), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match=r"MinLSTM: expected every length in \[1, T=6\]"):
        layer(torch.randn(5, 6, 3), lengths=torch.tensor([1, 2, 3, 4, 7]))
    with pytest.raises(ValueError, match="MinGRUCell: input_size and hidden_size must be >= 1"):
        rn.MinGRUCell(0, 4)
