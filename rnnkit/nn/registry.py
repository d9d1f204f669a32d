"""Cell registry: a name or an import path for every recurrent cell, and one factory for its layer.

A cell is named in configs and on the command line by

* a registered name: ``rnn``, ``lstm``, ``gru``, ``ln-lstm``, ``ln-gru``, ``mingru``, ``minlstm``, and those
  added with :func:`register_cell` (a cell shipped with rnnkit registers with one line in
  :data:`BUILTIN_CELLS`);
* an import path ``package.module:ClassName`` of a class that follows the cell protocol of
  :mod:`rnnkit.nn.cells` (``init_state``, optional ``project_input``, ``step``), constructed as
  ``ClassName(input_size, hidden_size)``. The module is imported when the name is resolved; nothing else is
  executed (a run saves the path, never code).

:func:`recurrent_layer` builds a stacked, optionally bidirectional layer for any of them: ``rnn``, ``lstm``
and ``gru`` as :class:`rnnkit.nn.RNN` / :class:`~rnnkit.nn.LSTM` / :class:`~rnnkit.nn.GRU` (torch's fused
kernels), a cell with a ``layer_class`` (``mingru``, ``minlstm``: a parallel scan over time) through that
layer, every other cell through :class:`rnnkit.nn.Recurrent` (the generic engine). All take the same
dropouts and return states in the same layout, ``(num_layers * D, B, S)`` per state tensor.

Example::

    register_cell("my-rnn", MyCell)                 # or name it "my_package.cells:MyCell"
    layer = recurrent_layer("my-rnn", 8, 16, num_layers=2, weight_dropout=0.2)
"""

from __future__ import annotations

import importlib

import torch

from rnnkit.nn.cells import GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, RecurrentCell, RNNCell
from rnnkit.nn.layers import GRU, LSTM, RNN
from rnnkit.nn.minrnn import MinGRUCell, MinLSTMCell
from rnnkit.nn.recurrent import Recurrent

__all__ = ["BUILTIN_CELLS", "cell_names", "describe_cells", "recurrent_layer", "register_cell", "resolve_cell"]

#: The cells rnnkit ships, by name. A new one is one line here (or ``register_cell(name, cls)`` at import).
BUILTIN_CELLS: dict[str, type[torch.nn.Module]] = {
    "rnn": RNNCell,
    "lstm": LSTMCell,
    "gru": GRUCell,
    "ln-lstm": LayerNormLSTMCell,
    "ln-gru": LayerNormGRUCell,
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
}

#: Names whose layer runs torch's fused kernels (same equations as the cell, cuDNN on GPU).
_FUSED = {"rnn": RNN, "lstm": LSTM, "gru": GRU}

_CELLS: dict[str, type[torch.nn.Module]] = dict(BUILTIN_CELLS)

_PROTOCOL = ("init_state", "step")


def _protocol_problem(cls: object) -> str | None:
    """Why ``cls`` is not a cell class (``"lacks step"``, ...), or None when it follows the protocol."""
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        return "not a torch.nn.Module subclass"
    missing = [name for name in _PROTOCOL if not callable(getattr(cls, name, None))]
    if issubclass(cls, RecurrentCell) and cls.step is RecurrentCell.step:
        missing.append("step")
    return f"lacks {', '.join(missing)}" if missing else None


def register_cell(name: str, cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Make ``cls`` (a cell class, see :mod:`rnnkit.nn.cells`) available under ``name``; returns ``cls``.

    Raises:
        ValueError: ``name`` is empty, holds ``:`` (reserved for import paths) or belongs to another class,
            or ``cls`` does not follow the cell protocol.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"register_cell: a cell name is a non-empty string without ':', got {name!r}")
    problem = _protocol_problem(cls)
    if problem:
        raise ValueError(f"register_cell: {cls!r} does not follow the cell protocol ({problem}; see "
                         f"rnnkit.nn.cells)")
    if _CELLS.get(name, cls) is not cls:
        raise ValueError(f"register_cell: {name!r} is already the name of {_CELLS[name].__qualname__}")
    _CELLS[name] = cls
    return cls


def cell_names() -> tuple[str, ...]:
    """Registered cell names, built-in ones first."""
    return tuple(_CELLS)


def describe_cells() -> str:
    """The accepted values in words, for help texts: ``"rnn, lstm, ... or package.module:ClassName"``."""
    return f"{', '.join(_CELLS)} or package.module:ClassName"


def resolve_cell(cell: str) -> type[torch.nn.Module]:
    """The cell class named by ``cell``: a registered name or ``package.module:ClassName``.

    Raises:
        ValueError: one line naming the cell: unknown name, import failure, or a class that does not follow
            the protocol.
    """
    if not isinstance(cell, str) or ":" not in cell:
        if cell in _CELLS:
            return _CELLS[cell]
        raise ValueError(f"unknown cell {cell!r} (choose from {describe_cells()})")
    module_name, _, attr = cell.partition(":")
    if not module_name or not attr:
        raise ValueError(f"cannot import cell {cell!r} (expected package.module:ClassName)")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise ValueError(f"cannot import cell {cell!r} ({type(e).__name__}: {e})") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"cannot import cell {cell!r} (module {module_name!r} has no attribute {attr!r})")
    problem = _protocol_problem(cls)
    if problem:
        raise ValueError(f"cell {cell!r} does not follow the cell protocol ({problem}; see rnnkit.nn.cells)")
    return cls


def recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    batch_first: bool = True,
    dropout: float = 0.0,
    variational_dropout: bool = False,
    weight_dropout: float = 0.0,
    input_dropout: float = 0.0,
    output_dropout: float = 0.0,
) -> RNN | LSTM | GRU | Recurrent:
    """A recurrent layer of the cell named ``cell`` (see the module docstring).

    Args:
        cell: a registered name or ``package.module:ClassName``.
        input_size, hidden_size, num_layers, bidirectional, batch_first: as :class:`rnnkit.nn.LSTM`
            (``batch_first`` defaults to True here).
        dropout: dropout between layers (locked when ``variational_dropout``).
        weight_dropout: DropConnect on the hidden-to-hidden weights (``weight_hh*``); a ValueError for a
            cell that has none.
        input_dropout, output_dropout: locked dropout on the input and on the last layer's output.

    Returns:
        A module called as ``layer(input, state=None, lengths=None) -> (output, state)``, output
        ``(B, T, D * H)``, with ``layer.init_state(batch_size, device=, dtype=)`` giving the zero state.
    """
    options = {"bidirectional": bidirectional, "batch_first": batch_first, "dropout": dropout,
               "variational_dropout": variational_dropout, "weight_dropout": weight_dropout,
               "input_dropout": input_dropout, "output_dropout": output_dropout}
    if cell in _FUSED:
        return _FUSED[cell](input_size, hidden_size, num_layers, **options)
    cls = resolve_cell(cell)
    layer = getattr(cls, "layer_class", None) or Recurrent  # optional in the protocol (RecurrentCell: None)
    if layer is Recurrent:
        return Recurrent(cls, input_size, hidden_size, num_layers, **options)
    return layer(input_size, hidden_size, num_layers, **options)
