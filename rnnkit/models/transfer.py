"""ULMFiT-style transfer (Howard and Ruder 2018): a classifier initialised from a trained language model.

:func:`init_from_lm` copies the word embedding and the recurrent stack of a
:class:`~rnnkit.models.lm.LanguageModel` into a :class:`~rnnkit.models.classifier.Classifier` of the same
cell, embedding size, hidden size and depth. Embedding rows are matched by token, so the two
vocabularies need not be equal (the tokenizer must be: a token the LM never saw starts at the mean of
the LM's embedding rows, as in ULMFiT). The LM reads left to right, so only the forward direction of a
bidirectional classifier is initialised; its backward direction keeps its random initialisation. Input
features the LM never had (the backward direction's outputs feeding layer 2 and above, the character
features feeding layer 1) get zero weights in the forward direction, so that right after
:func:`init_from_lm` the classifier's forward outputs equal the LM's hidden states exactly; training
then learns to use them.

Fine-tuning helpers: :func:`layer_groups` splits the classifier into embedding, one group per recurrent
layer, and head (pooling, output and the character encoder: everything not pre-trained);
:func:`discriminative_param_groups` gives each group its own learning rate, ``lr / decay**k`` for the
group ``k`` steps below the head (ULMFiT's discriminative fine-tuning, ``decay`` = 2.6 in the paper);
:class:`GradualUnfreezing` says which groups train at each epoch (the head first, then one more group
every ``epochs_per_group`` epochs, top down).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import Classifier, ClassifierConfig
from rnnkit.models.lm import LanguageModel, LMModelConfig

__all__ = ["GradualUnfreezing", "check_lm_compatible", "discriminative_param_groups", "init_from_lm", "layer_groups"]

_LAYER = re.compile(r".*_l(\d+)(_reverse)?$")


def check_lm_compatible(c: ClassifierConfig, m: LMModelConfig) -> None:
    """Raise ConfigError naming the first of cell, ``emb``, ``hidden``, ``layers`` that differs between a
    classifier's and a language model's config (:func:`init_from_lm` needs them equal)."""
    pairs = (("cell", c.cell, m.model), ("emb", c.emb, m.emb), ("hidden", c.hidden, m.hidden),
             ("layers", c.layers, m.layers))
    for name, mine, theirs in pairs:
        if mine != theirs:
            raise ConfigError(f"init_from: {name}: the language model has {theirs!r}, the classifier {mine!r} "
                              "(they must match)")


@torch.no_grad()
def init_from_lm(classifier: Classifier, lm: LanguageModel, lm_vocab: Vocab, clf_vocab: Vocab) -> int:
    """Copy the LM's embedding and recurrent stack into ``classifier`` (module docstring), in place.

    Args:
        classifier: the classifier to initialise.
        lm: the trained language model.
        lm_vocab, clf_vocab: the vocabularies of the two models (rows are matched by token).

    Returns:
        The number of classifier tokens found in the LM's vocabulary (their rows were copied).

    Raises:
        ConfigError: the cell, ``emb``, ``hidden`` or ``layers`` differ (the message names the field),
            or no token is shared (a different tokenizer).
    """
    check_lm_compatible(classifier.config, lm.config)
    if len(clf_vocab) != classifier.config.num_words or len(lm_vocab) != lm.config.vocab_size:
        raise ValueError("init_from_lm: a vocabulary does not match its model's size")
    source = lm.embedding.weight
    target = classifier.word_embedding.weight
    pad = classifier.config.word_pad_id
    found = [(i, lm_vocab.stoi[t]) for i, t in enumerate(clf_vocab.itos) if t in lm_vocab.stoi and i != pad]
    if not found:
        raise ConfigError("init_from: no token of the classifier's vocabulary is in the language model's "
                          "(the tokenizers differ)")
    target[:] = source.mean(dim=0).to(target)
    mine, theirs = zip(*found)
    target[list(mine)] = source[list(theirs)].to(target)
    target[pad] = 0.0
    rnn = dict(classifier.rnn.named_parameters())
    for name, weight in lm.rnn.named_parameters():
        dest = rnn[name]
        if dest.shape == weight.shape:
            dest.copy_(weight)
        else:  # weight_ih with more inputs (char features, or the backward direction below): zero them
            dest.zero_()
            dest[:, : weight.size(1)] = weight
    return len(found)


def layer_groups(classifier: Classifier) -> list[tuple[str, list[nn.Parameter]]]:
    """``[("embedding", ...), ("rnn.0", ...), ..., ("rnn.{L-1}", ...), ("head", ...)]``, bottom to top.

    ``rnn.k`` holds every parameter of recurrent layer ``k`` (both directions); ``head`` every
    parameter that is not pre-trained (pooling, output layer, character encoder).
    """
    groups: dict[str, list[nn.Parameter]] = {"embedding": [classifier.word_embedding.weight]}
    for k in range(classifier.config.layers):
        groups[f"rnn.{k}"] = []
    for name, p in classifier.rnn.named_parameters():
        groups[f"rnn.{_LAYER.fullmatch(name).group(1)}"].append(p)
    taken = {id(p) for ps in groups.values() for p in ps}
    groups["head"] = [p for p in classifier.parameters() if id(p) not in taken]
    return list(groups.items())


def discriminative_param_groups(classifier: Classifier, lr: float, *, decay: float) -> list[dict]:
    """Optimizer parameter groups, ``{"name", "params", "lr"}``: the head at ``lr``, each group below
    it ``decay`` times lower (``lr / decay**k`` for the group ``k`` steps below the head)."""
    groups = layer_groups(classifier)
    top = len(groups) - 1
    return [{"name": name, "params": params, "lr": lr / decay ** (top - k)} for k, (name, params) in enumerate(groups)]


@dataclass(frozen=True)
class GradualUnfreezing:
    """Which layer groups train at each epoch: the top group (head) at epoch 0, one more group below it
    every ``epochs_per_group`` epochs, all from epoch ``(num_groups - 1) * epochs_per_group`` on.

    A pure function of the epoch, so a resumed run unfreezes exactly as an uninterrupted one.

    Example::

        >>> schedule = GradualUnfreezing(num_groups=4, epochs_per_group=1)
        >>> [schedule.trainable(e) for e in range(5)]
        [1, 2, 3, 4, 4]
    """

    num_groups: int
    epochs_per_group: int

    def __post_init__(self) -> None:
        if self.num_groups < 1 or self.epochs_per_group < 1:
            raise ValueError(f"num_groups and epochs_per_group must be >= 1, got {self.num_groups} and "
                             f"{self.epochs_per_group}")

    def trainable(self, epoch: int) -> int:
        """The number of top groups that train at ``epoch`` (0-based)."""
        return min(self.num_groups, 1 + epoch // self.epochs_per_group)

    def apply(self, groups: list[tuple[str, list[nn.Parameter]]], epoch: int) -> None:
        """Set ``requires_grad`` of every parameter of ``groups`` (from :func:`layer_groups`) for ``epoch``.

        A frozen parameter gets no gradient, so the optimizer leaves it (and its state) unchanged.
        """
        if len(groups) != self.num_groups:
            raise ValueError(f"expected {self.num_groups} groups, got {len(groups)}")
        first = self.num_groups - self.trainable(epoch)
        for k, (_, params) in enumerate(groups):
            for p in params:
                p.requires_grad_(k >= first)
