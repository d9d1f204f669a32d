"""rnnkit: recurrent neural networks on sequences, built on PyTorch."""

__version__ = "0.1.0"
