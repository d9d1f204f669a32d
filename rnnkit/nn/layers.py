"""Recurrent layers RNN, LSTM and GRU: torch.nn-compatible, with per-sequence lengths."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

State = Tensor | tuple[Tensor, Tensor]


class _RecurrentLayer(torch.nn.RNNBase):
    """Shared body of RNN, LSTM and GRU (parameters held exactly as torch.nn holds them)."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            device=device, dtype=dtype,
        )
        self.last_engine: str | None = None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _check_input(self, input: Tensor, lengths: Tensor | None) -> tuple[int, int, Tensor | None]:
        if input.dim() != 3:
            layout = "(B, T, H_in)" if self.batch_first else "(T, B, H_in)"
            raise ValueError(
                f"{type(self).__name__}: expected a 3-D input {layout} with H_in={self.input_size}, "
                f"got shape {tuple(input.shape)}"
            )
        if input.size(-1) != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: expected input feature size H_in={self.input_size}, "
                f"got input of shape {tuple(input.shape)}"
            )
        batch, steps = (input.size(0), input.size(1)) if self.batch_first else (input.size(1), input.size(0))
        if steps < 1:
            raise ValueError(
                f"{type(self).__name__}: expected at least one time step, got shape {tuple(input.shape)}"
            )
        if lengths is None:
            return batch, steps, None
        if lengths.dim() != 1 or lengths.numel() != batch:
            raise ValueError(
                f"{type(self).__name__}: expected lengths of shape ({batch},) (one per sequence), "
                f"got shape {tuple(lengths.shape)}"
            )
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise ValueError(f"{type(self).__name__}: expected integer lengths, got dtype {lengths.dtype}")
        lengths_cpu = lengths.to("cpu", torch.int64)
        low, high = int(lengths_cpu.min()), int(lengths_cpu.max())
        if low < 1 or high > steps:
            raise ValueError(
                f"{type(self).__name__}: expected every length in [1, T={steps}], "
                f"got min {low} and max {high}"
            )
        return batch, steps, lengths_cpu

    def _check_state(self, state: State | None, batch: int, input: Tensor) -> list[Tensor]:
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        count = 2 if self.mode == "LSTM" else 1
        if state is None:
            zeros = torch.zeros(expected, dtype=input.dtype, device=input.device)
            return [zeros] * count
        name = type(self).__name__
        if count == 2 and (not isinstance(state, tuple | list) or len(state) != 2):
            raise ValueError(f"{name}: expected state as a pair (h, c), got {type(state).__name__}")
        if count == 1 and not isinstance(state, Tensor):
            raise ValueError(f"{name}: expected state as a tensor, got {type(state).__name__}")
        parts = list(state) if count == 2 else [state]
        for name, part in zip(("h", "c"), parts):
            if tuple(part.shape) != expected:
                raise ValueError(
                    f"{type(self).__name__}: expected state {name} of shape {expected} "
                    f"(num_layers * num_directions, B, H_out), got {tuple(part.shape)}"
                )
        return parts

    def forward(
        self, input: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        batch, steps, lengths_cpu = self._check_input(input, lengths)
        hx = self._check_state(state, batch, input)
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, H_in)
        packed = None
        if lengths_cpu is not None:
            packed = pack_padded_sequence(x, lengths_cpu, enforce_sorted=False)
            hx = [h.index_select(1, packed.sorted_indices) for h in hx]
        kernel = {
            "LSTM": torch._VF.lstm,
            "GRU": torch._VF.gru,
            "RNN_TANH": torch._VF.rnn_tanh,
            "RNN_RELU": torch._VF.rnn_relu,
        }[self.mode]
        hx_arg = tuple(hx) if self.mode == "LSTM" else hx[0]
        flags = (self.bias, self.num_layers, float(self.dropout), self.training, self.bidirectional)
        if packed is None:
            out, *final = kernel(x, hx_arg, self._flat_weights, *flags, False)
        else:
            out, *final = kernel(packed.data, packed.batch_sizes, hx_arg, self._flat_weights, *flags)
            out = pad_packed_sequence(
                PackedSequence(out, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
                total_length=steps,
            )[0]
            final = [f.index_select(1, packed.unsorted_indices) for f in final]
        self.last_engine = "fused"
        output = out.transpose(0, 1) if self.batch_first else out
        return output, (tuple(final) if self.mode == "LSTM" else final[0])


class RNN(_RecurrentLayer):
    """Elman RNN with tanh or ReLU, torch.nn.RNN-compatible."""

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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            modes[nonlinearity], input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, device=device, dtype=dtype,
        )


class LSTM(_RecurrentLayer):
    """LSTM, torch.nn.LSTM-compatible (no proj_size)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            device=device, dtype=dtype,
        )


class GRU(_RecurrentLayer):
    """GRU, torch.nn.GRU-compatible."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            device=device, dtype=dtype,
        )
