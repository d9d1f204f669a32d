"""Neural-network building blocks: recurrent cells and layers, attention, CRF (never sees files, vocab or
optimizers)."""

from rnnkit.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, ScaledDotAttention, length_mask
from rnnkit.nn.cells import (
    GRUCell,
    LayerNormGRUCell,
    LayerNormLSTMCell,
    LSTMCell,
    RecurrentCell,
    RNNCell,
)
from rnnkit.nn.crf import CRF, bio_constraints
from rnnkit.nn.dropout import LockedDropout, locked_dropout, weight_drop
from rnnkit.nn.layers import GRU, LSTM, RNN
from rnnkit.nn.losses import linear_cross_entropy
from rnnkit.nn.minrnn import MinGRU, MinGRUCell, MinLSTM, MinLSTMCell
from rnnkit.nn.recurrent import Recurrent
from rnnkit.nn.registry import cell_names, describe_cells, recurrent_layer, register_cell, resolve_cell

__all__ = [
    "AdditiveAttention",
    "CRF",
    "DotAttention",
    "GRU",
    "GRUCell",
    "GeneralAttention",
    "LSTM",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "LockedDropout",
    "MinGRU",
    "MinGRUCell",
    "MinLSTM",
    "MinLSTMCell",
    "RNN",
    "RNNCell",
    "Recurrent",
    "RecurrentCell",
    "ScaledDotAttention",
    "bio_constraints",
    "cell_names",
    "describe_cells",
    "length_mask",
    "linear_cross_entropy",
    "locked_dropout",
    "recurrent_layer",
    "register_cell",
    "resolve_cell",
    "weight_drop",
]
