"""Recurrent language model: embedding -> recurrent stack of any registered cell -> dropout -> output layer.

Shapes: B batch, T time, E embedding size, H hidden size, V vocabulary size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.nn import linear_cross_entropy, recurrent_layer, resolve_cell

State = Tensor | tuple[Tensor, ...]

#: On a CPU, vocabularies from this size up compute the output layer and its loss fused
#: (:func:`rnnkit.nn.linear_cross_entropy`: the gradient made in the forward pass, in place over the
#: logits); at character vocabularies the plain path was measured ~10% faster.
FUSED_LOSS_MIN_VOCAB = 2048


@dataclass(frozen=True)
class LMModelConfig:
    """Architecture of a :class:`LanguageModel` (stored in every checkpoint).

    No field has a default: the one default of each setting is the task's (:class:`rnnkit.tasks.lm.LMConfig`,
    shown by ``rnnkit lm train --help``), which builds this config.
    """

    #: Fields added after runs were first saved, with the value every older run had (a saved config that
    #: lacks one of them means that value). The LM has none.
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {}

    vocab_size: int
    model: str  # recurrent cell: a registered name (rnnkit.nn.cell_names()) or package.module:ClassName
    emb: int
    hidden: int
    layers: int
    dropout: float  # locked dropout on the recurrent stack's output
    dropout_emb: float  # locked dropout on the embeddings (the stack's input)
    dropout_hidden: float  # locked dropout between recurrent layers
    weight_dropout: float  # DropConnect on the hidden-to-hidden weights (AWD-LSTM)
    tie_weights: bool
    softmax: str  # full | adaptive
    cutoffs: tuple[int, ...]
    init_range: float | None  # all weights uniform in [-r, r] (Zaremba et al.); None: torch's init

    def __post_init__(self) -> None:
        try:
            resolve_cell(self.model)
        except ValueError as e:
            raise ValueError(f"model: {e}") from None
        if self.init_range is not None and not self.init_range > 0:
            raise ValueError(f"init_range must be > 0, got {self.init_range}")
        if self.tie_weights and self.emb != self.hidden:
            raise ValueError(f"tie_weights needs emb == hidden, got emb={self.emb}, hidden={self.hidden}")
        if self.softmax not in ("full", "adaptive"):
            raise ValueError(f"softmax must be full or adaptive, got {self.softmax!r}")
        if self.softmax == "adaptive":
            if self.tie_weights:
                raise ValueError("tie_weights is not supported with the adaptive softmax")
            cut = list(self.cutoffs)
            if not cut or cut != sorted(set(cut)) or cut[0] <= 0 or cut[-1] >= self.vocab_size - 1:
                raise ValueError(f"cutoffs must be increasing integers in (0, {self.vocab_size - 1}) for "
                                 f"the adaptive softmax, got {self.cutoffs}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LMModelConfig:
        return cls(**{**cls.ADDED_FIELDS, **d, "cutoffs": tuple(d.get("cutoffs", ()))})


class LanguageModel(nn.Module):
    """Next-token model ``p(x_{t+1} | x_{<=t})`` over a vocabulary.

    Embedding (E) -> locked dropout -> ``layers`` recurrent layers of any cell (H; locked dropout between them, optional
    DropConnect on their hidden-to-hidden weights) -> locked dropout -> linear to V
    (its weight shared with the embedding when ``tie_weights``), or an adaptive softmax
    (Grave et al. 2017, :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`) with the given cut-offs.

    Example:
        >>> cfg = LMModelConfig(vocab_size=65, model="lstm", emb=32, hidden=64, layers=2, dropout=0.1,
        ...                     dropout_emb=0.0, dropout_hidden=0.0, weight_dropout=0.0, tie_weights=False,
        ...                     softmax="full", cutoffs=(), init_range=None)
        >>> lm = LanguageModel(cfg)
        >>> nll, state = lm.loss(torch.randint(65, (4, 10)), torch.randint(65, (4, 10)))
    """

    def __init__(self, config: LMModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emb)
        # all dropouts live in the layer (which keeps rnn/lstm/gru on the fused kernels): locked (one mask per
        # sequence) on its input, between layers and on its output, and DropConnect on the hidden-to-hidden
        # weights
        self.rnn = recurrent_layer(c.model, c.emb, c.hidden, c.layers, dropout=c.dropout_hidden,
                                   input_dropout=c.dropout_emb, output_dropout=c.dropout, variational_dropout=True,
                                   weight_dropout=c.weight_dropout)
        if c.softmax == "adaptive":
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(c.hidden, c.vocab_size, list(c.cutoffs), div_value=4.0)
            self.decoder = None
        else:
            self.adaptive = None
            self.decoder = nn.Linear(c.hidden, c.vocab_size)
            if c.tie_weights:
                self.decoder.weight = self.embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embedding and output weights uniform in [-0.1, 0.1], output bias 0, recurrent layers as torch.nn;
        with ``init_range`` r, every parameter uniform in [-r, r] (Zaremba et al. 2014)."""
        r = self.config.init_range
        if r is not None:
            for p in self.parameters():
                nn.init.uniform_(p, -r, r)
            return
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.decoder is not None:
            nn.init.zeros_(self.decoder.bias)
            if not self.config.tie_weights:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def hidden_states(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Top-layer outputs (B, T, H) after dropout, and the recurrent state after the last step."""
        out, state = self.rnn(self.embedding(tokens), state)  # (B, T, E) -> (B, T, H)
        return out, state

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Log-probabilities of the next token, (B, T, V), and the new state."""
        out, state = self.hidden_states(tokens, state)
        return self.log_probs(out), state

    def log_probs(self, hidden: Tensor) -> Tensor:
        """(..., H) hidden states -> (..., V) log-probabilities."""
        if self.adaptive is not None:
            flat = hidden.reshape(-1, hidden.size(-1))
            return self.adaptive.log_prob(flat).view(*hidden.shape[:-1], -1)
        return F.log_softmax(self.decoder(hidden), dim=-1)

    def loss(self, tokens: Tensor, targets: Tensor, state: State | None = None,
             ignore_index: int = -100) -> tuple[Tensor, State]:
        """Summed NLL of ``targets`` (B, T) given ``tokens`` (B, T), and the new state.

        Targets equal to ``ignore_index`` (padding) never count; the caller knows how many tokens did.
        """
        out, state = self.hidden_states(tokens, state)
        flat_h = out.reshape(-1, out.size(-1))  # (B*T, H)
        flat_y = targets.reshape(-1)  # (B*T,)
        if self.adaptive is not None:
            keep = flat_y != ignore_index
            if not bool(keep.all()):
                flat_h, flat_y = flat_h[keep], flat_y[keep]
            return -self.adaptive(flat_h, flat_y).output.sum(), state
        if flat_h.device.type == "cpu" and self.decoder.out_features >= FUSED_LOSS_MIN_VOCAB:
            # loss and gradient in few passes over the logits (rnnkit.nn.losses); figures in benchmarks/README.md
            return linear_cross_entropy(flat_h, self.decoder.weight, self.decoder.bias, flat_y, ignore_index), state
        logits = self.decoder(flat_h)  # (B*T, V)
        return F.cross_entropy(logits, flat_y, ignore_index=ignore_index, reduction="sum"), state
