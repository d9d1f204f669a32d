"""rnnkit.nn.RNN/LSTM/GRU against torch.nn (first smoke checks; the full grid lives in test_recurrent.py)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rn

PAIRS = [
    (rn.LSTM, torch.nn.LSTM, {}),
    (rn.GRU, torch.nn.GRU, {}),
    (rn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    (rn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("ours_cls,ref_cls,kwargs", PAIRS)
@pytest.mark.parametrize("batch_first", [True, False])
def test_fused_matches_torch_packed(ours_cls, ref_cls, kwargs, batch_first):
    torch.manual_seed(0)
    ours = ours_cls(3, 5, num_layers=2, bidirectional=True, batch_first=batch_first, **kwargs).double()
    ref = ref_cls(3, 5, num_layers=2, bidirectional=True, batch_first=batch_first, **kwargs).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 6, 3, dtype=torch.double)
    if not batch_first:
        x = x.transpose(0, 1)
    lengths = torch.tensor([2, 6, 1, 4])
    out, state = ours(x, lengths=lengths)
    ref_out, ref_state = ref(pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False))
    ref_out = pad_packed_sequence(ref_out, batch_first=batch_first, total_length=6)[0]
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-12)
    assert ours.last_engine == "fused"
