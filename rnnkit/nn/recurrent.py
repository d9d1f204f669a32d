"""Generic recurrent runner: any cell over time, with lengths, both directions, stacking and initial state.

The engine works on a *packed* time-major batch, as ``torch.nn.utils.rnn.PackedSequence`` stores it: the
sequences are sorted by length (longest first) and the rows of time step t are the first ``batch_sizes[t]``
sequences. A forward scan therefore shrinks the batch as sequences end (their state is kept from their last
valid step) and a reverse scan grows it (a sequence joins at its own last step with its initial state), so
no step computes padding and no masking is needed. Equal lengths are the special case ``batch_sizes = [B] * T``.
Each cell's input projection runs on all time steps at once; the Python loop only does the recurrent part
(for LSTM: one matrix product and the pointwise gates per step). On CPU at hidden 512 a training step is
almost all matrix products (the input projection, then per step the recurrent product and, in backward, its
input gradient, and the weight gradients); the built-in cells run them on oneDNN through
:func:`rnnkit.nn.cells.linear`, as torch's fused LSTM kernel does, with the recurrent weight laid out for
oneDNN once per loop rather than at every product, and the recurrent weight's gradient is formed from a few
large products after the loop's backward instead of one small product per step
(:func:`rnnkit.nn.cells.deferred_weight_gradients`). The loop then trains at about 0.80-0.88x that kernel's
speed at hidden 512 when the layer's input needs no gradient and 0.69-0.75x when it does (the fused kernel
computes that gradient either way), at batch 32-64 (2 threads, ``benchmarks/layers.py``, with training's
allocator setting); at hidden 128 the per-step Python and autograd overhead dominates (0.3-0.4x).
TorchScript is not used: the per-step work is a handful of ATen calls whose autograd graph scripting does not
shrink on CPU; nor is torch.compile (a compiled LSTM update step: 152 against 165 us forward + backward at
batch 32, hidden 512; a compiled 64-step loop: 2.5x slower than torch's kernel). On GPU the loop is
launch-bound (about 0.1x cuDNN), which is why the layers use the fused kernels wherever they can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.errors import ShapeError
from rnnkit.nn.cells import (
    State,
    check_state_like,
    deferred_weight_gradients,
    map_state,
    state_argument,
    state_parts,
)
from rnnkit.nn.dropout import check_probability, locked_dropout_mask, weight_drop


def _parts(state: State) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _like(template: State, parts: Sequence[Tensor]) -> State:
    return parts[0] if isinstance(template, Tensor) else tuple(parts)


def scan(cell: torch.nn.Module, projected: Sequence[Tensor], state: State, batch_sizes: Sequence[int],
         reverse: bool = False) -> tuple[list[Tensor], State]:
    """Run ``cell.step`` over packed time steps.

    Args:
        cell: a cell following the protocol of :mod:`rnnkit.nn.cells`.
        projected: per time step, the projected input rows ``(batch_sizes[t], G)``.
        state: initial state, rows for all ``batch_sizes[0]`` sequences (sorted by length, longest first).
        batch_sizes: active sequences per step, non-increasing.
        reverse: run from the last step to the first; each sequence starts at its own last valid step.

    Returns:
        ``(outputs, final)``: per step the outputs ``(batch_sizes[t], H)`` in time order, and each sequence's
        state after its last processed step (rows as in ``state``).

    The loop runs in :func:`rnnkit.nn.cells.deferred_weight_gradients`: the weight gradient of a product the
    cell makes with :func:`rnnkit.nn.cells.linear` at every step comes from a few large products in backward.
    """
    with deferred_weight_gradients():
        return _scan(cell.step, projected, state, batch_sizes, reverse)


def _scan(
    step: Callable[[Tensor, State], tuple[Tensor, State]],
    projected: Sequence[Tensor],
    state: State,
    batch_sizes: Sequence[int],
    reverse: bool,
) -> tuple[list[Tensor], State]:
    steps = len(projected)
    outputs: list[Tensor] = [projected[0]] * steps
    if not reverse:
        finished: list[tuple[Tensor, ...]] = []
        active = batch_sizes[0]
        for t in range(steps):
            size = batch_sizes[t]
            if size < active:  # sequences size..active-1 ended at t-1: keep their state
                parts = _parts(state)
                finished.append(tuple(p[size:active] for p in parts))
                state = _like(state, [p[:size] for p in parts])
                active = size
            outputs[t], state = step(projected[t], state)
        if not finished:
            return outputs, state
        finished.append(_parts(state))
        return outputs, _like(state, [torch.cat(rows[::-1]) for rows in zip(*finished)])
    initial = _parts(state)
    active = batch_sizes[-1]
    state = _like(state, [p[:active] for p in initial])
    for t in range(steps - 1, -1, -1):
        size = batch_sizes[t]
        if size > active:  # sequences active..size-1 start here, at their last valid step
            state = _like(state, [torch.cat((p, p0[active:size])) for p, p0 in zip(_parts(state), initial)])
            active = size
        outputs[t], state = step(projected[t], state)
    return outputs, state


def run_stack(
    cells: Sequence[torch.nn.Module],
    data: Tensor,
    batch_sizes: list[int],
    states: Sequence[State],
    num_directions: int,
    between: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, list[State]]:
    """Run stacked (optionally bidirectional) cells over packed data.

    Args:
        cells: ``num_layers * num_directions`` cells, layer-major (``l0, l0_reverse, l1, ...``).
        data: packed input rows ``(N, H_in)``, N = sum(batch_sizes).
        batch_sizes: active sequences per time step (python ints, non-increasing).
        states: initial state per cell, rows sorted as the packed batch.
        num_directions: 1 or 2; the reverse cell reads each sequence backwards within its length.
        between: applied to each layer's output except the last (inter-layer dropout).

    Returns:
        ``(output, finals)``: packed output ``(N, D*H)`` of the last layer and the final state of every cell.
    """
    uniform = batch_sizes[0] == batch_sizes[-1]
    num_layers = len(cells) // num_directions
    finals: list[State] = []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            cell = cells[index]
            projected = cell.project_input(data) if hasattr(cell, "project_input") else data  # (N, G)
            if uniform:
                steps = projected.view(len(batch_sizes), batch_sizes[0], -1).unbind(0)  # T x (B, G)
            else:
                steps = projected.split(batch_sizes)
            ys, final = scan(cell, steps, states[index], batch_sizes, reverse=direction == 1)
            outputs.append(torch.cat(ys))  # (N, H)
            finals.append(final)
        data = outputs[0] if num_directions == 1 else torch.cat(outputs, 1)  # (N, D*H)
        if between is not None and layer < num_layers - 1:
            data = between(data)
    return data, finals


class CellStack(torch.nn.Module):
    """Cells run by :func:`run_stack`, as one module so that ``torch.func.functional_call`` can swap their
    tensors (weight dropout). Parameter names are ``cells.{k}.{name}``."""

    def __init__(self, cells: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.cells = torch.nn.ModuleList(cells)

    def forward(self, data, sizes, states, num_directions, between):  # noqa: ANN001, ANN201
        return run_stack(self.cells, data, sizes, states, num_directions, between)


def hidden_weight_names(module: torch.nn.Module) -> list[str]:
    """Names of the hidden-to-hidden weights of ``module``'s parameters: those whose own name starts with
    ``weight_hh`` (torch.nn's name), the matrices weight dropout acts on."""
    return [name for name, _ in module.named_parameters() if name.rpartition(".")[2].startswith("weight_hh")]


def check_sequence_input(
    name: str, input: Tensor, input_size: int, batch_first: bool, lengths: Tensor | None
) -> tuple[int, int, Tensor | None]:
    """Validate a padded batch (B >= 0, T >= 1) and its lengths; return ``(B, T, lengths as CPU int64 or None)``."""
    layout = "(B, T, H_in)" if batch_first else "(T, B, H_in)"
    if input.dim() != 3:
        raise ShapeError(
            f"{name}: expected a 3-D input {layout} or an unbatched 2-D input (T, H_in) with H_in={input_size}, "
            f"got shape {tuple(input.shape)}"
        )
    if input.size(-1) != input_size:
        raise ShapeError(
            f"{name}: expected input {layout} with H_in={input_size}, got shape {tuple(input.shape)}"
        )
    batch, steps = (input.size(0), input.size(1)) if batch_first else (input.size(1), input.size(0))
    if steps < 1:
        raise ShapeError(f"{name}: expected at least one time step, got {tuple(input.shape)}")
    if lengths is None:
        return batch, steps, None
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.numel() != batch:
        got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ShapeError(f"{name}: expected lengths of shape ({batch},), one per sequence, got {got}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ShapeError(f"{name}: expected integer lengths, got dtype {lengths.dtype}")
    lengths_cpu = lengths.to("cpu", torch.int64)
    if batch == 0:
        return batch, steps, lengths_cpu
    low, high = int(lengths_cpu.min()), int(lengths_cpu.max())
    if low < 1 or high > steps:
        raise ShapeError(f"{name}: expected every length in [1, T={steps}], got min {low} and max {high}")
    return batch, steps, lengths_cpu


def run_unbatched(
    module: torch.nn.Module, input: Tensor, state: State | None, lengths: Tensor | None
) -> tuple[Tensor, State]:
    """Run a layer on unbatched input ``(T, H_in)`` as a batch of one, as torch.nn does.

    The state, if given, is unbatched too (each tensor ``(L*D, S)``); output ``(T, D*H)`` and the final
    state come back without the batch dimension.
    """
    name = type(module).__name__
    if state is not None and not all(isinstance(p, Tensor) and p.dim() == 2 for p in state_parts(state)):
        got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in state_parts(state)]
        raise ShapeError(
            f"{name}: for unbatched 2-D input (T, H_in), expected a 2-D state (num_layers * num_directions, H), "
            f"got {got}"
        )
    batch_dim = 0 if module.batch_first else 1
    batched = None if state is None else map_state(state, lambda part: part.unsqueeze(1))
    output, final = module(input.unsqueeze(batch_dim), batched, lengths)
    return output.squeeze(batch_dim), map_state(final, lambda part: part.squeeze(1))


class SequenceBatch:
    """A right-padded batch seen as time-major data: ``(T, B, F)`` or, with lengths, packed ``(N, F)``.

    Holds what is needed to go back: sort order of the packed sequences and the padded length. A batch whose
    lengths are all T is never packed; with ``pack=False`` a variable-length batch stays padded ``(T, B, F)``
    (its padding zeroed) and ``lengths`` holds its lengths, for runners that handle them themselves.
    """

    def __init__(self, input: Tensor, lengths_cpu: Tensor | None, batch_first: bool, pack: bool = True) -> None:
        x = input.transpose(0, 1) if batch_first else input  # (T, B, F)
        self.steps, self.batch = x.size(0), x.size(1)
        self.batch_first = batch_first
        self._rows: Tensor | None = None
        self.packed_input = False
        self.lengths: Tensor | None = None
        if lengths_cpu is not None and bool((lengths_cpu == self.steps).all()):
            lengths_cpu = None  # nothing is padded: the plain batch, no packing
        if lengths_cpu is None or not pack:
            self.data = x
            self.batch_sizes: Tensor | None = None
            self.sizes = [self.batch] * self.steps
            self.sorted_indices = self.unsorted_indices = None
            if lengths_cpu is not None:  # padded (T, B, F) kept as it is, with its lengths
                self.lengths = lengths_cpu
                steps = torch.arange(self.steps, device=x.device)
                self.valid = steps[:, None] < lengths_cpu.to(x.device)  # (T, B)
                self.data = torch.where(self.valid[..., None], x, 0)  # padding never reaches a kernel
        else:
            packed = pack_padded_sequence(x, lengths_cpu, enforce_sorted=False)
            self.data = packed.data  # (N, F)
            self.batch_sizes = packed.batch_sizes
            self.sizes = packed.batch_sizes.tolist()
            self.sorted_indices = packed.sorted_indices
            self.unsorted_indices = packed.unsorted_indices

    @classmethod
    def from_packed(cls, packed: PackedSequence) -> SequenceBatch:
        """Wrap a ``PackedSequence``; :meth:`restore` then returns a ``PackedSequence``."""
        seq = cls.__new__(cls)
        seq.data, seq.batch_sizes = packed.data, packed.batch_sizes
        seq.sizes = packed.batch_sizes.tolist()
        seq.steps, seq.batch = len(seq.sizes), seq.sizes[0]
        seq.batch_first = False
        seq.sorted_indices, seq.unsorted_indices = packed.sorted_indices, packed.unsorted_indices
        seq._rows = None
        seq.lengths = None
        seq.packed_input = True
        return seq

    @property
    def packed(self) -> bool:
        return self.batch_sizes is not None

    def flat(self, data: Tensor) -> Tensor:
        """Time-major rows ``(N, F)`` of ``(T, B, F)`` or packed data."""
        return data if data.dim() == 2 else data.reshape(-1, data.size(-1))

    def sort(self, state: Tensor) -> Tensor:
        """Reorder the batch dimension (dim 1) of a stacked state into packed order."""
        return state if self.sorted_indices is None else state.index_select(1, self.sorted_indices)

    def unsort(self, state: Tensor) -> Tensor:
        return state if self.unsorted_indices is None else state.index_select(1, self.unsorted_indices)

    def locked_dropout(self, data: Tensor, p: float) -> Tensor:
        """Multiply by one dropout mask per sequence and feature, the same at every time step."""
        mask = locked_dropout_mask(self.batch, data.size(-1), p, device=data.device, dtype=data.dtype)  # (B, F)
        if data.dim() == 3:
            return data * mask  # (T, B, F)
        if self._rows is None:  # packed row -> sequence (in packed order)
            self._rows = torch.cat([torch.arange(size, device=data.device) for size in self.sizes])
        return data * mask[self._rows]  # (N, F)

    def restore(self, data: Tensor) -> Tensor | PackedSequence:
        """Padded output ``(B, T, F)`` or ``(T, B, F)`` from time-major data; zero at padding."""
        if self.batch_sizes is None:
            out = data.reshape(self.steps, self.batch, -1)  # (T, B, F)
            if self.lengths is not None:
                out = torch.where(self.valid[..., None], out, 0)
        else:
            packed = PackedSequence(data, self.batch_sizes, self.sorted_indices, self.unsorted_indices)
            if self.packed_input:
                return packed
            out = pad_packed_sequence(packed, total_length=self.steps)[0]  # (T, B, F)
        return out.transpose(0, 1) if self.batch_first else out


class Recurrent(torch.nn.Module):
    r"""Run any cell over sequences: lengths, stacking, both directions, initial state (Keras' ``RNN(cell)``).

    Layer ``l`` direction ``d`` uses cell ``cells[l * D + d]``. The forward direction reads each sequence
    from step 0 to its last valid step; the reverse direction reads it from its last valid step back to 0,
    and its output at step t lands at step t. Layer ``l > 0`` reads the concatenated ``(B, T, D*H)`` outputs
    of layer ``l - 1``, after ``dropout`` in training. It equals the slow loop::

        for each layer l, direction d, sequence b:
            state = state0[l*D + d, b]
            for t in (range(len_b) if d == 0 else reversed(range(len_b))):
                y[b, t], state = cell(x[b, t], state)
            final[l*D + d, b] = state
        # outputs at t >= len_b are exactly 0

    Args:
        cell: a cell class or factory called as ``cell(input_size, hidden_size)`` for every layer and
            direction (e.g. ``LSTMCell`` or ``functools.partial(LayerNormGRUCell, eps=1e-6)``); or a list of
            ``num_layers * D`` built cells (layer-major); or one built cell (one layer, one direction).
        input_size: H_in, needed with a factory.
        hidden_size: H, needed with a factory.
        num_layers: stacked layers. Default 1.
        bidirectional: add a reverse direction per layer. Default False.
        batch_first: input/output are ``(B, T, F)`` if True (the default here, unlike torch.nn), else
            ``(T, B, F)``. States are always ``(L*D, B, S)``.
        dropout: dropout on each layer's output except the last, in training. Default 0.
        variational_dropout: if True, that dropout uses one mask per sequence, constant over time.
        weight_dropout: DropConnect on every hidden-to-hidden weight (each cell parameter whose name starts
            with ``weight_hh``): one mask per matrix per training forward; the parameters stay the raw
            weights. A cell without such weights is a ValueError when ``weight_dropout > 0``. Default 0.
        input_dropout: locked dropout on the input features, in training. Default 0.
        output_dropout: locked dropout on the last layer's output features, in training. Default 0.

    Random draws in a training forward come in the order of :class:`rnnkit.nn.LSTM`'s: weight-dropout masks
    (cells in order), the input mask, between-layer masks, the output mask.

    Every cell must share ``hidden_size`` and state structure (so the final states stack), and cells of layer
    ``l > 0`` must take ``D * hidden_size`` inputs.

    Shape:
        input: (B, T, H_in) (batch_first) or (T, B, H_in); lengths: (B,) integers in [1, T], any order and
        device; state: the cell's state with each tensor stacked to (L*D, B, S) (a tensor or tuple of
        tensors). Output (B, T, D*H) zero past each length; final state in the same layout as ``state``.

    Example::

        rnn = Recurrent(LSTMCell, 8, 16, num_layers=2, bidirectional=True)
        out, (h, c) = rnn(torch.randn(4, 10, 8), lengths=torch.tensor([10, 3, 7, 1]))
        out.shape, h.shape   # (4, 10, 32), (4, 4, 16)
    """

    def __init__(
        self,
        cell: torch.nn.Module | Sequence[torch.nn.Module] | Callable[[int, int], torch.nn.Module],
        input_size: int | None = None,
        hidden_size: int | None = None,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = True,
        dropout: float = 0.0,
        variational_dropout: bool = False,
        weight_dropout: float = 0.0,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        directions = 2 if bidirectional else 1
        if num_layers < 1:
            raise ValueError(f"Recurrent: num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Recurrent: dropout must be in [0, 1), got {dropout}")
        self.weight_dropout = check_probability("Recurrent: weight_dropout", weight_dropout)
        self.input_dropout = check_probability("Recurrent: input_dropout", input_dropout)
        self.output_dropout = check_probability("Recurrent: output_dropout", output_dropout)
        if isinstance(cell, torch.nn.Module) and not isinstance(cell, torch.nn.ModuleList):
            if num_layers != 1 or bidirectional:
                raise ValueError(
                    "Recurrent: one built cell serves one layer and one direction; pass a factory or a list "
                    f"of {num_layers * directions} cells for num_layers={num_layers}, bidirectional={bidirectional}"
                )
            cells = [cell]
        elif isinstance(cell, Sequence | torch.nn.ModuleList):
            cells = list(cell)
            if len(cells) != num_layers * directions:
                raise ValueError(
                    f"Recurrent: expected num_layers * num_directions = {num_layers * directions} cells, "
                    f"got {len(cells)}"
                )
        elif callable(cell):
            if input_size is None or hidden_size is None:
                raise ValueError("Recurrent: a cell factory needs input_size and hidden_size")
            cells = [
                cell(input_size if layer == 0 else directions * hidden_size, hidden_size)
                for layer in range(num_layers)
                for _ in range(directions)
            ]
        else:
            raise ValueError(f"Recurrent: cell must be a cell, a list of cells or a factory, got {cell!r}")
        for index, c in enumerate(cells):
            missing = [a for a in ("input_size", "hidden_size", "step", "init_state") if not hasattr(c, a)]
            if missing:
                raise ValueError(f"Recurrent: cell {index} ({type(c).__name__}) lacks {', '.join(missing)}")
        hidden = cells[0].hidden_size
        for index, c in enumerate(cells):
            want_in = (input_size if input_size is not None else cells[0].input_size) if index < directions else (
                directions * hidden
            )
            if c.hidden_size != hidden or c.input_size != want_in:
                raise ValueError(
                    f"Recurrent: cell {index} has (input_size, hidden_size) = ({c.input_size}, {c.hidden_size}), "
                    f"expected ({want_in}, {hidden})"
                )
        self.cells = torch.nn.ModuleList(cells)
        self.input_size = cells[0].input_size
        self.hidden_size = hidden
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = directions
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.variational_dropout = variational_dropout
        self.last_engine: str | None = None
        self.__dict__["_stack"] = CellStack(cells)  # the same cells, kept out of _modules (no second copy
        self._hidden_weights = hidden_weight_names(self._stack)  # in state_dict); ["cells.0.weight_hh", ...]
        if self.weight_dropout > 0 and not self._hidden_weights:
            raise ValueError(
                f"Recurrent: weight_dropout needs hidden-to-hidden weights (parameters named weight_hh*); "
                f"{type(cells[0]).__name__} has none"
            )

    def init_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state in the stacked layout ``(L*D, B, S)``."""
        per_cell = [c.init_state(batch_size, device=device, dtype=dtype) for c in self.cells]
        return _like(per_cell[0], [torch.stack(parts) for parts in zip(*map(_parts, per_cell))])

    def forward(
        self, input: Tensor, state: State | None = None, lengths: Tensor | None = None, *, hx: State | None = None
    ) -> tuple[Tensor, State]:
        """Run the stack; see the class docstring for shapes. Returns ``(output, final state)``.

        ``hx`` is torch.nn's name for ``state`` (pass one). Unbatched input ``(T, H_in)`` takes and returns a
        state without the batch dimension, ``(L*D, S)``; a batch of zero sequences returns empty tensors.
        """
        name = type(self).__name__
        state = state_argument(name, state, hx)
        if input.dim() == 2:
            return run_unbatched(self, input, state, lengths)
        batch, _, lengths_cpu = check_sequence_input(name, input, self.input_size, self.batch_first, lengths)
        expected = self.init_state(batch, device="meta", dtype=input.dtype)
        if state is None:
            state = self.init_state(batch, device=input.device, dtype=input.dtype)
        else:
            check_state_like(name, state, expected, "(num_layers * num_directions, B, S)")
        if batch == 0:
            return input.new_zeros(*input.shape[:2], self.num_directions * self.hidden_size), state
        seq = SequenceBatch(input, lengths_cpu, self.batch_first)
        parts = [seq.sort(p) for p in _parts(state)]  # each (L*D, B, S)
        states = [_like(state, [p[k] for p in parts]) for k in range(len(self.cells))]
        training = self.training
        dropped = {}
        if training and self.weight_dropout > 0:
            weights = dict(self._stack.named_parameters())
            dropped = {name: weight_drop(weights[name], self.weight_dropout) for name in self._hidden_weights}
        data = seq.data
        if training and self.input_dropout > 0:
            data = seq.locked_dropout(data, self.input_dropout)
        between = None
        if training and self.dropout > 0:
            if self.variational_dropout:
                between = lambda d: seq.locked_dropout(d, self.dropout)
            else:
                between = lambda d: F.dropout(d, self.dropout, True)
        args = (seq.flat(data), seq.sizes, states, self.num_directions, between)
        out, finals = torch.func.functional_call(self._stack, dropped, args) if dropped else self._stack(*args)
        if training and self.output_dropout > 0:
            out = seq.locked_dropout(out, self.output_dropout)
        final_parts = [seq.unsort(torch.stack(ps)) for ps in zip(*map(_parts, finals))]  # each (L*D, B, S)
        self.last_engine = "generic"
        return seq.restore(out), _like(state, final_parts)

    def extra_repr(self) -> str:
        text = f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, batch_first={self.batch_first}"
        if self.dropout:
            text += f", dropout={self.dropout}, variational_dropout={self.variational_dropout}"
        for option in ("weight_dropout", "input_dropout", "output_dropout"):
            if getattr(self, option):
                text += f", {option}={getattr(self, option)}"
        return text
