"""Neural-network building blocks: recurrent cells and layers (never sees files, vocab or optimizers)."""

from rnnkit.nn.cells import (
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    RecurrentCell,
    RNNCell,
)
from rnnkit.nn.dropout import LockedDropout, locked_dropout, weight_drop
from rnnkit.nn.layers import GRU, LSTM, RNN
from rnnkit.nn.recurrent import Recurrent

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "LockedDropout",
    "RNN",
    "RNNCell",
    "Recurrent",
    "RecurrentCell",
    "locked_dropout",
    "weight_drop",
]
