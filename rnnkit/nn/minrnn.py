r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): recurrences that train with a parallel scan.

Their gates read the input only, never the previous state, so one layer is a *linear* recurrence

.. math::
    h_t = a_t \odot h_{t-1} + b_t, \qquad a_t = 1 - u_t,\quad b_t = u_t \odot g(\tilde h_t)

with an update gate :math:`u_t \in (0, 1)` and a candidate :math:`g(\tilde h_t) > 0` computed from
:math:`x_t` alone, where :math:`g(x) = x + 0.5` for :math:`x \ge 0` and :math:`\sigma(x)` otherwise (continuous,
positive, so the scan can work with logarithms). The two cells differ in the update gate:

* minGRU: :math:`u_t = z_t = \sigma(W_z x_t + b_z)`, so :math:`h_t = (1 - z_t) \odot h_{t-1} + z_t \odot
  g(W_h x_t + b_h)`.
* minLSTM: :math:`f_t = \sigma(W_f x_t + b_f)`, :math:`i_t = \sigma(W_i x_t + b_i)`, normalised as in the
  paper to :math:`f'_t = f_t / (f_t + i_t)`, :math:`i'_t = i_t / (f_t + i_t)`, and :math:`h_t = f'_t \odot
  h_{t-1} + i'_t \odot g(W_h x_t + b_h)`; so :math:`u_t = i'_t = \sigma(\ell_t)` with
  :math:`\ell_t = \log i_t - \log f_t = \mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i)` (k the
  pre-activations), which is how it is computed (no division, no 0/0 when both gates underflow).

Two engines compute the same thing. The *step* (the cells, :class:`MinGRUCell` and :class:`MinLSTMCell`) is
one time step in linear space, as in the equations above; it follows rnnkit's cell protocol
(:mod:`rnnkit.nn.cells`), so the cells run in :class:`rnnkit.nn.Recurrent` and streaming generation costs one
step per token with an O(1) state ``(B, H)``. The *parallel scan* (:func:`log_scan`, used by the layers
:class:`MinGRU` and :class:`MinLSTM` on whole sequences) computes every :math:`h_t` at once with Heinsen's
log-space scan (Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential Computation"):

.. math::
    a^*_t = \sum_{s \le t} \log a_s, \qquad
    h_t = e^{a^*_t} h_0 + \exp\Big(a^*_t + \operatorname{logcumsumexp}_{s \le t}(\log b_s - a^*_s)\Big)

with :math:`\log a_t = -\mathrm{softplus}(\ell_t)`, :math:`\log u_t = -\mathrm{softplus}(-\ell_t)` and
:math:`\log g` computed as ``log(relu(x) + 0.5)`` or ``-softplus(-x)``. Why it stays accurate on long sequences:
the products :math:`\prod_s a_s` are never formed in linear space (they underflow to 0 after a few hundred steps,
and dividing by them overflows); every quantity is a sum of logarithms, each computed by a softplus without
``log(sigmoid)`` underflow, and ``logcumsumexp`` subtracts its running maximum before exponentiating, so
nothing overflows or underflows whatever T is. The one loss left is cancellation: :math:`a^*_t` grows like
:math:`t` and the two large terms in the exponent cancel to :math:`\log h_t = O(1)`, costing about
:math:`\epsilon \lvert a^*_t \rvert` relative error (measured: about 1e-4 in float32 after 2,000 steps).
:func:`log_scan` therefore scans chunks of :data:`CHUNK` steps in parallel (all chunks at once, so
:math:`\lvert a^* \rvert` is bounded by the chunk) and carries the state across chunk boundaries with the same
linear recurrence (``T / CHUNK`` small steps). The error then grows with the chunk, not with T: measured on
2,000 steps with saturating gates, the worst float32 tensor (a parameter gradient) is within about 2e-6 of
float64 with chunks of 8 steps, 7e-6 with 16 and 4e-5 with 32 or 64, relative to its largest magnitude (the
float32 step loop: 3e-6); outputs are within 1e-6 with 16. Tests hold the scan to 1e-5 of the step loop at
T = 2,000. The initial state
enters linearly (:math:`e^{a^*_t} h_0`), so it may be zero or negative, which a logarithm of :math:`h_0` could not.

There is no hidden-to-hidden weight (the point of the model), so weight dropout (DropConnect on ``weight_hh``)
does not apply; the layers take locked input/output dropout and between-layer dropout instead.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells import RecurrentCell, check_state_like
from rnnkit.nn.dropout import check_probability, locked_dropout, locked_dropout_mask
from rnnkit.nn.recurrent import Recurrent, check_sequence_input

CHUNK = 16
"""Steps per chunk of :func:`log_scan`: bounds the cancellation error (see the module docstring); ``T / CHUNK``
sequential steps carry the state between chunks."""

ENGINES = ("auto", "parallel", "generic")


def g(x: Tensor) -> Tensor:
    """The paper's positive activation: ``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` otherwise."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """``log(g(x))`` without ``log(sigmoid)`` underflow; both branches are finite everywhere, so the gradient is."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int = CHUNK) -> Tensor:
    r"""All states of :math:`h_t = a_t h_{t-1} + b_t` from ``log a`` and ``log b`` (chunked Heinsen scan).

    Args:
        log_a: (B, T, H) logarithms of the decays, <= 0 (0 = keep the state, as at padded steps).
        log_b: (B, T, H) logarithms of the positive inputs (a very negative value = add nothing).
        h0: (B, H) the state before step 0, any sign.
        chunk: steps scanned in parallel at a time. Default :data:`CHUNK`.

    Returns:
        (B, T, H): :math:`h_1 \dots h_T` (row t is the state after step t).
    """
    batch, steps, size = log_a.shape
    count = -(-steps // chunk)
    pad = count * chunk - steps
    if pad:  # identity steps: keep the state, add nothing
        log_a = F.pad(log_a, (0, 0, 0, pad))
        log_b = F.pad(log_b, (0, 0, 0, pad), value=torch.finfo(log_b.dtype).min)
    log_a = log_a.view(batch, count, chunk, size)  # (B, N, C, H)
    log_b = log_b.view(batch, count, chunk, size)
    a_star = log_a.cumsum(2)  # (B, N, C, H): log of the decay from the chunk's start
    local = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, 2))  # each chunk from a zero state
    decay = torch.exp(a_star)
    starts = [h0]
    for c in range(count - 1):  # the state entering each chunk: one linear step per chunk
        starts.append(decay[:, c, -1] * starts[-1] + local[:, c, -1])
    start = torch.stack(starts, 1)  # (B, N, H)
    h = local + decay * start.unsqueeze(2)  # (B, N, C, H)
    return h.view(batch, count * chunk, size)[:, :steps]


class _MinCell(RecurrentCell):
    """Shared body of the two cells: ``weight_ih`` (G*H, H_in), ``bias_ih`` (G*H), the candidate last."""

    num_chunks: ClassVar[int]
    layer_class: ClassVar[type[Recurrent]]  # the layer with the parallel engine (set below the layers)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._set_sizes(input_size, hidden_size, bias)
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = torch.nn.Parameter(torch.empty(self.num_chunks * hidden_size, input_size, **kw))
        if bias:
            self.bias_ih = torch.nn.Parameter(torch.empty(self.num_chunks * hidden_size, **kw))
        else:
            self.register_parameter("bias_ih", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As rnnkit's other cells: every weight and bias uniform in (-1/sqrt(H), 1/sqrt(H))."""
        bound = self.hidden_size**-0.5
        for param in self.parameters():
            torch.nn.init.uniform_(param, -bound, bound)

    def project_input(self, input: Tensor) -> Tensor:
        """``(..., H_in) -> (..., G*H)``: every pre-activation (the whole cell depends on x only)."""
        return F.linear(input, self.weight_ih, self.bias_ih)

    def update_logit(self, projected: Tensor) -> Tensor:
        """``l`` with update gate ``u = sigmoid(l)``, from projected rows ``(..., G*H)``; ``(..., H)``."""
        raise NotImplementedError

    def step(self, projected: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step in linear space: ``h' = (1 - u) * h + u * g(candidate)``; output and state are h'."""
        u = torch.sigmoid(self.update_logit(projected))
        h = (1 - u) * state + u * g(projected[..., -self.hidden_size :])
        return h, h

    def scan(self, projected: Tensor, state: Tensor, valid: Tensor | None = None) -> Tensor:
        """Every step at once with :func:`log_scan`: projected ``(B, T, G*H)``, state ``(B, H)`` -> ``(B, T, H)``.

        ``valid`` (B, T) marks real steps; the others keep the state unchanged (so the last row is each
        sequence's final state) and their inputs, NaN included, reach no output and no gradient. Half and
        bfloat16 inputs are scanned in float32 (with 8 mantissa bits, bfloat16 would lose about
        ``|a*| * 4e-3`` in each exponent) and the result is cast back.
        """
        dtype = projected.dtype
        if dtype in (torch.float16, torch.bfloat16):
            return self.scan(projected.float(), state.float(), valid).to(dtype)
        logit = self.update_logit(projected)  # (B, T, H)
        log_a = -F.softplus(logit)  # log(1 - u)
        log_b = -F.softplus(-logit) + log_g(projected[..., -self.hidden_size :])  # log(u * g)
        if valid is not None:
            keep = valid.unsqueeze(-1)  # (B, T, 1)
            log_a = torch.where(keep, log_a, 0.0)
            log_b = torch.where(keep, log_b, torch.finfo(log_b.dtype).min)
        return log_scan(log_a, log_b, state)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        return text if self.bias else text + ", bias=False"


_CELL_DOC = """
    Args:
        input_size: features of x (H_in).
        hidden_size: features of h (H).
        bias: if False, no ``bias_ih``. Default True.

    Shape:
        input (B, H_in); state (B, H); output h' (B, H) (the output is the new state).

    Example::

        cell = {name}(8, 16)
        y, h = cell(torch.randn(4, 8))       # y is h, (4, 16)
"""


class MinGRUCell(_MinCell):
    __doc__ = r"""minGRU cell (Feng et al. 2024): a GRU whose gates read only the input.

    .. math::
        z &= \sigma(W_z x + b_z), \qquad \tilde h = W_h x + b_h \\
        h' &= (1 - z) \odot h + z \odot g(\tilde h), \qquad g(x) = x + 0.5 \ (x \ge 0),\ \sigma(x)\ (x < 0)

    Parameters: ``weight_ih`` (2H, H_in) and ``bias_ih`` (2H), rows in order z, h; no hidden-to-hidden weight.
""" + _CELL_DOC.format(name="MinGRUCell")

    num_chunks = 2

    def update_logit(self, projected: Tensor) -> Tensor:
        return projected[..., : self.hidden_size]  # z's pre-activation


class MinLSTMCell(_MinCell):
    __doc__ = r"""minLSTM cell (Feng et al. 2024) with the paper's normalised forget and input gates.

    .. math::
        f &= \sigma(W_f x + b_f), \quad i = \sigma(W_i x + b_i), \quad \tilde h = W_h x + b_h \\
        f' &= \frac{f}{f + i}, \quad i' = \frac{i}{f + i} \\
        h' &= f' \odot h + i' \odot g(\tilde h)

    computed as :math:`i' = \sigma(\mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i))` (k the pre-activations),
    which equals :math:`i / (f + i)` without dividing. There is no cell state apart from h: the normalisation
    makes h' a convex combination of h and the candidate, as in the paper's length-independent version.

    Parameters: ``weight_ih`` (3H, H_in) and ``bias_ih`` (3H), rows in order f, i, h; no hidden-to-hidden
    weight.
""" + _CELL_DOC.format(name="MinLSTMCell")

    num_chunks = 3

    def update_logit(self, projected: Tensor) -> Tensor:
        size = self.hidden_size
        k_f, k_i = projected[..., :size], projected[..., size : 2 * size]
        return F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f


class _MinLayer(Recurrent):
    """Shared body of MinGRU and MinLSTM: a :class:`Recurrent` stack of min cells with the parallel engine."""

    cell_class: ClassVar[type[_MinCell]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        variational_dropout: bool = False,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        engine: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        name = type(self).__name__
        if engine not in ENGINES:
            raise ValueError(f"{name}: engine must be one of {ENGINES}, got {engine!r}")
        if weight_dropout:
            raise ValueError(
                f"{name}: weight_dropout does not apply: the cell has no hidden-to-hidden weight "
                f"(got {weight_dropout!r}); use dropout, input_dropout or output_dropout"
            )
        factory = functools.partial(self.cell_class, bias=bias, device=device, dtype=dtype)
        super().__init__(
            factory, input_size, hidden_size, num_layers, bidirectional=bidirectional, batch_first=batch_first,
            dropout=dropout, variational_dropout=variational_dropout,
        )
        self.bias = bias
        self.input_dropout = check_probability(f"{name}: input_dropout", input_dropout)
        self.output_dropout = check_probability(f"{name}: output_dropout", output_dropout)
        self.engine = engine

    def forward(
        self, input: Tensor, state: Tensor | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the stack.

        Args:
            input: (B, T, H_in) if ``batch_first`` else (T, B, H_in), right-padded.
            state: initial state (num_layers * D, B, H). Default zeros.
            lengths: (B,) integer lengths in [1, T], any order and device. Default: all T.

        Returns:
            ``(output, state)``: output (B, T, D * H) (or time-major), exactly 0 at padded steps; the final
            state (num_layers * D, B, H), each sequence's state after its last valid step (reverse direction:
            after reading back to step 0).
        """
        name = type(self).__name__
        batch, steps, lengths_cpu = check_sequence_input(name, input, self.input_size, self.batch_first, lengths)
        if self.training and self.input_dropout > 0:
            input = locked_dropout(input, self.input_dropout, True, self.batch_first)
        if self.engine == "generic" or (self.engine == "auto" and steps == 1):
            out, final = super().forward(input, state, lengths)  # the cells' step loop; sets last_engine
        else:
            expected = self.init_state(batch, device="meta", dtype=input.dtype)
            if state is None:
                state = self.init_state(batch, device=input.device, dtype=input.dtype)
            else:
                check_state_like(name, state, expected, "(num_layers * num_directions, B, H)")
            x = input if self.batch_first else input.transpose(0, 1)  # (B, T, H_in)
            out, final = self._run_parallel(x, state, lengths_cpu)
            out = out if self.batch_first else out.transpose(0, 1)
            self.last_engine = "parallel"
        if self.training and self.output_dropout > 0:
            out = locked_dropout(out, self.output_dropout, True, self.batch_first)
        return out, final

    def _run_parallel(self, x: Tensor, state: Tensor, lengths_cpu: Tensor | None) -> tuple[Tensor, Tensor]:
        """The stack on a batch-first padded input (B, T, H_in); returns (B, T, D*H) and (L*D, B, H)."""
        batch, steps = x.size(0), x.size(1)
        valid = flip = None
        if lengths_cpu is not None:
            lengths = lengths_cpu.to(x.device).unsqueeze(1)  # (B, 1)
            time = torch.arange(steps, device=x.device)  # (T,)
            valid = time < lengths  # (B, T)
            flip = torch.where(valid, lengths - 1 - time, time)  # (B, T): reverse each sequence within its length
            x = torch.where(valid.unsqueeze(-1), x, 0.0)  # padding (even NaN) reaches no weight gradient
        directions = self.num_directions
        finals = []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout > 0:
                if self.variational_dropout:
                    x = x * locked_dropout_mask(batch, x.size(2), self.dropout, device=x.device, dtype=x.dtype
                                                ).unsqueeze(1)
                else:
                    x = F.dropout(x, self.dropout, True)
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                cell = self.cells[index]
                seq = x if direction == 0 else _reverse(x, flip)
                h = cell.scan(cell.project_input(seq), state[index], valid)  # (B, T, H)
                finals.append(h[:, -1])  # padded steps keep the state: the last row is the final state
                outputs.append(h if direction == 0 else _reverse(h, flip))
            x = outputs[0] if directions == 1 else torch.cat(outputs, 2)  # (B, T, D*H)
        if valid is not None:
            x = torch.where(valid.unsqueeze(-1), x, 0.0)
        return x, torch.stack(finals)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, " + super().extra_repr()
        if not self.bias:
            text += ", bias=False"
        for option in ("input_dropout", "output_dropout"):
            if getattr(self, option):
                text += f", {option}={getattr(self, option)}"
        if self.engine != "auto":
            text += f", engine={self.engine!r}"
        return text


def _reverse(x: Tensor, flip: Tensor | None) -> Tensor:
    """Each sequence of (B, T, F) reversed within its length (``flip`` from the lengths), or all of T."""
    if flip is None:
        return x.flip(1)
    return x.gather(1, flip.unsqueeze(-1).expand_as(x))


_LAYER_DOC = r"""

    Engines: ``"parallel"`` scans whole sequences with :func:`log_scan` (all steps at once); ``"generic"``
    runs the cells' :meth:`step` through :class:`rnnkit.nn.Recurrent` (a Python time loop). ``"auto"``
    (default) takes the parallel scan, and the step when the input has one time step (streaming: one step per
    token, the state carried by the caller). ``last_engine`` names the engine of the last forward. The two agree
    to rounding (tests: 1e-10 in float64, 1e-5 in float32, outputs, final states and gradients).

    The layer is a :class:`rnnkit.nn.Recurrent` of ``{cell}`` cells, with the same parameters
    (``cells.{{k}}.weight_ih``, ``cells.{{k}}.bias_ih``, k = layer * D + direction), so a state dict moves
    between the two. There is no hidden-to-hidden weight, so there is no weight dropout (a non-zero
    ``weight_dropout`` raises ValueError).

    Args:
        input_size: features of the input (H_in).
        hidden_size: features of the state (H).
        num_layers: stacked layers; layer l > 0 reads layer l - 1's output. Default 1.
        bias: if False, no ``bias_ih``. Default True.
        batch_first: input and output are (B, T, ·) if True (the default, as rnnkit's Recurrent; unlike
            torch.nn), else (T, B, ·); states are always (num_layers * D, B, H).
        dropout: dropout on each layer's output except the last, in training. Default 0.
        bidirectional: add a reverse direction per layer (D = 2); it reads each sequence from its own last
            valid step back to step 0. Default False.
        variational_dropout: make ``dropout`` locked: one mask per sequence and feature, constant over time
            (keyword-only). Default False.
        input_dropout: locked dropout on the input features (keyword-only). Default 0.
        output_dropout: locked dropout on the last layer's output (keyword-only). Default 0.
        weight_dropout: must be 0 (keyword-only; accepted so that one factory can build every layer).
        engine: ``"auto"``, ``"parallel"`` or ``"generic"`` (keyword-only). Default ``"auto"``.
        device, dtype: for the parameters (keyword-only).

    Shape:
        input: (B, T, H_in) if batch_first else (T, B, H_in); lengths: (B,) integers in [1, T], any order.
        state: (num_layers * D, B, H).
        output: (B, T, D * H) if batch_first else (T, B, D * H); exactly 0 past each length.

    It equals the slow loop (D = 2 adds the loop over ``reversed(range(len_b))`` with the ``_reverse`` cell,
    its output concatenated on the feature axis)::

        for l in range(num_layers):
            for b in range(B):
                h = state0[l, b]
                for t in range(len_b):
                    y[b, t], h = cell_l(x_l[b, t], h)
                final[l, b] = h
            x_{{l+1}} = dropout(y)

    Random draws in a training forward: the input mask, between-layer masks, the output mask.
"""


class MinGRU(_MinLayer):
    __doc__ = (
        r"""minGRU layer (Feng et al. 2024): :class:`MinGRUCell` over time, trained with a parallel scan."""
        + _LAYER_DOC.format(cell="MinGRUCell")
        + """
    Example::

        rnn = MinGRU(8, 16, num_layers=2, bidirectional=True)
        out, h = rnn(torch.randn(4, 10, 8), lengths=torch.tensor([10, 2, 5, 1]))  # (4, 10, 32), (4, 4, 16)
    """
    )
    cell_class = MinGRUCell


class MinLSTM(_MinLayer):
    __doc__ = (
        r"""minLSTM layer (Feng et al. 2024): :class:`MinLSTMCell` over time, trained with a parallel scan."""
        + _LAYER_DOC.format(cell="MinLSTMCell")
        + """
    Example::

        rnn = MinLSTM(8, 16, num_layers=2, dropout=0.1)
        out, h = rnn(torch.randn(4, 10, 8))   # (4, 10, 16), (2, 4, 16)
    """
    )
    cell_class = MinLSTMCell


MinGRUCell.layer_class = MinGRU
MinLSTMCell.layer_class = MinLSTM
