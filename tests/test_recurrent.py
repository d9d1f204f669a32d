"""Exactness against torch.nn for both engines and the Recurrent runner; a new cell through Recurrent."""

import functools
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rn

B, T, H_IN, H = 5, 6, 3, 4
VARIABLE = [3, 6, 1, 5, 2]  # length 1, the full length, unsorted
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

MODES = {
    "rnn_tanh": (rn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}, functools.partial(rn.RNNCell, nonlinearity="tanh")),
    "rnn_relu": (rn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}, functools.partial(rn.RNNCell, nonlinearity="relu")),
    "lstm": (rn.LSTM, torch.nn.LSTM, {}, rn.LSTMCell),
    "gru": (rn.GRU, torch.nn.GRU, {}, rn.GRUCell),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra intra-op threads only add contention (torch's CPU LSTM slows 100x on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_near(got, want, tol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    bound = tol * want.abs().clamp_min(1.0)
    err = (got - want).abs()
    assert bool((err <= bound).all()), f"{what}: max error {float(err.max()):.3g} over tolerance {tol}"


def _tensors(state):
    return list(state) if isinstance(state, tuple | list) else [state]


def _recurrent_names(num_layers, directions):
    """torch.nn names (weight_ih_l1_reverse) -> Recurrent names (cells.3.weight_ih)."""
    out = {}
    for layer in range(num_layers):
        for d, suffix in enumerate(("", "_reverse")[:directions]):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                out[f"{name}_l{layer}{suffix}"] = f"cells.{layer * directions + d}.{name}"
    return out


def _run(module, x, state, lengths, batch_first, w_out, w_state, packed_reference=False):
    """Forward + weighted-sum backward; returns output, final states and grads of input, state, params."""
    x = x.clone().requires_grad_()
    state = None if state is None else [s.clone().requires_grad_() for s in state]
    state_arg = None if state is None else (tuple(state) if len(state) == 2 else state[0])
    if packed_reference:
        inp = x if lengths is None else pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        out, final = module(inp, state_arg)
        if lengths is not None:
            out = pad_packed_sequence(out, batch_first=batch_first, total_length=T)[0]
    else:
        out, final = module(x, state_arg, lengths=lengths)
    final = _tensors(final)
    loss = (out * w_out).sum() + sum((f * w).sum() for f, w in zip(final, w_state))
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    state_grads = [] if state is None else [s.grad for s in state]
    return out.detach(), [f.detach() for f in final], x.grad, state_grads, grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "init_state"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tf"])
@pytest.mark.parametrize("variable", [False, True], ids=["equal", "variable"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mode", list(MODES))
def test_matches_torch_nn(mode, num_layers, bidirectional, variable, batch_first, with_state, dtype):
    ours_cls, ref_cls, kwargs, cell = MODES[mode]
    directions = 2 if bidirectional else 1
    torch.manual_seed(zlib.crc32(repr((mode, num_layers, bidirectional, variable, batch_first, with_state)).encode()))
    ref = ref_cls(H_IN, H, num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype, **kwargs)
    x = torch.randn(B, T, H_IN, dtype=dtype)
    w_out = torch.randn(B, T, directions * H, dtype=dtype)
    if not batch_first:
        x, w_out = x.transpose(0, 1).contiguous(), w_out.transpose(0, 1).contiguous()
    count = 2 if mode == "lstm" else 1
    state = [torch.randn(num_layers * directions, B, H, dtype=dtype) for _ in range(count)] if with_state else None
    w_state = [torch.randn(num_layers * directions, B, H, dtype=dtype) for _ in range(count)]
    lengths = torch.tensor(VARIABLE) if variable else None
    want = _run(ref, x, state, lengths, batch_first, w_out, w_state, packed_reference=True)
    tol = TOL[dtype]

    candidates = []
    for engine in ("fused", "generic"):
        layer = ours_cls(
            H_IN, H, num_layers, bidirectional=bidirectional, batch_first=batch_first, engine=engine, dtype=dtype,
            **kwargs,
        )
        layer.load_state_dict(ref.state_dict())
        candidates.append((engine, layer, lambda g: g))
    runner = rn.Recurrent(
        cell, H_IN, H, num_layers, bidirectional=bidirectional, batch_first=batch_first
    ).to(dtype)
    names = _recurrent_names(num_layers, directions)
    runner.load_state_dict({names[k]: v for k, v in ref.state_dict().items()})
    back = {v: k for k, v in names.items()}
    candidates.append(("generic", runner, lambda g: {back[n]: v for n, v in g.items()}))

    for engine, module, rename_grads in candidates:
        what = f"{type(module).__name__}[{engine}]"
        got = _run(module, x, state, lengths, batch_first, w_out, w_state)
        assert module.last_engine == engine
        assert_near(got[0], want[0], tol, f"{what} output")
        if variable:
            padding = torch.arange(T)[None, :] >= lengths[:, None]  # (B, T)
            assert bool((got[0][padding if batch_first else padding.T] == 0).all()), f"{what}: padding not zero"
        assert len(got[1]) == len(want[1]) > 0 and len(got[3]) == len(want[3])  # state grads: [] without a state
        for k, (a, b) in enumerate(zip(got[1], want[1])):
            assert_near(a, b, tol, f"{what} final state {k}")
        assert_near(got[2], want[2], tol, f"{what} input grad")
        for k, (a, b) in enumerate(zip(got[3], want[3])):
            assert_near(a, b, tol, f"{what} initial-state grad {k}")
        grads = rename_grads(got[4])
        assert set(grads) == set(want[4])
        for name, g in want[4].items():
            assert_near(grads[name], g, tol, f"{what} grad {name}")


def test_lengths_shorter_than_padding_and_on_any_device_order():
    torch.manual_seed(0)
    ref = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True).double()
    x = torch.randn(3, 8, 3, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 3], dtype=torch.int32)  # max 5 < T = 8
    ref_out, ref_h = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    ref_out = pad_packed_sequence(ref_out, batch_first=True, total_length=8)[0]
    for engine in ("fused", "generic"):
        layer = rn.GRU(3, 4, batch_first=True, bidirectional=True, engine=engine).double()
        layer.load_state_dict(ref.state_dict())
        out, h = layer(x, lengths=lengths)
        assert out.shape == (3, 8, 8)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
        torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-12)
        assert bool((out[:, 5:] == 0).all())


# ----------------------------------------------------------------------------------------------------------
# A cell that rnnkit does not ship, run through Recurrent.


class MGUCell(rn.RecurrentCell):
    """Minimal gated unit (Zhou et al. 2016): f = sigma(W_f x + U_f h + b_f),
    n = tanh(W_n x + U_n (f * h) + b_n), h' = (1 - f) * h + f * n."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.w = torch.nn.Linear(input_size, 2 * hidden_size)
        self.u_f = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        self.u_n = torch.nn.Linear(hidden_size, hidden_size, bias=False)

    def project_input(self, x):
        return self.w(x)  # (N, 2H)

    def step(self, projected, h):
        xf, xn = projected.chunk(2, 1)
        f = torch.sigmoid(xf + self.u_f(h))
        n = torch.tanh(xn + self.u_n(f * h))
        h = (1 - f) * h + f * n
        return h, h


class PeepholeCell(torch.nn.Module):
    """Duck-typed (no base class, no project_input) LSTM with peepholes and state (h, c)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = torch.nn.Linear(input_size + hidden_size, 4 * hidden_size)
        self.peep = torch.nn.Parameter(torch.randn(3, hidden_size) * 0.3)

    def init_state(self, batch_size, *, device=None, dtype=None):
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros

    def step(self, x, state):
        h, c = state
        i, f, g, o = self.linear(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f + self.peep[1] * c) * c + torch.sigmoid(i + self.peep[0] * c) * torch.tanh(g)
        h = torch.sigmoid(o + self.peep[2] * c) * torch.tanh(c)
        return h, (h, c)

    def forward(self, x, state):
        return self.step(x, state)


def _slow_loop(cells, x, lengths, state0, num_layers, directions):
    """Each sequence alone, step by step through cell(x_t, state): the definition Recurrent must meet."""
    batch, steps, _ = x.shape
    inp = x
    finals = [[None] * batch for _ in cells]
    for layer in range(num_layers):
        rows = []
        for b in range(batch):
            n = int(lengths[b])
            pieces = []
            for d in range(directions):
                k = layer * directions + d
                s = tuple(p[k, b : b + 1] for p in state0) if isinstance(state0, tuple) else state0[k, b : b + 1]
                ys = [None] * n
                for t in range(n) if d == 0 else reversed(range(n)):
                    y, s = cells[k](inp[b, t : t + 1], s)
                    ys[t] = y[0]
                finals[k][b] = s
                pieces.append(torch.stack(ys))  # (n, H)
            seq = torch.cat(pieces, 1)  # (n, D*H)
            rows.append(torch.cat([seq, seq.new_zeros(steps - n, seq.size(1))]))
        inp = torch.stack(rows)  # (B, T, D*H)
    if isinstance(state0, tuple):
        final = tuple(torch.stack([torch.cat([f[i] for f in fk]) for fk in finals]) for i in range(len(state0)))
    else:
        final = torch.stack([torch.cat(fk) for fk in finals])
    return inp, final


@pytest.mark.parametrize("cell_cls", [MGUCell, PeepholeCell])
def test_custom_cell_through_recurrent_matches_slow_loop(cell_cls):
    torch.manual_seed(5)
    runner = rn.Recurrent(cell_cls, 3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(4, 7, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 7, 1, 5])
    init = runner.init_state(4, dtype=torch.float64)
    state0 = tuple(torch.randn_like(p) for p in init) if isinstance(init, tuple) else torch.randn_like(init)
    out, final = runner(x, state0, lengths=lengths)
    ref_out, ref_final = _slow_loop(list(runner.cells), x, lengths, state0, 2, 2)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-12)
    assert out.shape == (4, 7, 8)
    # gradients agree too
    (g_ours,) = torch.autograd.grad(out.sum() + sum(f.sum() for f in _tensors(final)), x)
    (g_ref,) = torch.autograd.grad(ref_out.sum() + sum(f.sum() for f in _tensors(ref_final)), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)
    assert runner.last_engine == "generic"


def test_recurrent_accepts_built_cells_and_time_major():
    torch.manual_seed(6)
    cells = [rn.GRUCell(3, 4), rn.GRUCell(3, 4), rn.GRUCell(8, 4), rn.GRUCell(8, 4)]
    runner = rn.Recurrent(cells, num_layers=2, bidirectional=True, batch_first=False)
    assert [n for n, _ in runner.named_parameters()][:2] == ["cells.0.weight_ih", "cells.0.weight_hh"]
    x = torch.randn(6, 2, 3)  # (T, B, H_in)
    out, h = runner(x, lengths=torch.tensor([6, 2]))
    assert out.shape == (6, 2, 8) and h.shape == (4, 2, 4)
    assert bool((out[2:, 1] == 0).all())
    single = rn.Recurrent(rn.LSTMCell(3, 4))
    out, (h, c) = single(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4) and h.shape == c.shape == (1, 2, 4)
    torch.testing.assert_close(out[:, -1], h[0])


def test_recurrent_dropout_train_and_eval():
    torch.manual_seed(7)
    for variational in (False, True):
        runner = rn.Recurrent(rn.LSTMCell, 3, 4, num_layers=2, dropout=0.5, variational_dropout=variational)
        x = torch.randn(2, 5, 3)
        out_a, _ = runner(x)
        out_b, _ = runner(x)
        assert not torch.equal(out_a, out_b)
        runner.eval()
        plain = rn.Recurrent(rn.LSTMCell, 3, 4, num_layers=2)
        plain.load_state_dict(runner.state_dict())
        torch.testing.assert_close(runner(x)[0], plain(x)[0], rtol=0, atol=0)


def test_recurrent_bad_construction_and_input():
    with pytest.raises(ValueError, match="one built cell serves one layer"):
        rn.Recurrent(rn.LSTMCell(3, 4), bidirectional=True)
    with pytest.raises(ValueError, match="expected num_layers \\* num_directions = 4 cells, got 2"):
        rn.Recurrent([rn.GRUCell(3, 4), rn.GRUCell(4, 4)], num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"cell 1 has \(input_size, hidden_size\) = \(3, 4\), expected \(4, 4\)"):
        rn.Recurrent([rn.GRUCell(3, 4), rn.GRUCell(3, 4)], num_layers=2)
    with pytest.raises(ValueError, match="needs input_size and hidden_size"):
        rn.Recurrent(rn.GRUCell)
    with pytest.raises(ValueError, match=r"cell 0 \(Linear\) lacks input_size, hidden_size, step, init_state"):
        rn.Recurrent(torch.nn.Linear(3, 4))
    runner = rn.Recurrent(rn.LSTMCell, 3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"expected input \(B, T, H_in\) with H_in=3, got shape \(2, 5, 4\)"):
        runner(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"expected state part 1 of shape \(2, 2, 4\)"):
        runner(torch.randn(2, 5, 3), (torch.zeros(2, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match=r"expected every length in \[1, T=5\], got min 0 and max 3"):
        runner(torch.randn(2, 5, 3), lengths=torch.tensor([0, 3]))
