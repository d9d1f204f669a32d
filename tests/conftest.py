"""Test-wide settings: one torch thread per test process (tiny tensors; avoids OpenMP oversubscription)."""

import torch

torch.set_num_threads(1)
