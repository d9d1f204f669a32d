r"""Text classifier: word (+ character BiLSTM) embeddings -> recurrent stack -> pooling -> dropout -> linear.

For a text of tokens ``w_1 .. w_n``::

    x_t = dropout([E[w_t]; c_t])             (B, T, E [+ 2*Hc]); c_t: the tagger's char encoder (models/chars.py)
    h_t = RNN^L(x)_t                         (B, T, D*H), D = 2 when bidirectional; given the lengths
    z   = pool(h_1 .. h_n)                   (B, P)
    s   = W dropout(z) + b                   (B, K) class scores

Pooling (``P = D*H``, except attention), over the real steps only:

- ``last``: the forward direction's output at step n, and the backward direction's at step 1 (both
  have read the whole text);
- ``max`` / ``mean``: elementwise maximum / mean over steps 1..n;
- ``attention``: self-attentive pooling (Lin et al. 2017, "A Structured Self-attentive Sentence
  Embedding") with ``r`` heads: ``A = softmax(W_2 tanh(W_1 H^T))`` ``(B, r, T)``, softmax over the real
  steps (0 on padding), ``z = flatten(A H)``, ``P = r*D*H``. ``A`` is returned, so a user can see which
  words decided; :func:`attention_penalty` gives Lin et al.'s ``||A A^T - I||_F^2``, which pushes the
  heads to attend to different words.

Heads: multi-class (softmax cross-entropy, optional label smoothing and class weights, see
:func:`balanced_class_weights`) or multi-label (a sigmoid per label, binary cross-entropy; the
decision threshold is chosen on validation data by :func:`choose_threshold`). Padding never
influences a real output: the recurrent layers get the lengths, the char encoder sees only real words,
and every pooling masks the padded steps.

The recurrent stack and the character encoder take any registered cell (:func:`rnnkit.nn.cell_names`) or a
``package.module:ClassName`` (``cell``, ``char_cell``).

Shapes: B texts, T tokens, C characters per token, E embedding size, Hc char hidden size per
direction, H hidden size per direction, D directions, r attention heads, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.models.chars import WordCharBatch, WordCharInput, check_input_fields
from rnnkit.models.tagger import collate_tagged
from rnnkit.nn.registry import recurrent_layer, resolve_cell

__all__ = [
    "POOLINGS",
    "Classifier",
    "ClassifierBatch",
    "ClassifierConfig",
    "ClassifierOutput",
    "SelfAttentivePooling",
    "attention_penalty",
    "balanced_class_weights",
    "choose_threshold",
    "classification_loss",
    "collate_classified",
    "pool",
]

POOLINGS = ("last", "max", "mean", "attention")


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a :class:`Classifier` (stored in checkpoints; :meth:`to_dict` is JSON-ready).

    No field has a default: the task config holds the one default of each setting.

    Args:
        num_words: word vocabulary size (including specials).
        num_classes: number of classes (labels) ``K``.
        num_chars: character vocabulary size; > 0 when ``use_chars``.
        cell: recurrent cell: a registered name (:func:`rnnkit.nn.cell_names`) or ``package.module:ClassName``.
        emb: word embedding size ``E``.
        hidden: hidden size per direction ``H``.
        layers: number of stacked recurrent layers.
        bidirectional: run each layer in both directions.
        pooling: one of :data:`POOLINGS`.
        attention_hidden: size of ``W_1``'s output (Lin et al.'s ``d_a``); used by ``attention``.
        attention_heads: number of heads ``r``; used by ``attention``.
        use_chars: add the character encoder.
        char_emb: character embedding size; char_hidden: char encoder hidden size per direction.
        char_cell: recurrent cell of the character encoder, likewise.
        dropout: on the embeddings, between recurrent layers and before the output layer.
        multi_label: sigmoid per label instead of a softmax over classes.
        word_pad_id, char_pad_id: padding ids (their embedding rows stay zero).
    """

    num_words: int
    num_classes: int
    num_chars: int
    cell: str
    emb: int
    hidden: int
    layers: int
    bidirectional: bool
    pooling: str
    attention_hidden: int
    attention_heads: int
    use_chars: bool
    char_emb: int
    char_hidden: int
    char_cell: str
    dropout: float
    multi_label: bool
    word_pad_id: int
    char_pad_id: int

    def __post_init__(self) -> None:
        for name in ("cell", "char_cell"):
            try:
                resolve_cell(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        check_input_fields(self)
        needed = ["hidden", "layers"] + (["attention_hidden", "attention_heads"] if self.pooling == "attention" else [])
        for name in needed:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        least = 1 if self.multi_label else 2
        if self.num_classes < least:
            raise ValueError(f"num_classes must be >= {least}, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(d) - known), sorted(known - set(d))
        if unknown or missing:
            raise ValueError(f"ClassifierConfig: unknown fields {unknown}, missing fields {missing}")
        return cls(**d)


@dataclass
class ClassifierBatch(WordCharBatch):
    """A padded batch of texts (see :func:`collate_classified`): the fields of
    :class:`~rnnkit.models.chars.WordCharBatch` (T words per text) and

    Attributes:
        targets: ``(B,)`` class ids (multi-class) or ``(B, K)`` 0/1 floats (multi-label), or None.
    """

    targets: Tensor | None = None

    @property
    def num_examples(self) -> int:
        return self.words.size(0)


def collate_classified(
    words: Sequence[Sequence[int]],
    chars: Sequence[Sequence[Sequence[int]]] | None = None,
    targets: Sequence[int] | Sequence[Sequence[int]] | None = None,
    *,
    num_classes: int | None = None,
    word_pad_id: int = 0,
    char_pad_id: int = 0,
) -> ClassifierBatch:
    """Pad encoded texts into a :class:`ClassifierBatch`.

    Args:
        words: ``B`` texts of word ids (each non-empty).
        chars: per text, per word, the character ids; None without the character encoder.
        targets: multi-class: one class id per text; multi-label: one list of label ids per text
            (then ``num_classes`` is required and the batch holds ``(B, K)`` multi-hot floats); None
            for prediction.
        num_classes: ``K``, for multi-label targets.
        word_pad_id, char_pad_id: padding ids.
    """
    tagged = collate_tagged(words, chars, word_pad_id=word_pad_id, char_pad_id=char_pad_id)
    batch = ClassifierBatch(tagged.words, tagged.lengths, tagged.chars, tagged.char_lengths)
    if targets is None:
        return batch
    if len(targets) != len(words):
        raise ValueError(f"targets: expected {len(words)} (one per text), got {len(targets)}")
    if num_classes is None:
        batch.targets = torch.tensor(list(targets), dtype=torch.long)
        return batch
    multi_hot = torch.zeros(len(targets), num_classes)
    for i, ids in enumerate(targets):
        multi_hot[i, list(ids)] = 1.0
    batch.targets = multi_hot
    return batch


class SelfAttentivePooling(nn.Module):
    """Self-attentive pooling (Lin et al. 2017): ``A = softmax(W_2 tanh(W_1 H^T))``, ``z = flatten(A H)``.

    Args:
        input_size: ``D_in``, the size of each step of ``H``.
        hidden_size: ``d_a``, the output size of ``W_1``.
        heads: ``r``, the number of attention rows (each a distribution over the steps).

    Shape:
        ``forward(h (B, T, D_in), mask (B, T) bool) -> (z (B, r*D_in), A (B, r, T))``; each row of
        ``A`` sums to 1 over the valid steps and is exactly 0 at padded ones.
    """

    def __init__(self, input_size: int, hidden_size: int, heads: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(input_size, hidden_size, bias=False)
        self.w2 = nn.Linear(hidden_size, heads, bias=False)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.w2(torch.tanh(self.w1(h))).transpose(1, 2)  # (B, r, T)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=2)  # (B, r, T)
        return (weights @ h).flatten(1), weights  # (B, r, D_in) -> (B, r*D_in)


def attention_penalty(weights: Tensor) -> Tensor:
    """Lin et al.'s redundancy penalty ``||A A^T - I||_F^2`` of each text. ``(B, r, T) -> (B,)``"""
    gram = weights @ weights.transpose(1, 2)  # (B, r, r)
    eye = torch.eye(gram.size(1), dtype=gram.dtype, device=gram.device)
    return ((gram - eye) ** 2).sum(dim=(1, 2))


def pool(h: Tensor, lengths: Tensor, mask: Tensor, mode: str, directions: int) -> Tensor:
    """``last``, ``max`` or ``mean`` pooling over the real steps (``mask`` (B, T) True there, ``lengths`` (B,)).
    ``(B, T, D*H) -> (B, D*H)``"""
    if mode == "max":
        return h.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(dim=1)
    if mode == "mean":
        return (h * mask.unsqueeze(2)).sum(dim=1) / lengths.to(h.device, h.dtype).unsqueeze(1)
    rows = torch.arange(h.size(0), device=h.device)
    last = h[rows, lengths.to(h.device) - 1]  # (B, D*H): each text's last real step
    if directions == 1:
        return last
    size = h.size(2) // 2
    return torch.cat([last[:, :size], h[:, 0, size:]], dim=1)  # forward at step n, backward at step 1


class ClassifierOutput(NamedTuple):
    """``logits``: ``(B, K)`` class scores; ``attention``: ``(B, r, T)`` pooling weights (None unless ``attention``)."""

    logits: Tensor
    attention: Tensor | None


class Classifier(WordCharInput):
    """Recurrent text classifier (equations in the module docstring).

    Example::

        >>> cfg = ClassifierConfig(num_words=50, num_classes=3, num_chars=0, cell="lstm", emb=8, hidden=8,
        ...     layers=1, bidirectional=True, pooling="max", attention_hidden=0, attention_heads=0,
        ...     use_chars=False, char_emb=0, char_hidden=0, char_cell="lstm", dropout=0.0, multi_label=False,
        ...     word_pad_id=0, char_pad_id=0)
        >>> batch = collate_classified([[5, 6, 7], [8]], targets=[2, 0])
        >>> loss_sum, n = Classifier(cfg).loss(batch)    # n == 2
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        input_size = self._build_input(c)
        self.dropout = nn.Dropout(c.dropout)
        self.rnn = recurrent_layer(c.cell, input_size, c.hidden, c.layers, bidirectional=c.bidirectional,
                                   dropout=c.dropout if c.layers > 1 else 0.0)  # (B, T, D*H) outputs
        features = c.num_directions * c.hidden
        if c.pooling == "attention":
            self.attention = SelfAttentivePooling(features, c.attention_hidden, c.attention_heads)
            features *= c.attention_heads
        else:
            self.attention = None
        self.output = nn.Linear(features, c.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_input()

    def encode(self, words: Tensor, chars: Tensor | None, lengths: Tensor,
               char_lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """The recurrent stack's outputs ``(B, T, D*H)`` (0 at padded steps) and the mask ``(B, T)``."""
        x, mask = self._embed(words, chars, lengths, char_lengths)  # (B, T, E [+ 2*Hc])
        h, _ = self.rnn(self.dropout(x), lengths=lengths.cpu())  # (B, T, D*H)
        return h, mask

    def forward(self, words: Tensor, chars: Tensor | None, lengths: Tensor,
                char_lengths: Tensor | None) -> ClassifierOutput:
        """Class scores of each text, and the attention weights with ``attention`` pooling.

        Args:
            words: ``(B, T)`` word ids. chars: ``(B, T, C)`` character ids (None without chars).
            lengths: ``(B,)`` text lengths in ``[1, T]``. char_lengths: ``(B, T)`` (None without chars).
        """
        h, mask = self.encode(words, chars, lengths, char_lengths)
        if self.attention is not None:
            pooled, weights = self.attention(h, mask)
        else:
            pooled, weights = pool(h, lengths, mask, self.config.pooling, self.config.num_directions), None
        return ClassifierOutput(self.output(self.dropout(pooled)), weights)

    def _run(self, batch: ClassifierBatch) -> ClassifierOutput:
        return self(batch.words, batch.chars, batch.lengths, batch.char_lengths)

    def loss(self, batch: ClassifierBatch, *, label_smoothing: float = 0.0, class_weights: Tensor | None = None,
             penalty: float = 0.0) -> tuple[Tensor, int]:
        """Summed loss over the batch's texts and their number (see :func:`classification_loss`).

        ``penalty`` > 0 adds ``penalty * attention_penalty(A)`` per text (``attention`` pooling only).
        """
        if batch.targets is None:
            raise ValueError("loss needs batch.targets")
        out = self._run(batch)
        loss = classification_loss(out.logits, batch.targets.to(out.logits.device),
                                   multi_label=self.config.multi_label, label_smoothing=label_smoothing,
                                   class_weights=class_weights)
        if penalty > 0:
            if out.attention is None:
                raise ValueError("penalty needs attention pooling")
            loss = loss + penalty * attention_penalty(out.attention).sum()
        return loss, batch.num_examples

    @torch.no_grad()
    def probabilities(self, batch: ClassifierBatch) -> tuple[Tensor, Tensor | None]:
        """Class probabilities ``(B, K)`` (softmax, or a sigmoid per label) and the attention weights.

        Call ``model.eval()`` first so that dropout is off.
        """
        out = self._run(batch)
        probs = torch.sigmoid(out.logits) if self.config.multi_label else torch.softmax(out.logits, dim=1)
        return probs, out.attention


def classification_loss(logits: Tensor, targets: Tensor, *, multi_label: bool, label_smoothing: float = 0.0,
                        class_weights: Tensor | None = None) -> Tensor:
    """Summed loss of a batch (the engine divides by the number of texts).

    Multi-class: cross-entropy of ``(B, K)`` logits against ``(B,)`` class ids, each term weighted by
    ``class_weights[y]`` when given (so with :func:`balanced_class_weights` the weights average 1 over
    the training data), with ``label_smoothing`` as in :func:`torch.nn.functional.cross_entropy`.
    Multi-label: binary cross-entropy of a sigmoid per label against ``(B, K)`` 0/1 targets, summed
    over labels; neither smoothing nor class weights apply.
    """
    if multi_label:
        if label_smoothing or class_weights is not None:
            raise ValueError("label_smoothing and class_weights are for multi-class data")
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="sum")
    weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
    return F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing, reduction="sum")


def balanced_class_weights(counts: Sequence[int]) -> Tensor:
    """scikit-learn's ``balanced`` weights: ``n_samples / (n_classes * count_c)`` for each class ``c``.

    Raises:
        ValueError: a class with no example (its weight would be infinite).
    """
    if any(n < 1 for n in counts):
        raise ValueError(f"every class needs at least one training example, got counts {list(counts)}")
    c = torch.tensor(list(counts), dtype=torch.float64)
    return (c.sum() / (len(c) * c)).float()


def choose_threshold(probs: Tensor, targets: Tensor) -> float:
    """The multi-label decision threshold that maximises micro-F1 on validation data.

    Every cut between two distinct scores is tried (predicting a label when its probability is above
    the cut); the best cut is returned as the midpoint between the lowest score kept and the next
    lower score (0 below the lowest), so that it separates them with a margin. Ties in F1 go to the
    highest threshold (fewest predicted labels).

    Args:
        probs: ``(N, K)`` probabilities. targets: ``(N, K)`` 0/1 gold labels.

    Raises:
        ValueError: no gold label at all (every threshold has micro-F1 0).
    """
    if probs.shape != targets.shape:
        raise ValueError(f"probs and targets: expected one shape, got {tuple(probs.shape)} and {tuple(targets.shape)}")
    gold = targets.detach().reshape(-1).to("cpu", torch.float64)
    total = float(gold.sum())
    if total == 0:
        raise ValueError("choose_threshold: the validation data have no gold label")
    scores, order = probs.detach().reshape(-1).to("cpu", torch.float64).sort(descending=True)
    tp = gold[order].cumsum(0)  # true positives when the top i+1 scores are predicted
    predicted = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    last_of_run = torch.ones_like(scores, dtype=torch.bool)  # cuts only where the score changes
    last_of_run[:-1] = scores[1:] != scores[:-1]
    f1 = torch.where(last_of_run, 2 * tp / (predicted + total), torch.tensor(-1.0, dtype=torch.float64))
    best = int(f1.argmax())  # the first maximum: the highest threshold
    below = float(scores[best + 1]) if best + 1 < len(scores) else 0.0
    return (float(scores[best]) + below) / 2
