r"""Recurrent layers RNN, LSTM and GRU: torch.nn-compatible, with lengths, regularisers and two engines.

Each layer holds its parameters exactly as ``torch.nn.RNN/LSTM/GRU`` does (it subclasses
``torch.nn.RNNBase``): the same constructor arguments and defaults, the same names (``weight_ih_l0``,
``weight_hh_l1_reverse``, ...), shapes, initialisation and ``state_dict``, so a state dict loads both ways.

Engines. ``"fused"`` calls torch's own kernels (``torch._VF.lstm/gru/rnn_tanh/rnn_relu``: cuDNN on GPU,
the native/oneDNN path on CPU), the ones ``torch.nn`` calls. ``"generic"`` runs the matching cell of
:mod:`rnnkit.nn.cells` through :func:`rnnkit.nn.recurrent.run_stack` (a Python time loop with the input
projection hoisted out of it). ``engine="auto"`` (default) uses the fused kernels unless ``layer_norm=True``;
weight dropout and locked dropout stay on the fused kernels (the weight or the activations are dropped,
then the kernel is called, as AWD-LSTM does). ``layer.last_engine`` names the engine of the last forward.
Both engines agree with ``torch.nn`` to rounding on CPU and in float64 (tests pin 1e-5 relative in float32,
1e-10 in float64). On GPU, float32 cuDNN kernels use TF32 by default (``torch.backends.cudnn.allow_tf32``)
while the generic engine's matmuls do not, so there the two differ at about 1e-3.

Lengths. A batch whose ``lengths`` are all T runs exactly as one without lengths. Otherwise the generic engine
and the GPU pack the batch (cuDNN runs packed batches natively); on CPU the fused engine keeps it padded and
calls the plain kernels (torch's packed CPU kernels are a per-step loop, about 3x slower), sorted by length and
cut into a few time segments, each run on the sequences still alive at its start, so that little of the padding
is computed: see ``_run_padded`` and ``_segments``. Either way the results are torch's packed results to
rounding.

Extra keyword-only options (all off by default, active in ``train()``, identity in ``eval()``):

* ``weight_dropout=p``: DropConnect on every ``weight_hh``: one mask per matrix per forward pass, the
  registered parameter stays the raw weight (so ``state_dict`` is unchanged). On GPU, cuDNN copies the
  dropped weights into its flat buffer at each call (one copy of the weights per forward).
* ``input_dropout=p`` / ``output_dropout=p``: locked dropout on the layer's input / last layer's output
  features: one mask per sequence and feature, constant over time.
* ``variational_dropout=True``: the between-layer ``dropout`` uses one mask per sequence and feature,
  constant over time, instead of torch's fresh mask per element (the fused engine then runs layer by layer;
  on GPU in evaluation too, with each layer's weights in a cuDNN buffer of their own).
* ``layer_norm=True`` (LSTM and GRU): :class:`~rnnkit.nn.cells.LayerNormLSTMCell` /
  :class:`~rnnkit.nn.cells.LayerNormGRUCell` per layer; extra parameters ``ln_ih_weight_l0``,
  ``ln_ih_bias_l0``, ``ln_hh_weight_l0``, ... (LSTM also ``ln_cell_*``); generic engine only.

Random draws in a training forward come in this order: weight-dropout masks (``weight_hh_l0``,
``weight_hh_l0_reverse``, ``weight_hh_l1``, ...), the input mask, between-layer masks, the output mask.
The between-layer masks of a variable-length batch are drawn on the length-sorted padded batch by the fused
engine on CPU and on the packed (length-sorted) batch elsewhere: the same distribution, not the same draws.
"""

from __future__ import annotations

import bisect
import itertools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnkit.errors import ShapeError
from rnnkit.nn.cells import (
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    RNNCell,
    state_argument,
)
from rnnkit.nn.dropout import check_probability, weight_drop
from rnnkit.nn.recurrent import CellStack, SequenceBatch, check_sequence_input, run_unbatched

State = Tensor | tuple[Tensor, Tensor]


def _cudnn_flattenable(weights: list, names: int) -> bool:
    """torch.nn's conditions for flattening: every weight there, CUDA tensors of one dtype that cuDNN accepts,
    none aliasing another, and flattening enabled."""
    if len(weights) != names or not all(isinstance(w, Tensor) for w in weights):
        return False
    dtype = weights[0].dtype
    if not all(w.dtype == dtype and w.is_cuda and torch.backends.cudnn.is_acceptable(w) for w in weights):
        return False
    return len({w.data_ptr() for w in weights}) == len(weights) and torch._use_cudnn_rnn_flatten_weight()


# torch.compile runs torch.nn.LSTM's kernel outside the graph (Dynamo refuses to trace torch.nn RNN modules);
# traced inside one, the LSTM kernel's backward breaks AOTAutograd in torch 2.13 ("expected all
# tensors_saved_with_vc_check to be Tensors"), so it stays a graph break here too. torch.export still records it.
_KERNELS = {
    "LSTM": torch.compiler.disable(torch._VF.lstm),
    "GRU": torch._VF.gru,
    "RNN_TANH": torch._VF.rnn_tanh,
    "RNN_RELU": torch._VF.rnn_relu,
}
ENGINES = ("auto", "fused", "generic")

# The cost model of :func:`_segments`, in row-steps (one sequence through one time step of a plain kernel).
_STEP_COST = 4  # what a time step costs beyond its rows (per-step launches, small-matrix overheads), in rows
_CALL_COST = 64  # what one more kernel call costs (its setup, forward and backward, the carried state)
_REDO_COST = 1  # LSTM: what a step costs again for a sequence ending inside a call (its final c, _final_cell)
_MAX_BOUNDARIES = 32  # candidate segment boundaries considered


@torch.compiler.disable  # plain Python on the lengths: torch.compile runs it as it is, no graph to trace
def _segments(lengths: list[int], redo: float = 0) -> list[tuple[int, int, int]]:
    """Time segments for a batch with ``lengths`` sorted longest first: ``(start, stop, rows)`` tiling
    ``[0, lengths[0])``, ``rows`` the number of sequences longer than ``start`` (a prefix of the batch).

    One plain kernel call over the padded batch does ``B * T`` row-steps (one sequence through one time step)
    where ``sum(lengths)`` are needed (twice as many at lengths uniform in [1, T]); one call per distinct
    length does only the needed ones but pays a fixed price per call and per step. The boundaries are chosen
    among the lengths to minimise the modelled cost ``sum((stop - start) * (rows + _STEP_COST) + _CALL_COST
    + redo * (the steps in the segment of the sequences that end strictly inside it))`` (``redo``: the LSTM's
    recomputed final cell state, else 0), exactly, by dynamic programming over at most ``_MAX_BOUNDARIES``
    candidates (the distinct lengths, thinned evenly when there are more): cheap, deterministic, from the
    lengths on CPU. Equal lengths: one segment.
    """
    distinct = sorted(set(lengths))
    if len(distinct) > _MAX_BOUNDARIES:
        distinct = [distinct[(i + 1) * len(distinct) // _MAX_BOUNDARIES - 1] for i in range(_MAX_BOUNDARIES)]
    ascending = lengths[::-1]
    total = [0, *itertools.accumulate(ascending)]  # total[k]: the sum of the k shortest lengths
    points = [0, *distinct]
    longer = [bisect.bisect_right(ascending, p) for p in points]  # the rows up to a point, then those longer
    shorter = [bisect.bisect_left(ascending, p) for p in points]  # the rows shorter than a point
    best = [0.0] + [math.inf] * len(distinct)  # the cheapest cost of segments tiling [0, points[j])
    previous = [0] * len(points)
    for j in range(1, len(points)):
        for i in range(j):
            start, a, b = points[i], longer[i], shorter[j]  # ascending[a:b] end strictly inside
            inside = total[b] - total[a] - (b - a) * start if b > a else 0
            alive = len(lengths) - a
            cost = best[i] + (points[j] - start) * (alive + _STEP_COST) + _CALL_COST + redo * inside
            if cost < best[j]:
                best[j], previous[j] = cost, i
    segments, j = [], len(points) - 1
    while j:
        i = previous[j]
        segments.append((points[i], points[j], len(lengths) - longer[i]))
        j = i
    return segments[::-1]


class _RecurrentLayer(torch.nn.RNNBase):
    """Shared body of RNN, LSTM and GRU."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        *,
        proj_size: int = 0,
        weight_dropout: float,
        input_dropout: float,
        output_dropout: float,
        variational_dropout: bool,
        layer_norm: bool,
        engine: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        name = type(self).__name__
        if engine not in ENGINES:
            raise ValueError(f"{name}: engine must be one of {ENGINES}, got {engine!r}")
        if layer_norm and mode not in ("LSTM", "GRU"):
            raise ValueError(f"{name}: layer_norm is available for LSTM and GRU, not {mode}")
        if layer_norm and engine == "fused":
            raise ValueError(f"{name}: layer_norm=True needs the generic engine; got engine='fused'")
        if proj_size and (layer_norm or engine == "generic"):
            raise ValueError(
                f"{name}: proj_size runs on torch's fused LSTM kernel only; the generic engine "
                f"(engine='generic' or layer_norm=True) has no projection"
            )
        super().__init__(
            mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size=proj_size, device=device, dtype=dtype,
        )
        self.weight_dropout = check_probability(f"{name}: weight_dropout", weight_dropout)
        self.input_dropout = check_probability(f"{name}: input_dropout", input_dropout)
        self.output_dropout = check_probability(f"{name}: output_dropout", output_dropout)
        self.variational_dropout = bool(variational_dropout)
        self.layer_norm = bool(layer_norm)
        self.engine = engine
        self.last_engine: str | None = None
        if layer_norm:
            for layer, suffix, cell in self._layer_cells(device="meta", dtype=dtype):
                for pname, param in cell.named_parameters():
                    if pname.startswith("ln_"):
                        value = torch.ones if pname.endswith("_weight") else torch.zeros
                        tensor = value(param.shape, device=device, dtype=dtype)
                        self.register_parameter(f"{pname}_l{layer}{suffix}", torch.nn.Parameter(tensor))
        self.flatten_parameters()  # torch.nn flattened before the dropout settings were known

    @property
    def runs_per_layer(self) -> bool:
        """Whether the fused kernels run one layer at a time: locked (variational) dropout between layers
        needs each layer's output. On GPU the layers then run one at a time in evaluation too, each layer's
        weights in a cuDNN buffer of their own (see :meth:`flatten_parameters`)."""
        return getattr(self, "variational_dropout", False) and self.dropout > 0 and self.num_layers > 1

    def flatten_parameters(self) -> None:
        """torch.nn's ``flatten_parameters``, and a cuDNN weight buffer per layer when :attr:`runs_per_layer`.

        cuDNN finds a call's weights in one chunk only if they lie in the buffer's storage from its start in
        its own layout; a layer after the first, called alone, starts part-way into a whole-stack buffer, so
        cuDNN would copy its weights at every call (and warn "RNN module weights are not part of single
        contiguous chunk of memory"). Flattening each layer on its own gives every per-layer call its chunk.
        A no-op off CUDA, as torch.nn's.
        """
        weights = self._flat_weights
        if not self.runs_per_layer or not _cudnn_flattenable(weights, len(self._flat_weights_names)):
            super().flatten_parameters()
            return
        import torch.backends.cudnn.rnn as cudnn_rnn

        per_layer = len(weights) // self.num_layers
        arrays = 4 if self.bias else 2
        arrays += 1 if self.proj_size else 0
        with torch.cuda.device_of(weights[0]), torch.no_grad():
            for layer in range(self.num_layers):
                size = self.input_size if layer == 0 else self.num_directions * (self.proj_size or self.hidden_size)
                torch._cudnn_rnn_flatten_weight(
                    weights[layer * per_layer : (layer + 1) * per_layer], arrays, size,
                    cudnn_rnn.get_cudnn_mode(self.mode), self.hidden_size, self.proj_size, 1, self.batch_first,
                    bool(self.bidirectional),
                )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """torch.nn init: every weight and bias uniform in (-1/sqrt(H), 1/sqrt(H)); LN gains 1, shifts 0."""
        super().reset_parameters()
        for pname, param in self.named_parameters(recurse=False):
            if pname.startswith("ln_"):
                torch.nn.init.ones_(param) if "_weight_" in pname else torch.nn.init.zeros_(param)

    def _make_cell(self, input_size: int, device: torch.device | str | None, dtype: torch.dtype | None):  # noqa: ANN202
        kw = {"bias": self.bias, "device": device, "dtype": dtype}
        if self.mode == "LSTM":
            return (LayerNormLSTMCell if self.layer_norm else LSTMCell)(input_size, self.hidden_size, **kw)
        if self.mode == "GRU":
            return (LayerNormGRUCell if self.layer_norm else GRUCell)(input_size, self.hidden_size, **kw)
        nonlinearity = "tanh" if self.mode == "RNN_TANH" else "relu"
        return RNNCell(input_size, self.hidden_size, nonlinearity=nonlinearity, **kw)

    def _layer_cells(self, device: torch.device | str | None, dtype: torch.dtype | None):  # noqa: ANN202
        """(layer, suffix, cell) per layer and direction, in torch's parameter order."""
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else self.num_directions * self.hidden_size
            for direction in range(self.num_directions):
                yield layer, "_reverse" if direction else "", self._make_cell(size, device, dtype)

    def _generic_stack(self) -> tuple[CellStack, list[tuple[str, str]]]:
        """Cell templates on the meta device (never registered: the layer owns the parameters) and the map
        ``cells.{k}.{name}`` -> ``{name}_l{layer}{suffix}``."""
        cached = self.__dict__.get("_generic_cache")
        if cached is None:
            cells, names = [], []
            for layer, suffix, cell in self._layer_cells(device="meta", dtype=None):
                for pname, _ in cell.named_parameters():
                    names.append((f"cells.{len(cells)}.{pname}", f"{pname}_l{layer}{suffix}"))
                cells.append(cell)
            cached = (CellStack(cells), names)
            self.__dict__["_generic_cache"] = cached
        return cached

    @property
    def uses_fused(self) -> bool:
        """Whether forward runs torch's fused kernels (else the generic cell loop)."""
        return self.engine == "fused" or (self.engine == "auto" and not self.layer_norm)

    def init_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state ``(num_layers * D, B, H_out)``; for LSTM a pair ``(h, c)``, ``c`` of size ``hidden_size``
        (``h`` is of size ``proj_size`` when there is a projection)."""
        rows = self.num_layers * self.num_directions
        h = torch.zeros(rows, batch_size, self.proj_size or self.hidden_size, device=device, dtype=dtype)
        if self.mode != "LSTM":
            return h
        return h, torch.zeros(rows, batch_size, self.hidden_size, device=device, dtype=dtype)

    def _check_state(self, state: State | None, batch: int, like: Tensor) -> list[Tensor]:
        name = type(self).__name__
        count = 2 if self.mode == "LSTM" else 1
        rows = self.num_layers * self.num_directions
        shapes = [(rows, batch, self.proj_size or self.hidden_size), (rows, batch, self.hidden_size)][:count]
        if state is None:
            return [torch.zeros(shape, dtype=like.dtype, device=like.device) for shape in shapes]
        if count == 2 and (not isinstance(state, tuple | list) or len(state) != 2):
            raise ShapeError(f"{name}: expected state as a pair (h, c), got {type(state).__name__}")
        if count == 1 and not isinstance(state, Tensor):
            raise ShapeError(f"{name}: expected state as a tensor, got {type(state).__name__}")
        parts = list(state) if count == 2 else [state]
        for part_name, part, expected in zip(("h", "c"), parts, shapes):
            if not isinstance(part, Tensor) or tuple(part.shape) != expected:
                got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ShapeError(
                    f"{name}: expected state {part_name} of shape {expected} "
                    f"(num_layers * num_directions, B, H_out), got {got}"
                )
        return parts

    def forward(
        self,
        input: Tensor | PackedSequence,
        state: State | None = None,
        lengths: Tensor | None = None,
        *,
        hx: State | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the layer.

        Args:
            input: (B, T, H_in) if ``batch_first`` else (T, B, H_in), right-padded; or unbatched (T, H_in)
                (then the state is (num_layers * D, H_out)); or a ``PackedSequence`` (then ``lengths`` must
                be None and the output is packed too). B may be 0 (empty output and state, as torch.nn).
            state: initial state (num_layers * D, B, H_out); for LSTM a pair ``(h0, c0)`` (``c0`` has
                ``hidden_size`` features, ``h0`` ``proj_size`` if set). Default zeros. ``hx`` is torch.nn's
                name for it: pass one of the two.
            lengths: (B,) integer lengths in [1, T], any order and device. Default: all T.

        Returns:
            ``(output, state)``: output (B, T, D * H_out) (or time-major, or (T, D * H_out) unbatched), exactly
            0 at padded steps; state in the layout of ``state``, each sequence's state after its last valid
            step (reverse direction: after reading back to step 0).

        Raises:
            ShapeError: (a ValueError and a RuntimeError) for an input, state or lengths of the wrong shape.
        """
        name = type(self).__name__
        state = state_argument(name, state, hx)
        if isinstance(input, Tensor) and input.dim() == 2:
            return run_unbatched(self, input, state, lengths)
        if hasattr(self, "_update_flat_weights"):  # torch >= 2.1: re-read weights swapped by functional_call
            self._update_flat_weights()
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{name}: a PackedSequence carries its lengths; got lengths as well")
            if input.data.dim() != 2 or input.data.size(1) != self.input_size:
                raise ShapeError(
                    f"{name}: expected packed data of shape (N, H_in={self.input_size}), "
                    f"got {tuple(input.data.shape)}"
                )
            seq = SequenceBatch.from_packed(input)
        else:
            batch, _, lengths_cpu = check_sequence_input(name, input, self.input_size, self.batch_first, lengths)
            if batch == 0:  # as torch.nn: an empty output and the (empty) state
                hx = self._check_state(state, 0, input)
                features = self.num_directions * (self.proj_size or self.hidden_size)
                return input.new_zeros(*input.shape[:2], features), (tuple(hx) if self.mode == "LSTM" else hx[0])
            seq = SequenceBatch(input, lengths_cpu, self.batch_first, pack=self._packs(input))
        hx = [seq.sort(h) for h in self._check_state(state, seq.batch, seq.data)]  # each (L*D, B, H)
        training = self.training
        dropped = {}
        if training and self.weight_dropout > 0:
            for layer in range(self.num_layers):
                for suffix in ("", "_reverse")[: self.num_directions]:
                    key = f"weight_hh_l{layer}{suffix}"
                    dropped[key] = weight_drop(getattr(self, key), self.weight_dropout)
        data = seq.data
        if training and self.input_dropout > 0:
            data = seq.locked_dropout(data, self.input_dropout)
        if self.uses_fused:
            out, final = self._run_fused(data, seq, hx, dropped)
            self.last_engine = "fused"
        else:
            out, final = self._run_generic(seq.flat(data), seq, hx, dropped)
            self.last_engine = "generic"
        if training and self.output_dropout > 0:
            out = seq.locked_dropout(out, self.output_dropout)
        final = [seq.unsort(f) for f in final]
        return seq.restore(out), (tuple(final) if self.mode == "LSTM" else final[0])

    def _packs(self, input: Tensor) -> bool:
        """Whether variable lengths go through a packed batch: always for the generic engine and on GPU
        (cuDNN runs packed batches natively) and for a projected LSTM (``proj_size``); on CPU the fused engine
        otherwise keeps the padded batch and :meth:`_run_padded` handles the lengths with the plain kernels."""
        return not self.uses_fused or input.is_cuda or self.proj_size > 0

    def _run_fused(
        self, data: Tensor, seq: SequenceBatch, hx: list[Tensor], dropped: dict[str, Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        if dropped and data.is_cuda:
            # cuDNN copies the freshly dropped weights into its flat buffer on every call; that copy is the
            # price of DropConnect (as in AWD-LSTM), so torch's warning about it says nothing to act on.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
                return self._run_kernels(data, seq, hx, dropped)
        return self._run_kernels(data, seq, hx, dropped)

    def _run_kernels(
        self, data: Tensor, seq: SequenceBatch, hx: list[Tensor], dropped: dict[str, Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        kernel = _KERNELS[self.mode]
        weights = self._flat_weights
        if dropped:
            weights = [dropped.get(n, w) for n, w in zip(self._flat_weights_names, weights)]

        def call(x: Tensor, h: list[Tensor], w: list[Tensor], layers: int, dropout: float):  # noqa: ANN202
            h_arg = (h[0], h[1]) if self.mode == "LSTM" else h[0]
            flags = (self.bias, layers, dropout, self.training, self.bidirectional)
            if seq.packed:
                result = kernel(x, seq.batch_sizes, h_arg, w, *flags)
            else:
                result = kernel(x, h_arg, w, *flags, False)
            return result[0], list(result[1:])

        if seq.lengths is not None:
            return self._run_padded(data, seq, hx, weights)
        if not (self.runs_per_layer and (self.training or data.is_cuda)):
            return call(data, hx, weights, self.num_layers, float(self.dropout))
        per_layer = len(weights) // self.num_layers
        rows = self.num_directions
        finals = []
        for layer in range(self.num_layers):
            if layer and self.training:
                data = seq.locked_dropout(data, self.dropout)
            w = weights[layer * per_layer : (layer + 1) * per_layer]
            data, final = call(data, [h[layer * rows : (layer + 1) * rows] for h in hx], w, 1, 0.0)
            finals.append(final)
        return data, [torch.cat(parts) for parts in zip(*finals)]  # each (L*D, B, H)

    def _run_padded(
        self, data: Tensor, seq: SequenceBatch, hx: list[Tensor], weights: list[Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        """Variable lengths on a padded ``(T, B, F)`` batch with the plain (unpacked) fused kernels.

        On CPU torch's packed kernels are a per-step loop, about 3x slower than the plain ones. A forward
        direction is causal, so padding after a sequence's end cannot change its valid outputs; the reverse
        direction runs the same way on each sequence reversed within its length (its padding stays after its
        end), and its outputs are put back in time order. So every sequence starts at step 0 in both
        directions, and the batch, sorted by length (longest first), runs in the time segments of
        :func:`_segments`: one plain call per segment on the rows still alive at its start (a prefix of the
        sorted batch), each row's state carried into the next segment. A row's final ``h`` is its output at
        its last valid step; the LSTM's final ``c`` is not an output: see :meth:`_final_cell`. Layers run one
        by one (their input is both directions' outputs), with the between-layer dropout applied here (on the
        sorted batch). Outputs past a length are whatever the kernel computed there until ``restore`` zeroes
        them.
        """
        order = torch.argsort(seq.lengths, descending=True, stable=True)  # CPU
        lengths = seq.lengths[order]  # (B,) longest first
        segments = _segments(lengths.tolist(), _REDO_COST if self.mode == "LSTM" else 0)
        permuted = not torch.equal(order, torch.arange(seq.batch))
        if permuted:
            rows = order.to(data.device)
            data, hx = data.index_select(1, rows), [h.index_select(1, rows) for h in hx]
        last = lengths.to(data.device) - 1  # (B,)
        steps = torch.arange(seq.steps, device=data.device)[:, None]  # (T, 1)
        flip = torch.where(steps <= last, last - steps, steps)[..., None]  # (T, B, 1): reverse within length

        def flipped(t: Tensor) -> Tensor:  # its own inverse
            return t.gather(0, flip.expand_as(t))
        per_cell = len(weights) // (self.num_layers * self.num_directions)
        finals: list[list[Tensor]] = [[] for _ in hx]
        outputs: list[Tensor] = []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout > 0:
                if self.variational_dropout:
                    data = seq.locked_dropout(data, self.dropout)
                else:
                    data = F.dropout(data, self.dropout, True)
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                w = weights[k * per_cell : (k + 1) * per_cell]
                x = data if direction == 0 else flipped(data)
                y, final = self._run_segments(x, [h[k : k + 1] for h in hx], w, lengths, segments)
                for parts, part in zip(finals, final):
                    parts.append(part)
                outputs.append(y if direction == 0 else flipped(y))
            data = outputs[0] if self.num_directions == 1 else torch.cat(outputs, -1)  # (T, B, D*H)
        final = [torch.cat(parts) for parts in finals]  # each (L*D, B, H)
        if permuted:
            back = order.argsort().to(data.device)
            data, final = data.index_select(1, back), [f.index_select(1, back) for f in final]
        return data, final

    def _run_segments(
        self, x: Tensor, h0: list[Tensor], w: list[Tensor], lengths: Tensor, segments: list[tuple[int, int, int]]
    ) -> tuple[Tensor, list[Tensor]]:
        """One layer and direction over the length-sorted batch ``x`` (T, B, F), every sequence starting at step
        0, in the ``(start, stop, rows)`` segments of :func:`_segments`; ``h0`` each (1, B, H), ``lengths`` (B,)
        on CPU, longest first. Returns the output (T, B, H) (0 after the last segment, arbitrary past a length
        inside one) and the final states, each (1, B, H)."""
        kernel = _KERNELS[self.mode]
        batch, hidden = x.size(1), self.hidden_size
        state, pieces = h0, []
        finals: list[list[Tensor]] = [[] for _ in h0]
        for i, (start, stop, rows) in enumerate(segments):
            alive = segments[i + 1][2] if i + 1 < len(segments) else 0  # rows that go on past ``stop``
            h = [s[:, :rows] for s in state]  # each (1, rows, H)
            xs = x[start:stop, :rows]  # (S, rows, F)
            h_arg = (h[0], h[1]) if self.mode == "LSTM" else h[0]
            y, *state = kernel(xs, h_arg, w, self.bias, 1, 0.0, self.training, False, False)  # y (S, rows, H)
            local = lengths[alive:rows] - start  # (E,) in [1, S]: the rows that end in this segment
            ends = (local - 1).to(x.device)[None, :, None].expand(1, -1, hidden)  # (1, E, H)
            finals[0].append(y[:, alive:].gather(0, ends))
            if self.mode == "LSTM":
                ended = [s[:, alive:] for s in h]
                finals[1].append(self._final_cell(xs[:, alive:], y[:, alive:], ended, state[1][:, alive:], w, local))
            pieces.append(F.pad(y, (0, 0, 0, batch - rows)))  # (S, B, H)
        tail = x.size(0) - segments[-1][1]
        if tail:
            pieces.append(x.new_zeros(tail, batch, hidden))
        # Rows end in the reverse order of the segments: the longest in the last one.
        return torch.cat(pieces), [torch.cat(parts[::-1], 1) for parts in finals]

    # Data-dependent shapes (the rows that end early, boolean-mask indexing): torch.compile runs it eagerly
    # rather than breaking the graph inside it and failing to trace the backward of the masked products.
    @torch.compiler.disable
    def _final_cell(
        self, x: Tensor, y: Tensor, h0: list[Tensor], c_end: Tensor, w: list[Tensor], lengths: Tensor
    ) -> Tensor:
        """The LSTM cell state after each sequence's last valid step, ``(1, B, H)``, from one kernel call over
        ``x`` (S, B, F) from state ``h0`` with outputs ``y`` (S, B, H), ``lengths`` (B,) in [1, S] on CPU.

        The kernel returns it only after step S (``c_end``), right for the sequences of length S. For the
        shorter ones it is recomputed from the kernel's outputs: the gates at step t depend only on ``x_t`` and
        ``h_{t-1}`` (the output at t - 1), so i, f and g come from one matrix product over the valid steps,
        and the scan ``c_t = f_t c_{t-1} + i_t g_t`` unrolls to ``c_{len-1} = sum_t (f_{t+1} ... f_{len-1})
        i_t g_t + (f_0 ... f_{len-1}) c_0``: the products are exponentials of reverse cumulative sums of
        ``log f`` (sums of terms of one sign, no cancellation), so a few elementwise operations replace a
        loop over the steps. The same function of the weights and inputs as the packed kernel's, so the
        gradients are exact too; the values agree to rounding.
        """
        steps, hidden = x.size(0), self.hidden_size
        short = (lengths < steps).nonzero().flatten()  # CPU: rows that end before S
        if short.numel() == 0:
            return c_end
        rows = short.to(x.device)
        span = int(lengths[short].max())
        lens = lengths[short].to(x.device)  # (R,)
        xs = x[:span, rows]  # (S, R, F)
        hs = torch.cat([h0[0][:, rows], y[: span - 1, rows]])  # (S, R, H): h_{t-1}
        valid = torch.arange(span, device=x.device)[:, None] < lens  # (S, R)
        igf = F.linear(xs[valid], w[0][: 3 * hidden], w[2][: 3 * hidden] if self.bias else None)
        igf = igf + F.linear(hs[valid], w[1][: 3 * hidden], w[3][: 3 * hidden] if self.bias else None)
        gates = igf.new_zeros(span, rows.numel(), 3 * hidden).index_put((valid,), igf)  # (S, R, 3H)
        i, f, g = gates.chunk(3, -1)  # torch's gate order: input, forget, cell (then output, unused)
        update = torch.sigmoid(i) * torch.tanh(g)  # (S, R, H): i_t g_t, 0 past a length
        log_f = F.logsigmoid(f).masked_fill(~valid[..., None], 0)  # (S, R, H): log f_t, 0 past a length
        after = log_f.flip(0).cumsum(0).flip(0)  # (S, R, H): log(f_t ... f_{len-1})
        decay = torch.cat([after[1:], torch.zeros_like(after[:1])]).exp()  # (S, R, H): f_{t+1} ... f_{len-1}
        c_short = (decay * update).sum(0) + after[0].exp() * h0[1][0, rows]  # (R, H)
        return c_end.index_copy(1, rows, c_short[None])

    def _run_generic(
        self, data: Tensor, seq: SequenceBatch, hx: list[Tensor], dropped: dict[str, Tensor]
    ) -> tuple[Tensor, list[Tensor]]:
        stack, names = self._generic_stack()
        tensors = {key: dropped[attr] if attr in dropped else getattr(self, attr) for key, attr in names}
        count = self.num_layers * self.num_directions
        states = [(hx[0][k], hx[1][k]) if self.mode == "LSTM" else hx[0][k] for k in range(count)]
        between = None
        if self.training and self.dropout > 0 and self.num_layers > 1:
            if self.variational_dropout:
                between = lambda d: seq.locked_dropout(d, self.dropout)
            else:
                between = lambda d: F.dropout(d, self.dropout, True)
        args = (data, seq.sizes, states, self.num_directions, between)
        out, finals = torch.func.functional_call(stack, tensors, args)
        if self.mode == "LSTM":
            return out, [torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals])]
        return out, [torch.stack(finals)]  # (L*D, B, H)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        for option in ("weight_dropout", "input_dropout", "output_dropout"):
            if getattr(self, option):
                text += f", {option}={getattr(self, option)}"
        if self.variational_dropout:
            text += ", variational_dropout=True"
        if self.layer_norm:
            text += ", layer_norm=True"
        if self.engine != "auto":
            text += f", engine={self.engine!r}"
        return text


_ARGS_DOC = """
    Args:
        input_size: features of the input (H_in).
        hidden_size: features of the state (H_out).
        num_layers: stacked layers; layer l > 0 reads layer l - 1's output. Default 1.{extra}
        bias: if False, no ``bias_ih``/``bias_hh``. Default True.
        batch_first: input and output are (B, T, ·) if True, else (T, B, ·); states are always
            (num_layers * D, B, H_out). Default False (as torch.nn).
        dropout: dropout on each layer's output except the last, in training. Default 0.
        bidirectional: add a reverse direction per layer (D = 2). Default False.
        weight_dropout: DropConnect probability on each ``weight_hh`` (keyword-only). Default 0.
        input_dropout: locked dropout on the input features (keyword-only). Default 0.
        output_dropout: locked dropout on the last layer's output (keyword-only). Default 0.
        variational_dropout: make ``dropout`` locked (one mask per sequence) (keyword-only). Default False.
        layer_norm: layer-normalised cells, generic engine (keyword-only; LSTM and GRU). Default False.
        engine: ``"auto"``, ``"fused"`` or ``"generic"`` (keyword-only). Default ``"auto"``.
        device, dtype: for the parameters (keyword-only).

    Shape:
        input: (B, T, H_in) if batch_first else (T, B, H_in), or a PackedSequence, or unbatched (T, H_in)
            (then the batch dimension is dropped from state and output too, as in torch.nn). B may be 0.
        lengths: (B,) integers in [1, T], any order, any device.
        state: (L * D, B, H_out){state}; passed as ``state`` or, torch.nn's name, ``hx``.
        output: (B, T, D * H_out) if batch_first else (T, B, D * H_out); 0 past each length.

    It equals the slow loop (D = 2 adds the same loop over ``reversed(range(len_b))`` with the ``_reverse``
    weights, its output concatenated on the feature axis)::

        for l in range(num_layers):
            for b in range(B):
                s = state0[l, b]
                for t in range(len_b):
                    y[b, t], s = cell_l(x_l[b, t], s)     # see {cell}
                final[l, b] = s
            x_{{l+1}} = dropout(y)
"""


class RNN(_RecurrentLayer):
    __doc__ = r"""Elman RNN, ``torch.nn.RNN``-compatible: :math:`h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1}
    + b_{hh})`, :math:`\phi` tanh or ReLU.
""" + _ARGS_DOC.format(
        extra="\n        nonlinearity: ``\"tanh\"`` or ``\"relu\"``. Default ``\"tanh\"``.",
        state="",
        cell=":class:`rnnkit.nn.cells.RNNCell`",
    ) + """
    Example::

        rnn = RNN(8, 16, batch_first=True)
        out, h = rnn(torch.randn(4, 10, 8), lengths=torch.tensor([10, 2, 5, 1]))  # (4, 10, 16), (1, 4, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        weight_dropout: float = 0.0,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        variational_dropout: bool = False,
        layer_norm: bool = False,
        engine: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            modes[nonlinearity], input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, weight_dropout=weight_dropout, input_dropout=input_dropout,
            output_dropout=output_dropout, variational_dropout=variational_dropout, layer_norm=layer_norm,
            engine=engine, device=device, dtype=dtype,
        )


class LSTM(_RecurrentLayer):
    __doc__ = r"""LSTM, ``torch.nn.LSTM``-compatible; gates as :class:`rnnkit.nn.LSTMCell`.
""" + _ARGS_DOC.format(
        extra="""
        proj_size: if > 0, ``h = W_hr h`` projects each layer's output to this size (``weight_hr_l{k}``
            of shape (proj_size, hidden_size)); H_out is then proj_size, ``c`` keeps hidden_size. Fused
            engine only (a ValueError with ``layer_norm=True`` or ``engine="generic"``). Default 0 (none).""",
        state="; a pair (h, c) of such tensors",
        cell=":class:`rnnkit.nn.cells.LSTMCell` (``LayerNormLSTMCell`` with layer_norm)",
    ) + """
    Example::

        lstm = LSTM(8, 16, num_layers=2, batch_first=True, weight_dropout=0.3)
        out, (h, c) = lstm(torch.randn(4, 10, 8), lengths=torch.tensor([10, 2, 5, 1]))  # h: (2, 4, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        weight_dropout: float = 0.0,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        variational_dropout: bool = False,
        layer_norm: bool = False,
        engine: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size=proj_size, weight_dropout=weight_dropout, input_dropout=input_dropout,
            output_dropout=output_dropout, variational_dropout=variational_dropout, layer_norm=layer_norm,
            engine=engine, device=device, dtype=dtype,
        )


class GRU(_RecurrentLayer):
    __doc__ = r"""GRU, ``torch.nn.GRU``-compatible; gates as :class:`rnnkit.nn.GRUCell`.
""" + _ARGS_DOC.format(
        extra="",
        state="",
        cell=":class:`rnnkit.nn.cells.GRUCell` (``LayerNormGRUCell`` with layer_norm)",
    ) + """
    Example::

        gru = GRU(8, 16, bidirectional=True, batch_first=True)
        out, h = gru(torch.randn(4, 10, 8), lengths=torch.tensor([10, 2, 5, 1]))  # (4, 10, 32), (2, 4, 16)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        weight_dropout: float = 0.0,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        variational_dropout: bool = False,
        layer_norm: bool = False,
        engine: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            weight_dropout=weight_dropout, input_dropout=input_dropout, output_dropout=output_dropout,
            variational_dropout=variational_dropout, layer_norm=layer_norm, engine=engine, device=device,
            dtype=dtype,
        )
