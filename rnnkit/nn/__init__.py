"""Neural-network building blocks: recurrent cells and layers (never sees files, vocab or optimizers)."""

from rnnkit.nn.layers import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN"]
