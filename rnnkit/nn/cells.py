"""Recurrent cells: one time step of RNN, LSTM, GRU and their layer-normalised variants.

The cell protocol
-----------------
A cell is a ``torch.nn.Module`` that computes one time step. Anything with this interface runs through
:class:`rnnkit.nn.Recurrent` (lengths, both directions, stacking), so a new cell is a few lines::

    input_size: int                     # H_in, features of x_t
    hidden_size: int                    # H, features of the output y_t
    init_state(batch_size, *, device=None, dtype=None) -> State
        # the zero state: a (B, S) tensor or a tuple of (B, S_i) tensors
    project_input(x) -> Tensor          # optional: (N, H_in) -> (N, G), the part of the step that
        # depends on x_t only; the runner applies it to all time steps at once (one big matmul).
        # Default: identity.
    step(xp_t, state) -> (y_t, state)   # one step from a projected input row block (B, G)

A cell's matrix products should call :func:`linear` (``F.linear``'s arguments) rather than ``@`` or
``F.linear``: on CPU in float32 it runs the large ones, and their gradients, on oneDNN as the fused LSTM
kernel does, and in the generic engine's time loop a weight used at every step is laid out for oneDNN once
and its gradient comes from a few large products after the loop's backward (:func:`deferred_weight_gradients`).

``cell(input, state=None)`` runs one step on raw input: ``step(project_input(input), state)``; as with torch.nn
cells, ``input`` may be unbatched ``(H_in,)`` (with a state of ``(S,)`` tensors) and the state may be passed as
``hx=``.
Unlike ``torch.nn.LSTMCell``, which returns ``(h, c)``, a cell returns ``(output, state)`` (the same order
as rnnkit's layers); for ``LSTMCell`` the output is ``h`` and the state is ``(h, c)``.

Constructor arguments, parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), gate order
(LSTM: i, f, g, o; GRU: r, z, n) and initialisation (every weight and bias uniform in ``(-1/sqrt(H), 1/sqrt(H))``
in registration order) follow ``torch.nn.RNNCell/LSTMCell/GRUCell``, so their ``state_dict`` loads both ways.
Layer-norm gains start at 1 and shifts at 0.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.errors import ShapeError

State = Tensor | tuple[Tensor, ...]

_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
# oneDNN's own blocked layout for a weight (an opaque "mkldnn" tensor _linear_pointwise accepts as its weight):
# a time loop lays out its recurrent weight once instead of letting oneDNN reorder it inside every product.
_ONEDNN_PACK = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if _ONEDNN_LINEAR is not None else None
# Products of fewer multiply-adds stay on F.linear: below about this size the Python autograd node around the
# oneDNN call costs more than oneDNN saves (measured: a GRU at hidden 128, batch 32, ran 0.8x as fast on oneDNN).
ONEDNN_MIN_MACS = 1 << 22


def _onednn_mm(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T (+ bias)`` by oneDNN: input (N, K), weight (M, K), either may be a transposed view."""
    return _ONEDNN_LINEAR(input, weight, bias, "none", [None], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` on 2-D float32 CPU tensors with the forward and both backward products by oneDNN.

    With a ``loop`` (a :class:`_LoopWeight`, in a time loop) the products use its packed copies of the weight,
    and the weight gradient, when asked for, goes to its record, which returns it through the weight's
    :class:`_CollectWeightGrad` node, instead of being returned here.
    """

    # forward(ctx, ...) rather than forward + setup_context: a time loop calls it at every step, and the
    # split form cost about 10 us more a call (torch.func transforms, which need it, take F.linear instead).
    @staticmethod
    def forward(  # noqa: ANN205
        ctx, input: Tensor, weight: Tensor, bias: Tensor | None, loop: _LoopWeight | None  # noqa: ANN001
    ):
        ctx.loop, ctx.has_bias = loop, bias is not None
        ctx.save_for_backward(input, weight)
        return _onednn_mm(input, weight if loop is None else loop.forward_weight(input), bias)  # (N, M)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:  # noqa: ANN001
        input, weight = ctx.saved_tensors
        needs_input, needs_weight, needs_bias, _ = ctx.needs_input_grad
        loop = ctx.loop
        grad_input = None
        if needs_input:  # (N, K)
            grad_input = _onednn_mm(grad, weight.t() if loop is None else loop.backward_weight(grad))
        grad_weight = None
        if needs_weight and loop is not None and loop.record is not None:
            loop.record.add(grad, input)
        elif needs_weight:
            grad_weight = _weight_grad(grad, input)  # (M, K)
        grad_bias = grad.sum(0) if ctx.has_bias and needs_bias else None  # (M,)
        return grad_input, grad_weight, grad_bias, None


def _weight_grad(grad: Tensor, input: Tensor) -> Tensor:
    """``grad.T @ input`` (M, K) from grad (N, M) and input (N, K), as the transpose of ``input.T @ grad``.

    oneDNN copies a transposed first operand to contiguous memory; transposing the input (K <= M for the
    gate products) instead of the gradient made a (2048, 2048) x (2048, 512) weight gradient 1.2x and a
    (4096, 2048) one 1.8x as fast. The result is a transposed view; autograd lays it out as the weight.
    """
    return _onednn_mm(input.t(), grad.t()).t()


_graph_task_id = getattr(torch._C, "_current_graph_task_id", lambda: 0)  # which backward pass is running
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)  # vmap, grad, ...


class _WeightGradRecord:
    """The (gradient, input) row blocks of one weight's products in a time loop, multiplied in big blocks.

    A recurrent weight is used once per time step; autograd would form its gradient as T small products
    ``grad_t.T @ h_t`` and add them up, T read-modify-writes of the whole (M, K) gradient. The record keeps
    the row blocks instead and multiplies them together, ``cat(grads).T @ cat(inputs)``, once at least
    ``ROWS_ELEMENTS`` elements are waiting (the memory it holds is bounded) and at the end, as cuDNN and
    oneDNN do for their fused layers.
    """

    ROWS_ELEMENTS = 1 << 22  # 16 MiB of float32 rows: 1,638 rows of a (B, 2048) gradient and (B, 512) input

    def __init__(self) -> None:
        self.grads: list[Tensor] = []
        self.inputs: list[Tensor] = []
        self.elements = 0
        self.total: Tensor | None = None  # (M, K): the gradient so far
        self.task: int | None = None  # the backward pass the blocks belong to

    def _in_this_pass(self) -> bool:
        """Forget blocks of an earlier backward pass (one that did not ask for the weight, with retain_graph);
        True if blocks of the current pass are held."""
        task = _graph_task_id()
        if task != self.task:
            self.grads, self.inputs, self.elements, self.total, self.task = [], [], 0, None, task
            return False
        return True

    def add(self, grad: Tensor, input: Tensor) -> None:
        self._in_this_pass()
        self.grads.append(grad)
        self.inputs.append(input)
        self.elements += grad.numel() + input.numel()
        if self.elements >= self.ROWS_ELEMENTS:
            self._flush()

    def _flush(self) -> None:
        if not self.grads:
            return
        part = _weight_grad(_rows(self.grads), _rows(self.inputs))  # (M, K) from (R, M) and (R, K)
        self.grads, self.inputs, self.elements = [], [], 0
        self.total = part if self.total is None else self.total.add_(part)

    def result(self) -> Tensor | None:
        """The weight gradient (M, K) of every recorded product, or None if none was recorded; resets."""
        if not self._in_this_pass():
            return None
        self._flush()
        total, self.total, self.task = self.total, None, None
        return total


def _rows(blocks: list[Tensor]) -> Tensor:
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class _CollectWeightGrad(torch.autograd.Function):
    """Identity on a weight whose uses in a time loop defer their gradient to a :class:`_WeightGradRecord`.

    Its backward runs after every product that used its output (they depend on it), and returns the
    record's gradient as the weight's.
    """

    @staticmethod
    def forward(weight: Tensor, record: _WeightGradRecord) -> Tensor:
        return weight.view_as(weight)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        ctx.record = inputs[1]
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor | None) -> tuple[Tensor | None, None]:  # noqa: ANN001
        deferred = ctx.record.result()
        if grad is None:
            return deferred, None
        return grad if deferred is None else grad + deferred, None


class _Layout:
    """A weight as oneDNN multiplies by it: the plain tensor at the first use, from the second a copy laid out
    once in oneDNN's blocked layout (for ``rows``-row products: a hint oneDNN needs, as without it laying out a
    (512, 2048) weight took 10x as long)."""

    def __init__(self) -> None:
        self.uses = 0
        self.packed: Tensor | None = None

    def __call__(self, plain: Tensor, rows: int) -> Tensor:
        self.uses += 1
        if self.packed is None and self.uses > 1 and _ONEDNN_PACK is not None:
            self.packed = _ONEDNN_PACK(plain.contiguous(), rows)
        return plain if self.packed is None else self.packed


class _LoopWeight:
    """A weight used at every step of a time loop (inside :func:`deferred_weight_gradients`).

    oneDNN multiplies by a weight in a blocked layout of its own; given a plain tensor it reorders the weight
    inside every product, a copy of the whole weight per time step. From its second use in a pass this keeps
    the weight laid out once for the forward products (``W``) and once for the backward ones (``W.T``): a
    (32, 512) x (512, 2048) product then took 150 instead of 260 us. The first use stays unpacked, so a loop
    of one step pays nothing for it. When the weight needs a gradient, ``proxy`` is the identity node that
    collects ``record``'s deferred gradient (:class:`_WeightGradRecord`), else the weight itself.
    """

    def __init__(self, weight: Tensor) -> None:
        self.weight = weight
        self.record = _WeightGradRecord() if weight.requires_grad and torch.is_grad_enabled() else None
        self.proxy = weight if self.record is None else _CollectWeightGrad.apply(weight, self.record)
        self._forward = _Layout()
        self._backward = _Layout()
        self._task: int | None = None  # the backward pass ``_backward`` belongs to

    def forward_weight(self, input: Tensor) -> Tensor:
        """The weight (M, K) to multiply ``input`` (N, K) by."""
        return self._forward(self.weight.detach(), input.size(0))

    def forward_done(self) -> None:
        """The loop is over: free the forward copy (the backward products use their own)."""
        self._forward = _Layout()

    def backward_weight(self, grad: Tensor) -> Tensor:
        """``W.T`` (K, M) to multiply ``grad`` (N, M) by in backward, laid out afresh in each backward pass."""
        task = _graph_task_id()
        if task != self._task:
            self._backward, self._task = _Layout(), task
        return self._backward(self.weight.detach().t(), grad.size(0))


class _Deferral(threading.local):
    """Per thread: the weights of the running time loop, ``id(weight) -> _LoopWeight``."""

    def __init__(self) -> None:
        self.weights: dict[int, _LoopWeight] | None = None


_deferral = _Deferral()


@contextlib.contextmanager
def deferred_weight_gradients() -> Iterator[None]:
    """Inside, :func:`linear` treats each weight as used at every step of a time loop (:class:`_LoopWeight`):
    its gradient is deferred to one record per weight and, from its second use, oneDNN multiplies by a copy
    of it laid out once.

    The generic engine runs its time loop in this context: a weight used at every step then gets its
    gradient from a few large products in backward instead of one small product and one accumulation per
    step. Values and gradients are those of the plain path (up to summation order).
    """
    outer = _deferral.weights
    _deferral.weights = {}
    try:
        yield
    finally:
        for entry in _deferral.weights.values():
            entry.forward_done()
        _deferral.weights = outer


def _loop_weight(weight: Tensor) -> _LoopWeight | None:
    """Inside :func:`deferred_weight_gradients`: the weight's :class:`_LoopWeight`, made at its first use."""
    weights = _deferral.weights
    if weights is None:
        return None
    entry = weights.get(id(weight))
    if entry is None or entry.weight is not weight:
        entry = weights[id(weight)] = _LoopWeight(weight)
    return entry


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(input, weight, bias)`` for a cell's matrix products: input (N, K), weight (M, K), bias (M,).

    On CPU in float32 the products (forward, and the input and weight gradients) go through oneDNN, the
    library torch's fused LSTM kernel uses, instead of the BLAS that ``F.linear`` calls (MKL): the generic
    engine then multiplies at the fused kernel's speed wherever the BLAS is slower for these shapes (on this
    project's AMD EPYC machine MKL's sgemm ran a (64, 512) x (512, 2048) product at about 0.4x oneDNN's
    speed). The result equals ``F.linear``'s to rounding. Any other case (a product of fewer than
    ``ONEDNN_MIN_MACS`` multiply-adds, another dtype or device, input not 2-D, a bias not 1-D, autocast,
    torch.compile/export tracing, torch.func transforms, a torch without oneDNN) is ``F.linear`` itself.
    """
    if (
        _ONEDNN_LINEAR is not None
        and input.dim() == 2
        and input.size(0) * weight.numel() >= ONEDNN_MIN_MACS
        and input.dtype == weight.dtype == torch.float32
        and input.device.type == weight.device.type == "cpu"
        and (bias is None or (bias.dim() == 1 and bias.dtype == torch.float32 and bias.device.type == "cpu"))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not _functorch_active()
    ):
        loop = _loop_weight(weight)
        return _OneDNNLinear.apply(input, weight if loop is None else loop.proxy, bias, loop)
    return F.linear(input, weight, bias)


class RecurrentCell(torch.nn.Module):
    """Base class for one-step recurrent cells (see the module docstring for the protocol).

    Subclasses set ``input_size`` and ``hidden_size`` and implement :meth:`step`; they may override
    :meth:`project_input` (to move the input matmul out of the time loop) and :meth:`init_state` (for a state
    other than one ``(B, H)`` tensor). A cell whose whole-sequence computation has a faster engine than the
    step loop names that layer in ``layer_class`` (minGRU and minLSTM: a parallel scan); it takes the
    keywords of :class:`rnnkit.nn.Recurrent` after the cell argument.
    """

    input_size: int
    hidden_size: int
    layer_class: ClassVar[type[torch.nn.Module] | None] = None

    def init_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state for ``batch_size`` sequences: one ``(B, H)`` tensor unless a subclass says otherwise."""
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def project_input(self, input: Tensor) -> Tensor:
        """Input-only part of the step, ``(N, H_in) -> (N, G)``, applied to all time steps at once."""
        return input

    def step(self, projected: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step from a projected input ``(B, G)``; returns ``(output (B, H), new state)``."""
        raise NotImplementedError

    def _set_sizes(self, input_size: int, hidden_size: int, bias: bool) -> None:
        """Check and store the sizes of a cell with input weights (a ValueError naming the class)."""
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"{type(self).__name__}: input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias

    def forward(
        self, input: Tensor, state: State | None = None, *, hx: State | None = None
    ) -> tuple[Tensor, State]:
        """One step on raw input ``(B, H_in)``, or unbatched ``(H_in,)`` as ``torch.nn`` cells accept.

        Args:
            input: ``(B, H_in)``, or ``(H_in,)`` with an unbatched state (each tensor ``(S,)``).
            state: initial state, default :meth:`init_state`; ``hx`` is torch's name for it (pass one).

        Returns:
            ``(output, state)``: output ``(B, H)`` (``(H,)`` unbatched), state as from :meth:`init_state`.
        """
        name = type(self).__name__
        state = state_argument(name, state, hx)
        if input.dim() == 1 and input.size(0) == self.input_size:
            if state is not None and not all(isinstance(p, Tensor) and p.dim() == 1 for p in state_parts(state)):
                got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in state_parts(state)]
                raise ShapeError(f"{name}: for unbatched 1-D input (H_in,), expected a state of 1-D tensors, got {got}")
            batched = None if state is None else map_state(state, lambda part: part.unsqueeze(0))
            output, final = self(input.unsqueeze(0), batched)
            return output.squeeze(0), map_state(final, lambda part: part.squeeze(0))
        if input.dim() != 2 or input.size(1) != self.input_size:
            raise ShapeError(
                f"{name}: expected input of shape (B, H_in={self.input_size}) or (H_in,), got {tuple(input.shape)}"
            )
        expected = self.init_state(input.size(0), device="meta", dtype=input.dtype)
        if state is None:
            state = self.init_state(input.size(0), device=input.device, dtype=input.dtype)
        else:
            check_state_like(name, state, expected, "(B, S)")
        return self.step(self.project_input(input), state)


def state_argument(name: str, state: State | None, hx: State | None) -> State | None:
    """The initial state passed as rnnkit's ``state`` or torch.nn's ``hx``; a TypeError when both are given."""
    if hx is None:
        return state
    if state is not None:
        raise TypeError(f"{name}: got the initial state twice, as state and as hx; pass one of them")
    return hx


def state_parts(state: State) -> tuple:
    """The tensors of a state (one tensor or a tuple/list of them), as a tuple."""
    return tuple(state) if isinstance(state, tuple | list) else (state,)


def map_state(state: State, fn) -> State:  # noqa: ANN001
    """Apply ``fn`` to every tensor of a state, keeping its structure (a tensor or a tuple)."""
    return tuple(fn(part) for part in state) if isinstance(state, tuple | list) else fn(state)


def check_state_like(name: str, state: State, expected: State, layout: str) -> None:
    """Raise ShapeError unless ``state`` has the structure and shapes of ``expected``."""
    if isinstance(expected, Tensor):
        if not isinstance(state, Tensor):
            raise ShapeError(f"{name}: expected the state as one tensor {layout}, got {type(state).__name__}")
        pairs = [(state, expected)]
    else:
        if not isinstance(state, tuple | list) or len(state) != len(expected):
            raise ShapeError(
                f"{name}: expected the state as a tuple of {len(expected)} tensors {layout}, "
                f"got {type(state).__name__}" + (f" of length {len(state)}" if isinstance(state, tuple | list) else "")
            )
        pairs = list(zip(state, expected))
    for index, (got, want) in enumerate(pairs):
        if not isinstance(got, Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            where = "" if isinstance(expected, Tensor) else f" part {index}"
            raise ShapeError(f"{name}: expected state{where} of shape {tuple(want.shape)} {layout}, got {shape}")


class _WeightedCell(RecurrentCell):
    """Holds torch.nn.*Cell parameters: weight_ih (G*H, H_in), weight_hh (G*H, H), bias_ih, bias_hh (G*H)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_chunks: int,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        self._set_sizes(input_size, hidden_size, bias)
        kw = {"device": device, "dtype": dtype}
        gates = num_chunks * hidden_size
        self.weight_ih = torch.nn.Parameter(torch.empty(gates, input_size, **kw))
        self.weight_hh = torch.nn.Parameter(torch.empty(gates, hidden_size, **kw))
        if bias:
            self.bias_ih = torch.nn.Parameter(torch.empty(gates, **kw))
            self.bias_hh = torch.nn.Parameter(torch.empty(gates, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def _add_layer_norm(
        self, name: str, size: int, device: torch.device | str | None, dtype: torch.dtype | None
    ) -> None:
        self.register_parameter(f"ln_{name}_weight", torch.nn.Parameter(torch.empty(size, device=device, dtype=dtype)))
        self.register_parameter(f"ln_{name}_bias", torch.nn.Parameter(torch.empty(size, device=device, dtype=dtype)))

    def reset_parameters(self) -> None:
        """torch.nn.*Cell init: uniform(-1/sqrt(H), 1/sqrt(H)); layer-norm gains 1, shifts 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, param in self.named_parameters():
            if name.startswith("ln_"):
                torch.nn.init.ones_(param) if name.endswith("_weight") else torch.nn.init.zeros_(param)
            else:
                torch.nn.init.uniform_(param, -bound, bound)

    def _joint_bias(self) -> Tensor | None:
        return None if self.bias_ih is None else self.bias_ih + self.bias_hh

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        return text if self.bias else text + ", bias=False"


class RNNCell(_WeightedCell):
    r"""Elman RNN cell, ``torch.nn.RNNCell``-compatible.

    .. math::
        h' = \phi(W_{ih} x + b_{ih} + W_{hh} h + b_{hh}),\qquad \phi \in \{\tanh, \mathrm{relu}\}

    Args:
        input_size: features of x (H_in).
        hidden_size: features of h (H).
        bias: if False, no ``bias_ih``/``bias_hh``. Default True.
        nonlinearity: ``"tanh"`` or ``"relu"``. Default ``"tanh"``.

    Shape:
        input (B, H_in); state (B, H); output (B, H) (the output is the new state).

    Example::

        cell = RNNCell(8, 16)
        y, h = cell(torch.randn(4, 8))      # y is h, (4, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity
        self._act = torch.tanh if nonlinearity == "tanh" else torch.relu
        self.reset_parameters()

    def project_input(self, input: Tensor) -> Tensor:
        return linear(input, self.weight_ih, self._joint_bias())  # (N, H)

    def step(self, projected: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h = self._act(projected + linear(state, self.weight_hh))
        return h, h

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.nonlinearity == "tanh" else text + ", nonlinearity='relu'"


class LSTMCell(_WeightedCell):
    r"""LSTM cell, ``torch.nn.LSTMCell``-compatible (gate order i, f, g, o).

    .. math::
        (i, f, g, o) &= W_{ih} x + b_{ih} + W_{hh} h + b_{hh} \\
        c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(g) \\
        h' &= \sigma(o) \odot \tanh(c')

    Args:
        input_size: features of x (H_in).
        hidden_size: features of h and c (H).
        bias: if False, no ``bias_ih``/``bias_hh``. Default True.

    Shape:
        input (B, H_in); state ``(h, c)``, each (B, H); output h' (B, H).

    Example::

        cell = LSTMCell(8, 16)
        y, (h, c) = cell(torch.randn(4, 8))  # y is h, (4, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)
        self.reset_parameters()

    def init_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros

    def project_input(self, input: Tensor) -> Tensor:
        return linear(input, self.weight_ih, self._joint_bias())  # (N, 4H)

    def step(self, projected: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        gates = projected + linear(h, self.weight_hh)  # (B, 4H)
        return _lstm_update(gates, c)


def _lstm_update(gates: Tensor, c: Tensor, cell_norm=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """LSTM pointwise part from pre-activations (B, 4H) in order i, f, g, o."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c if cell_norm is None else cell_norm(c))
    return h, (h, c)


class GRUCell(_WeightedCell):
    r"""GRU cell, ``torch.nn.GRUCell``-compatible (gate order r, z, n).

    .. math::
        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' &= (1 - z) \odot n + z \odot h

    Args:
        input_size: features of x (H_in).
        hidden_size: features of h (H).
        bias: if False, no ``bias_ih``/``bias_hh``. Default True.

    Shape:
        input (B, H_in); state (B, H); output h' (B, H).

    Example::

        cell = GRUCell(8, 16)
        y, h = cell(torch.randn(4, 8))       # y is h, (4, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)
        self.reset_parameters()

    def project_input(self, input: Tensor) -> Tensor:
        return linear(input, self.weight_ih, self.bias_ih)  # (N, 3H)

    def step(self, projected: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        hidden = linear(state, self.weight_hh, self.bias_hh)  # (B, 3H)
        return _gru_update(projected, hidden, state)


def _gru_update(projected: Tensor, hidden: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """GRU pointwise part from input and hidden pre-activations, each (B, 3H) in order r, z, n."""
    size = h.size(1)
    r, z = torch.sigmoid(projected[:, : 2 * size] + hidden[:, : 2 * size]).chunk(2, 1)
    n = torch.tanh(projected[:, 2 * size :] + r * hidden[:, 2 * size :])
    h = n + z * (h - n)
    return h, h


class LayerNormLSTMCell(_WeightedCell):
    r"""Layer-normalised LSTM cell (Ba, Kiros & Hinton 2016, "Layer Normalization").

    .. math::
        (i, f, g, o) &= \mathrm{LN}(W_{hh} h; \alpha_{hh}, \beta_{hh})
                        + \mathrm{LN}(W_{ih} x; \alpha_{ih}, \beta_{ih}) + b_{ih} + b_{hh} \\
        c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(g) \\
        h' &= \sigma(o) \odot \tanh(\mathrm{LN}(c'; \alpha_c, \beta_c))

    where :math:`\mathrm{LN}(a; \alpha, \beta) = \alpha \odot (a - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`
    normalises over all features of ``a`` (the whole 4H pre-activation vector for the two projections, H for
    the cell). The paper's single bias b is kept as torch's pair ``bias_ih + bias_hh`` so that parameter names
    match ``LSTMCell``; the gate order is torch's (i, f, g, o).

    Args:
        input_size: features of x (H_in).
        hidden_size: features of h and c (H).
        bias: if False, no ``bias_ih``/``bias_hh`` (the layer-norm shifts remain). Default True.
        eps: added to the variance in LN. Default 1e-5.

    Parameters: ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` as LSTMCell, plus ``ln_ih_weight``,
    ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (4H) and ``ln_cell_weight``, ``ln_cell_bias`` (H).

    Shape:
        input (B, H_in); state ``(h, c)``, each (B, H); output h' (B, H).

    Example::

        cell = LayerNormLSTMCell(8, 16)
        y, (h, c) = cell(torch.randn(4, 8))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)
        self.eps = eps
        for name, size in (("ih", 4 * hidden_size), ("hh", 4 * hidden_size), ("cell", hidden_size)):
            self._add_layer_norm(name, size, device, dtype)
        self.reset_parameters()

    def init_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros

    def project_input(self, input: Tensor) -> Tensor:
        projected = F.layer_norm(
            linear(input, self.weight_ih), (4 * self.hidden_size,), self.ln_ih_weight, self.ln_ih_bias, self.eps
        )  # (N, 4H)
        bias = self._joint_bias()
        return projected if bias is None else projected + bias

    def step(self, projected: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        hidden = F.layer_norm(
            linear(h, self.weight_hh), (4 * self.hidden_size,), self.ln_hh_weight, self.ln_hh_bias, self.eps
        )  # (B, 4H)
        return _lstm_update(projected + hidden, c, self._cell_norm)

    def _cell_norm(self, c: Tensor) -> Tensor:
        return F.layer_norm(c, (self.hidden_size,), self.ln_cell_weight, self.ln_cell_bias, self.eps)


class LayerNormGRUCell(_WeightedCell):
    r"""Layer-normalised GRU cell: Ba et al. 2016's recipe (normalise each projection separately) on torch's GRU.

    .. math::
        a &= \mathrm{LN}(W_{ih} x; \alpha_{ih}, \beta_{ih}) + b_{ih},\qquad
        u = \mathrm{LN}(W_{hh} h; \alpha_{hh}, \beta_{hh}) + b_{hh} \\
        r &= \sigma(a_r + u_r),\quad z = \sigma(a_z + u_z),\quad n = \tanh(a_n + r \odot u_n) \\
        h' &= (1 - z) \odot n + z \odot h

    LN normalises over the whole 3H projection (see :class:`LayerNormLSTMCell` for the definition); the
    reset gate multiplies the normalised ``u_n``, as torch's GRU multiplies ``W_{hn} h + b_{hn}``.

    Args:
        input_size: features of x (H_in).
        hidden_size: features of h (H).
        bias: if False, no ``bias_ih``/``bias_hh`` (the layer-norm shifts remain). Default True.
        eps: added to the variance in LN. Default 1e-5.

    Parameters: as GRUCell plus ``ln_ih_weight``, ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (3H).

    Shape:
        input (B, H_in); state (B, H); output h' (B, H).

    Example::

        cell = LayerNormGRUCell(8, 16)
        y, h = cell(torch.randn(4, 8))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)
        self.eps = eps
        for name in ("ih", "hh"):
            self._add_layer_norm(name, 3 * hidden_size, device, dtype)
        self.reset_parameters()

    def project_input(self, input: Tensor) -> Tensor:
        projected = F.layer_norm(
            linear(input, self.weight_ih), (3 * self.hidden_size,), self.ln_ih_weight, self.ln_ih_bias, self.eps
        )  # (N, 3H)
        return projected if self.bias_ih is None else projected + self.bias_ih

    def step(self, projected: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.layer_norm(
            linear(state, self.weight_hh), (3 * self.hidden_size,), self.ln_hh_weight, self.ln_hh_bias, self.eps
        )  # (B, 3H)
        if self.bias_hh is not None:
            hidden = hidden + self.bias_hh
        return _gru_update(projected, hidden, state)
