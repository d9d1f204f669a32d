"""Text classification, end to end: config, data, the engine's task, and the Python API.

    import rnnkit.tasks.classify as classify
    run = classify.train(out="runs/genre", max_steps=300)    # bundled UD English EWT, genre of each sentence
    run.predict(["I loved the food and the staff was friendly ."])            # ['reviews']
    run.predict(["..."], top_k=2)                             # [[('reviews', 0.81), ('answers', 0.11)]]
    run.evaluate("test.tsv")                                  # {"accuracy", "macro_f1", "micro_f1", "per_class", ...}
    run = classify.load("runs/genre")                         # later, in another process

Data: TSV/CSV (``text_column`` / ``label_column`` by header name or 0-based index), fastText, JSON lines
and label-first files, read by :func:`rnnkit.data.classify.read_classified` with the config's ``format``,
``header``, ``delimiter``, ``label_sep``, ``coarse_sep``, ``multi_label`` and ``encoding``; validation and
test files are read with the same settings. Records with an empty text are skipped with one warning giving
their count. With no data: the genre of each sentence of the bundled UD English EWT
(:func:`rnnkit.data.classify.bundled_ewt_genres`; train split for training, dev for validation).

Tokens come from the shared tokenizers (:mod:`rnnkit.data.tokenize`: ``level`` word, char or subword),
built on the training texts; word level may add the tagger's character encoder (``chars``). The model is
:class:`~rnnkit.models.classifier.Classifier`. Training batches hold texts of similar length
(:func:`rnnkit.data.batching.length_batches`, seeded by (seed, epoch), so a resumed run sees the same
batches); the loss is summed over texts and the engine divides by their number.

Multi-class runs select their best checkpoint on validation accuracy; multi-label runs (``multi_label``: a
sigmoid per label) on validation micro-F1 at probability 0.5, and once training is over the decision
threshold that maximises micro-F1 on the validation data (:func:`~rnnkit.models.classifier.choose_threshold`)
is stored in ``RUN/threshold.json`` (0.5 without validation data).

Transfer (ULMFiT): ``init_from`` names an ``rnnkit lm`` run; the classifier's embedding and recurrent stack
start from the LM's (:func:`rnnkit.models.transfer.init_from_lm`; same level, cell, ``emb``, ``hidden`` and
``layers``, checked before anything is written). A subword classifier takes the LM's tokenizer as is; word
and char classifiers build their own vocabulary and copy the rows of shared tokens. ``pretrained_lr_decay``
gives each layer group below the head a learning rate that many times lower, and ``unfreeze`` trains the head
alone for that many epochs, then one more group every ``unfreeze`` epochs, top down
(:class:`~rnnkit.models.transfer.GradualUnfreezing`). Gradual unfreezing changes which parameters get
gradients from one epoch to the next, which DistributedDataParallel does not allow: under torchrun it is
refused with an error.

The CLI (``rnnkit classify ...``) is a thin layer over :func:`train`, :func:`resume` and :func:`load`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.batching import RankBatches, length_batches, restore_order
from rnnkit.data.classify import FORMATS, Example, bundled_ewt_genres, label_vocab, read_classified
from rnnkit.data.tokenize import Tokenizer, build_tokenizer, tokenizer_from_dict
from rnnkit.data.vocab import Vocab, check_format
from rnnkit.errors import ConfigError, DataError
from rnnkit.metrics.classification import classification_report, confusion_matrix
from rnnkit.models.classifier import (
    POOLINGS,
    Classifier,
    ClassifierBatch,
    ClassifierConfig,
    balanced_class_weights,
    choose_threshold,
    collate_classified,
)
from rnnkit.models.transfer import (
    GradualUnfreezing,
    check_lm_compatible,
    discriminative_param_groups,
    init_from_lm,
    layer_groups,
)
from rnnkit.nn.registry import describe_cells, resolve_cell
from rnnkit.tasks import lm as lm_task
from rnnkit.train import checkpoint as ck
from rnnkit.train import distributed as dist
from rnnkit.train.config import TokenizerFields, TrainConfig, option, task_default, train_option, valid_option
from rnnkit.train.distributed import DistInfo, is_main_process, shard
from rnnkit.train.driver import Driver, TaskSpec, read_json
from rnnkit.train.engine import StepResult, Task

__all__ = ["ClassifyConfig", "ClassifyRun", "ClassifySpec", "ClassifyTask", "ClassifyVocabs", "load",
           "make_config", "resume", "train"]

TASK = "classify"
VOCAB_FORMAT = "rnnkit.classify-vocab/1"
EVAL_BATCH = 128  # texts per batch when predicting or evaluating
DEFAULT_THRESHOLD = 0.5
THRESHOLD = "threshold.json"  # in the run folder (the driver's RUN_FILES: replaced with the run)


@dataclass(frozen=True)
class ClassifyConfig(TokenizerFields, TrainConfig):
    """Everything ``rnnkit classify train`` needs: data, model and training fields (flag ``--x-y`` = field x_y)."""

    train: str | None = train_option("training data", "the genre of each sentence of the bundled UD English EWT, "
                                     "train split")
    valid: str | None = valid_option("validation data, read like --train", "the EWT dev split")
    format: str | None = option(None, "data format (default: from the file name: .tsv, .csv, .jsonl, .txt/.ft = "
                                "fasttext)", choices=FORMATS)
    text_column: str | None = option(None, "tsv/csv: text column, a header name or 0-based index; jsonl: the "
                                     "text key (default: text)")
    label_column: str | None = option(None, "tsv/csv: label column, a header name or 0-based index; jsonl: "
                                      "the label key (default: label)")
    header: bool | None = option(None, "tsv/csv: the first row is a header (default: when a column is given "
                                 "by name)")
    delimiter: str | None = option(None, "tsv/csv: field delimiter (default: tab for tsv, comma for csv)")
    label_sep: str | None = option(None, "split each label field on this string (multi-label data in one "
                                   "column, e.g. '|')")
    coarse_sep: str | None = option(None, "keep each label's part before this string (TREC's coarse classes: "
                                    "':')")
    multi_label: bool = option(False, "any number of labels per text: a sigmoid per label, decision threshold "
                               "chosen on the validation data")
    encoding: str = option("utf-8", "text encoding of the data files (e.g. latin-1)")
    out: str = option("runs/classify", "run folder to write")
    lowercase: bool = option(False, "lowercase texts before tokenising")
    cell: str = option("lstm", f"recurrent cell: {describe_cells()}", check=resolve_cell)
    char_cell: str = option("lstm", f"recurrent cell of the character encoder: {describe_cells()}",
                            check=resolve_cell)
    emb: int = option(100, "token embedding size", low=1)
    hidden: int = option(128, "hidden size per direction", low=1)
    layers: int = option(1, "stacked recurrent layers", low=1)
    bidirectional: bool = option(True, "read the text in both directions")
    pooling: str = option("max", "how the recurrent outputs become one vector: last step, elementwise max, "
                          "mean, or self-attentive pooling", choices=POOLINGS)
    attention_hidden: int = option(64, "attention pooling: hidden size of the scorer", low=1)
    attention_heads: int = option(1, "attention pooling: number of heads", low=1)
    penalty: float = option(0.0, "attention pooling: weight of the heads' redundancy penalty "
                            "(Lin et al. 2017)", low=0)
    chars: bool = option(False, "word level: add a character encoder for each word")
    char_emb: int = option(32, "character embedding size", low=1)
    char_hidden: int = option(32, "character encoder hidden size per direction", low=1)
    dropout: float = option(0.5, "dropout on embeddings, between layers and before the output layer", fraction=True)
    label_smoothing: float = option(0.0, "multi-class: label smoothing of the cross-entropy", fraction=True)
    class_weights: str = option("none", "multi-class: balanced = weight each class by n / (classes * count)",
                                choices=("none", "balanced"))
    init_from: str | None = option(None, "initialise the embedding and recurrent stack from this rnnkit lm run "
                                   "(same level, cell, emb, hidden and layers)")
    unfreeze: int = option(0, "with --init-from: train the head alone for N epochs, then unfreeze one more "
                           "layer group every N epochs, top down (0 = train everything from the start)", low=0)
    pretrained_lr_decay: float = option(1.0, "with --init-from: each layer group below the head learns this "
                                        "many times slower than the one above (ULMFiT: 2.6; 1 = off)", low=1)
    batch_size: int = option(32, "texts per batch", low=1)
    bucket: bool = option(True, "batch texts of similar length together (less padding)")
    # the default run: EWT genres inside a few minutes on 2 CPU cores
    time_budget: float | None = task_default("time_budget", 180.0)

    def validate(self) -> None:
        if self.penalty > 0 and self.pooling != "attention":
            raise ValueError("field 'penalty': the redundancy penalty needs --pooling attention")
        if self.chars and self.level != "word":
            raise ValueError(f"field 'chars': the character encoder reads words; it needs --level word, not "
                             f"{self.level}")
        if self.multi_label and (self.label_smoothing or self.class_weights != "none"):
            bad = "label_smoothing" if self.label_smoothing else "class_weights"
            raise ValueError(f"field '{bad}': for multi-class data, not with --multi-label")
        if self.init_from is None and (self.unfreeze or self.pretrained_lr_decay != 1.0):
            bad = "unfreeze" if self.unfreeze else "pretrained_lr_decay"
            raise ValueError(f"field '{bad}': applies to pre-trained layers; give --init-from too")

    def read_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~rnnkit.data.classify.read_classified` for this run's files."""
        return {"format": self.format, "text_column": self.text_column, "label_column": self.label_column,
                "header": self.header, "delimiter": self.delimiter, "label_sep": self.label_sep,
                "coarse_sep": self.coarse_sep, "multi_label": self.multi_label, "encoding": self.encoding}


# --- data --------------------------------------------------------------------------------------------

def read_examples(cfg: ClassifyConfig, path: str | Path, what: str) -> list[Example]:
    """The labelled texts of a file read with the run's settings; warns once about skipped empty texts."""
    data = read_classified(path, what=what, **cfg.read_options())
    if data.empty and is_main_process():
        shown = ", ".join(map(str, data.empty[:5])) + (", ..." if len(data.empty) > 5 else "")
        print(f"rnnkit: warning: {path}: skipped {len(data.empty)} record(s) with an empty text ({what}; "
              f"line {shown})", file=sys.stderr)
    return data.examples


def bundled_examples(split: str) -> list[Example]:
    """The bundled EWT genre data of a split as examples (``line`` = the sentence's number)."""
    texts, labels = bundled_ewt_genres(split)
    return [Example(t, (lab,), i) for i, (t, lab) in enumerate(zip(texts, labels), start=1)]


def load_examples(cfg: ClassifyConfig) -> tuple[list[Example], list[Example] | None, str]:
    """(train, valid or None, train name) for a config; reads and checks the files."""
    if cfg.train is None:
        if cfg.valid is not None:
            raise ConfigError("field 'valid': give --train too, or neither for the bundled data")
        return bundled_examples("train"), bundled_examples("dev"), "bundled UD English EWT genres (train)"
    train = read_examples(cfg, cfg.train, "training data")
    valid = read_examples(cfg, cfg.valid, "validation data") if cfg.valid is not None else None
    return train, valid, cfg.train


@dataclass
class ClassifyVocabs:
    """A run's tokenizer, character vocabulary (None without the character encoder) and labels."""

    tokenizer: Tokenizer
    chars: Vocab | None
    labels: Vocab
    lowercase: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "tokenizer": self.tokenizer.to_dict(),
                "chars": None if self.chars is None else self.chars.to_dict(), "labels": self.labels.to_dict(),
                "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifyVocabs:
        check_format(d, VOCAB_FORMAT, "classifier vocabularies")
        chars = None if d["chars"] is None else Vocab.from_dict(d["chars"])
        return cls(tokenizer_from_dict(d["tokenizer"]), chars, Vocab.from_dict(d["labels"]), bool(d["lowercase"]))

    def tokens(self, text: str) -> list[str]:
        """The symbols the model reads for ``text``."""
        return self.tokenizer.tokenize(text.lower() if self.lowercase else text)

    def encode(self, text: str, labels: Sequence[str] | None = None) -> Item:
        """One text (and its labels, if known) as ids; an empty token list is a ValueError."""
        text = text.lower() if self.lowercase else text
        ids = self.tokenizer.encode(text)  # one id per token
        if not ids:
            raise ValueError("the text has no token")
        chars = [self.chars.encode(list(w)) for w in self.tokenizer.tokenize(text)] if self.chars is not None else None
        known = None if labels is None else [self.labels.stoi[x] for x in labels if x in self.labels.stoi]
        unseen = 0 if labels is None else len(labels) - len(known)
        return Item(ids, chars, known, unseen)


@dataclass
class Item:
    """One encoded text: ``labels`` the ids of its known labels (None for prediction), ``unseen`` the
    number of its gold labels the run never saw in training."""

    words: list[int]
    chars: list[list[int]] | None
    labels: list[int] | None
    unseen: int = 0


def build_vocabs(cfg: ClassifyConfig, train: Sequence[Example], lm_tokenizer: Tokenizer | None) -> ClassifyVocabs:
    labels = label_vocab(train, multi_label=cfg.multi_label, where=cfg.train or "bundled data")
    texts = [ex.text.lower() if cfg.lowercase else ex.text for ex in train]
    if lm_tokenizer is not None and cfg.level == "subword":  # BPE pieces must be the LM's
        tokenizer = lm_tokenizer
    else:
        tokenizer = build_tokenizer(cfg.level, texts, min_count=cfg.min_count,
                                    max_size=None if cfg.level == "subword" else cfg.max_vocab,
                                    subword_vocab_size=cfg.subword_vocab)
    chars = Vocab.build([list(w) for t in texts for w in t.split()]) if cfg.chars else None
    return ClassifyVocabs(tokenizer, chars, labels, cfg.lowercase)


def encode_examples(vocabs: ClassifyVocabs, examples: Sequence[Example], name: str) -> list[Item]:
    out = []
    for ex in examples:
        try:
            out.append(vocabs.encode(ex.text, ex.labels))
        except ValueError:
            raise DataError(f"{name}:{ex.line}: the text has no token at this level") from None
    return out


def warn_unseen(items: Sequence[Item], name: str, labels: Sequence[str]) -> None:
    n = sum(1 for it in items if it.unseen)
    if n and is_main_process():
        print(f"rnnkit: warning: {name}: {n} example(s) have labels never seen in training (counted as "
              f"errors); training labels: {', '.join(labels)}", file=sys.stderr)


def model_config(cfg: ClassifyConfig, vocabs: ClassifyVocabs) -> ClassifierConfig:
    return ClassifierConfig(
        num_words=len(vocabs.tokenizer.vocab), num_classes=len(vocabs.labels),
        num_chars=len(vocabs.chars) if vocabs.chars is not None else 0, cell=cfg.cell, emb=cfg.emb,
        hidden=cfg.hidden, layers=cfg.layers, bidirectional=cfg.bidirectional, pooling=cfg.pooling,
        attention_hidden=cfg.attention_hidden, attention_heads=cfg.attention_heads, use_chars=cfg.chars,
        char_emb=cfg.char_emb, char_hidden=cfg.char_hidden, char_cell=cfg.char_cell, dropout=cfg.dropout,
        multi_label=cfg.multi_label, word_pad_id=vocabs.tokenizer.vocab.pad_id, char_pad_id=0)


def collate(items: Sequence[Item], vocabs: ClassifyVocabs, multi_label: bool, with_labels: bool) -> ClassifierBatch:
    targets = None
    if with_labels:
        targets = [it.labels for it in items] if multi_label else [it.labels[0] for it in items]
    return collate_classified([it.words for it in items],
                              [it.chars for it in items] if vocabs.chars is not None else None, targets,
                              num_classes=len(vocabs.labels) if multi_label and with_labels else None,
                              word_pad_id=vocabs.tokenizer.vocab.pad_id, char_pad_id=0)


def scorable(item: Item, multi_label: bool) -> bool:
    """Whether the loss can score ``item``: its gold labels are all known (multi-class: exactly one)."""
    return item.labels is not None and item.unseen == 0 and (multi_label or len(item.labels) == 1)


# --- prediction (shared by the task's validation and the API) ------------------------------------------

@torch.no_grad()
def probabilities(model: Classifier, items: Sequence[Item], vocabs: ClassifyVocabs, device: torch.device,
                  batch_size: int = EVAL_BATCH) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Class probabilities ``(N, K)`` of every item in input order, and each item's attention weights
    ``(r, T_i)`` (None without attention pooling); the model must be in eval mode."""
    batches = length_batches([len(it.words) for it in items], batch_size, shuffle=False, pool=None)
    probs, weights = [], []
    for idx in batches:
        batch = collate([items[i] for i in idx], vocabs, model.config.multi_label, False).to(device)
        p, a = model.probabilities(batch)
        probs.extend(p.float().cpu())
        lengths = batch.lengths.tolist()
        weights.extend([None] * len(idx) if a is None else [a[j, :, :n].float().cpu() for j, n in enumerate(lengths)])
    return torch.stack(restore_order(probs, batches)), restore_order(weights, batches)


def multi_hot(items: Sequence[Item], num_classes: int) -> torch.Tensor:
    gold = torch.zeros(len(items), num_classes)
    for i, it in enumerate(items):
        gold[i, it.labels] = 1.0
    return gold


def count_stats(probs: torch.Tensor, items: Sequence[Item], multi_label: bool, threshold: float) -> dict[str, float]:
    """Additive counts for the metrics: examples, exact matches, per-class tp/fp/fn and unseen gold labels."""
    k = probs.size(1)
    if multi_label:
        pred = probs > threshold
    else:
        pred = torch.zeros_like(probs, dtype=torch.bool)
        pred[torch.arange(len(items)), probs.argmax(dim=1)] = True
    gold = multi_hot(items, k).bool()
    unseen = torch.tensor([it.unseen for it in items], dtype=torch.float64)
    stats = {"examples": float(len(items)),
             "correct": float(((pred == gold).all(dim=1) & (unseen == 0)).sum()),
             "unseen": float(unseen.sum())}
    for c in range(k):
        stats[f"tp.{c}"] = float((pred[:, c] & gold[:, c]).sum())
        stats[f"fp.{c}"] = float((pred[:, c] & ~gold[:, c]).sum())
        stats[f"fn.{c}"] = float((~pred[:, c] & gold[:, c]).sum())
    return stats


def summarize_counts(stats: dict[str, float], num_classes: int) -> dict[str, float]:
    """Accuracy, micro- and macro-F1 from :func:`count_stats` (summed); unseen gold labels are misses."""
    tp, fp, fn = (sum(stats[f"{x}.{c}"] for c in range(num_classes)) for x in ("tp", "fp", "fn"))
    f1s = []
    for c in range(num_classes):
        den = 2 * stats[f"tp.{c}"] + stats[f"fp.{c}"] + stats[f"fn.{c}"]
        f1s.append(2 * stats[f"tp.{c}"] / den if den else 0.0)
    den = 2 * tp + fp + fn + stats["unseen"]
    return {"accuracy": stats["correct"] / max(1.0, stats["examples"]), "micro_f1": 2 * tp / den if den else 0.0,
            "macro_f1": sum(f1s) / num_classes}


class ClassifyTask(Task):
    """The engine's view of classification: length-bucketed batches of texts, loss summed over texts.

    Under torchrun, rank r of W takes texts ``r, r + W, ...`` of every batch (``batch_size`` must divide by
    W; a last batch with fewer than W texts is skipped by all ranks) and its share of the validation texts;
    :meth:`summarize` computes the metrics from the ranks' summed counts. The 'best' checkpoint follows
    validation accuracy (multi-label: micro-F1 at probability 0.5).
    """

    name = TASK

    def __init__(self, cfg: ClassifyConfig, vocabs: ClassifyVocabs, train: list[Item], valid: list[Item] | None,
                 device: torch.device, info: DistInfo | None = None) -> None:
        self.cfg, self.vocabs, self.device, self.info = cfg, vocabs, device, info or DistInfo()
        shard(cfg.batch_size, self.info, "batch_size")  # checks that batches split evenly over ranks
        self.train, self.valid = train, valid
        self.batches = RankBatches([len(it.words) for it in train], cfg.batch_size, seed=cfg.seed, bucket=cfg.bucket,
                                   rank=self.info.rank, world_size=self.info.world_size)
        self.has_valid = valid is not None
        self.num_classes = len(vocabs.labels)
        self.selects_on = ("micro_f1", "max") if cfg.multi_label else ("accuracy", "max")
        self.ddp_find_unused_parameters = False
        self.class_weights = None
        if cfg.class_weights == "balanced":
            counts = [0] * self.num_classes
            for it in train:
                counts[it.labels[0]] += 1
            self.class_weights = balanced_class_weights(counts).to(device)
        self.epoch = 0

    def param_groups(self, model: Classifier) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: one group, or ULMFiT's layer groups with ``lr_scale``."""
        if self.cfg.pretrained_lr_decay == 1.0:
            return [{"params": list(model.parameters())}]
        groups = discriminative_param_groups(model, 1.0, decay=self.cfg.pretrained_lr_decay)
        return [{"params": g["params"], "lr_scale": g["lr"]} for g in groups]

    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def train_batches(self, epoch: int, start: int) -> Iterator[ClassifierBatch]:
        self.epoch = epoch  # gradual unfreezing follows the epoch
        for idx in self.batches.epoch(epoch)[start:]:
            yield collate([self.train[i] for i in idx], self.vocabs, self.cfg.multi_label, True)

    def train_loss(self, model: Classifier, batch: ClassifierBatch, carry: Any) -> StepResult:
        if self.cfg.unfreeze:
            groups = layer_groups(model)
            GradualUnfreezing(len(groups), self.cfg.unfreeze).apply(groups, self.epoch)
        loss_sum, n = model.loss(batch.to(self.device), label_smoothing=self.cfg.label_smoothing,
                                 class_weights=self.class_weights, penalty=self.cfg.penalty)
        return StepResult(loss_sum, n)

    @torch.no_grad()
    def evaluate_stats(self, model: Classifier) -> dict[str, float]:
        """Summed loss and counts on this rank's share of the validation texts."""
        assert self.valid is not None
        mine = [self.valid[i] for i in range(self.info.rank, len(self.valid), self.info.world_size)]
        stats = {"loss_sum": 0.0, "loss_examples": 0.0, **count_stats(torch.zeros(0, self.num_classes), [],
                                                                       self.cfg.multi_label, DEFAULT_THRESHOLD)}
        if not mine:
            return stats
        probs, _ = probabilities(model, mine, self.vocabs, self.device)
        stats.update(count_stats(probs, mine, self.cfg.multi_label, DEFAULT_THRESHOLD))
        known = [it for it in mine if scorable(it, self.cfg.multi_label)]
        for start in range(0, len(known), EVAL_BATCH):
            batch = collate(known[start:start + EVAL_BATCH], self.vocabs, self.cfg.multi_label, True)
            loss, n = model.loss(batch.to(self.device))
            stats["loss_sum"] += float(loss)
            stats["loss_examples"] += n
        return stats

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        """Loss per text, accuracy, micro- and macro-F1 from the summed statistics."""
        return {"loss": stats["loss_sum"] / max(1.0, stats["loss_examples"]),
                **summarize_counts(stats, self.num_classes)}


# --- the Python API ----------------------------------------------------------------------------------

def read_threshold(run_dir: Path) -> float:
    """The stored multi-label decision threshold of a run (see the module docstring)."""
    data = read_json(run_dir / THRESHOLD, "decision threshold")
    value = data.get("threshold") if isinstance(data, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise DataError(f"{run_dir / THRESHOLD}: damaged threshold file (no 'threshold' in [0, 1])")
    return float(value)


@dataclass
class ClassifyRun:
    """A trained classifier loaded from a run folder: classify texts, evaluate on labelled files, explain."""

    path: Path
    config: ClassifyConfig
    vocabs: ClassifyVocabs
    model: Classifier
    device: torch.device
    checkpoint: str = "best"
    threshold: float = field(default=DEFAULT_THRESHOLD)

    def __post_init__(self) -> None:
        if self.config.multi_label and (Path(self.path) / THRESHOLD).is_file():
            self.threshold = read_threshold(Path(self.path))

    @property
    def labels(self) -> list[str]:
        """The classes, in id order."""
        return list(self.vocabs.labels.itos)

    def _items(self, texts: Sequence[str]) -> list[Item]:
        if isinstance(texts, str):
            raise TypeError("expected a list of texts, got a str; wrap it: [text]")
        items = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i}: expected a str, got {type(text).__name__}")
            try:
                items.append(self.vocabs.encode(text))
            except ValueError:
                raise DataError(f"text {i}: empty (no token to classify)") from None
        return items

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities ``(N, K)`` of texts (softmax; multi-label: a sigmoid per label)."""
        items = self._items(texts)
        if not items:
            return torch.zeros(0, len(self.labels))
        return probabilities(self.model, items, self.vocabs, self.device)[0]

    def predict(self, texts: Sequence[str], *, top_k: int | None = None, probs: bool = False) -> list[Any]:
        """Predictions for texts, in input order.

        - default: the label of each text (multi-label: the list of labels above the run's threshold);
        - ``top_k=k``: the ``k`` most probable labels of each text, as ``[(label, probability), ...]``;
        - ``probs=True``: the predicted label(s) with their probabilities, as ``[(label, probability), ...]``
          (multi-class: one pair).
        """
        if top_k is not None and not 1 <= top_k <= len(self.labels):
            raise ConfigError(f"field 'top_k': must be in 1..{len(self.labels)} (the number of classes), got {top_k}")
        p = self.probabilities(texts)
        out: list[Any] = []
        for row in p.tolist():
            if top_k is not None:
                order = sorted(range(len(row)), key=lambda c: -row[c])[:top_k]
            elif self.config.multi_label:
                order = [c for c in sorted(range(len(row)), key=lambda c: -row[c]) if row[c] > self.threshold]
            else:
                order = [max(range(len(row)), key=lambda c: row[c])]
            if top_k is not None or probs:
                out.append([(self.labels[c], row[c]) for c in order])
            else:
                out.append([self.labels[c] for c in order] if self.config.multi_label else self.labels[order[0]])
        return out

    def _gold_and_pred(self, path: str | Path | Sequence[Example] | None) -> tuple[list, list]:
        if path is None:
            _, examples, _ = load_examples(self.config)
            if examples is None:
                raise ConfigError("field 'test': the run has no validation data; give a test file")
        elif isinstance(path, (str, Path)):
            examples = read_examples(self.config, path, "test data")
        else:
            examples = list(path)
        pred = self.predict([ex.text for ex in examples])
        if self.config.multi_label:
            return [list(ex.labels) for ex in examples], pred
        return [ex.labels[0] for ex in examples], pred

    def evaluate(self, path: str | Path | Sequence[Example] | None = None) -> dict[str, Any]:
        """Accuracy, macro-F1, micro-F1, per-class precision/recall/F1/support and the number of examples
        on a labelled file (read with the run's format settings) or a list of
        :class:`~rnnkit.data.classify.Example`; with no argument, the run's validation data. Gold labels
        never seen in training count as errors and are reported in ``unseen_label_examples`` /
        ``unseen_labels`` (see :func:`~rnnkit.metrics.classification.classification_report`)."""
        gold, pred = self._gold_and_pred(path)
        report = classification_report(gold, pred, multi_label=self.config.multi_label, train_labels=self.labels)
        if self.config.multi_label:
            report["threshold"] = self.threshold
        return report

    def confusion(self, path: str | Path | Sequence[Example] | None = None) -> tuple[list[list[int]], list[str]]:
        """The confusion matrix (rows gold, columns predicted) on labelled data, and its labels: the
        training classes, then any gold label unseen in training. Multi-class runs only."""
        if self.config.multi_label:
            raise ConfigError("field 'confusion': a confusion matrix is for multi-class runs, not multi-label ones")
        gold, pred = self._gold_and_pred(path)
        labels = self.labels + sorted(set(gold) - set(self.labels))
        return confusion_matrix(gold, pred, labels), labels

    def explain(self, text: str) -> tuple[list[str], list[list[float]]]:
        """The tokens of ``text`` and the attention-pooling weights over them (one row per head)."""
        if self.config.pooling != "attention":
            raise ConfigError(f"field 'pooling': explain shows attention-pooling weights; this run pools with "
                              f"{self.config.pooling} (train with --pooling attention)")
        items = self._items([text])
        _, weights = probabilities(self.model, items, self.vocabs, self.device)
        return self.vocabs.tokens(text), weights[0].tolist()


# --- the driver's spec ---------------------------------------------------------------------------------

@dataclass
class ClassifyData:
    """A run's encoded data: training and validation items (None without validation data) and, for a new
    run with ``init_from``, the language model run to start from."""

    train: list[Item]
    valid: list[Item] | None
    lm: Any = None
    vocab: Vocab | None = None  # the classifier's token vocabulary, with ``lm``


def check_processes(cfg: ClassifyConfig) -> None:
    """Refuse gradual unfreezing under torchrun (after the process group is joined, before anything is written)."""
    if cfg.unfreeze and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise ConfigError("field 'unfreeze': gradual unfreezing changes which parameters train from one epoch to "
                          "the next, which DistributedDataParallel does not allow; train in one process or use "
                          "--unfreeze 0")


def load_lm(cfg: ClassifyConfig) -> Any:
    """The ``init_from`` LM run, checked against the config (level, cell and sizes); None without it."""
    if cfg.init_from is None:
        return None
    run = lm_task.load(cfg.init_from, device="cpu")
    if run.tokenizer.level != cfg.level:
        raise ConfigError(f"init_from: level: the language model {cfg.init_from} reads "
                          f"{run.tokenizer.level} tokens, the classifier {cfg.level} (they must match)")
    return run


def _encoded(cfg: ClassifyConfig, vocabs: ClassifyVocabs, train: list[Example], valid: list[Example] | None,
             train_name: str) -> tuple[list[Item], list[Item] | None]:
    train_items = encode_examples(vocabs, train, train_name)
    valid_items = encode_examples(vocabs, valid, cfg.valid or "bundled data (dev)") if valid is not None else None
    if valid_items is not None:
        warn_unseen(valid_items, cfg.valid or "bundled data (dev)", vocabs.labels.itos)
    return train_items, valid_items


def prepare(cfg: ClassifyConfig) -> tuple[ClassifyVocabs, ClassifyData]:
    """Read, check and encode the data of a new run, load and check ``init_from``; nothing is written."""
    check_processes(cfg)
    train, valid, train_name = load_examples(cfg)
    lm = load_lm(cfg)
    vocabs = build_vocabs(cfg, train, lm.tokenizer if lm is not None else None)
    if lm is not None:
        check_lm_compatible(model_config(cfg, vocabs), lm.model.config)
    if cfg.multi_label and valid is not None and not any(set(ex.labels) & set(vocabs.labels.itos) for ex in valid):
        raise DataError(f"{cfg.valid or 'bundled data'}: no validation text has a training label; the decision "
                        "threshold cannot be chosen")
    train_items, valid_items = _encoded(cfg, vocabs, train, valid, train_name)
    return vocabs, ClassifyData(train_items, valid_items, lm, vocabs.tokenizer.vocab)


def datasets(cfg: ClassifyConfig, vocabs: ClassifyVocabs) -> ClassifyData:
    """The training and validation data of a resumed run, encoded with its saved vocabularies."""
    check_processes(cfg)
    train, valid, train_name = load_examples(cfg)
    train_items, valid_items = _encoded(cfg, vocabs, train, valid, train_name)
    bad = next((ex for ex, it in zip(train, train_items) if it.unseen), None)
    if bad is not None:
        raise DataError(f"{train_name}:{bad.line}: a label the run's label set lacks; the training data changed "
                        "since the run started")
    return ClassifyData(train_items, valid_items)


class ClassifySpec(TaskSpec[ClassifyConfig, ClassifyVocabs, ClassifyData]):
    """Text classification for the driver: tokenizer, labels, :class:`Classifier`; multi-label runs get
    their decision threshold after training (:meth:`after_training`)."""

    name = TASK
    config_class = ClassifyConfig
    model_class = Classifier
    run_class = ClassifyRun
    prepare = staticmethod(prepare)
    datasets = staticmethod(datasets)
    vocab_from_dict = staticmethod(ClassifyVocabs.from_dict)
    model_config = staticmethod(model_config)

    def init_model(self, model: Classifier, data: ClassifyData) -> None:
        if data.lm is not None:
            found = init_from_lm(model, data.lm.model.to(next(model.parameters()).device), data.lm.tokenizer.vocab,
                                 data.vocab)
            if is_main_process():
                print(f"rnnkit: initialised from {data.lm.path}: {found} of {len(data.vocab)} "
                      f"tokens have a pre-trained embedding", file=sys.stderr)

    def engine_task(self, cfg: ClassifyConfig, vocabs: ClassifyVocabs, data: ClassifyData, device: torch.device,
                    info: DistInfo) -> ClassifyTask:
        return ClassifyTask(cfg, vocabs, data.train, data.valid, device, info)

    def after_training(self, run: ClassifyRun) -> ClassifyRun:
        """Multi-label runs: choose the decision threshold on the validation data, store it in the run."""
        if not run.config.multi_label:
            return run
        threshold = DEFAULT_THRESHOLD
        _, valid, _ = load_examples(run.config)
        if valid is not None:
            items = [it for it in encode_examples(run.vocabs, valid, "validation data") if it.labels]
            probs, _ = probabilities(run.model, items, run.vocabs, run.device)
            threshold = choose_threshold(probs, multi_hot(items, len(run.labels)))
        if is_main_process():
            ck.atomic_write_text(Path(run.path) / THRESHOLD, json.dumps({"threshold": threshold}) + "\n")
        dist.barrier()
        run.threshold = threshold
        return run


DRIVER = Driver(ClassifySpec())

# the Python API: make_config(**fields), train(config=None, *, overwrite=False, progress=True, **fields),
# resume(run_dir, *, progress=True, **stopping_fields), load(run_dir, checkpoint="best", device="auto")
make_config, train, resume, load = DRIVER.make_config, DRIVER.train, DRIVER.resume, DRIVER.load
