"""Sequence labelling, end to end: config, data, the engine's task, and the Python API.

    import rnnkit.tasks.tag as tag
    run = tag.train(out="runs/pos", max_steps=300)          # bundled UD English EWT, UPOS
    run.predict([["I", "saw", "her", "duck", "."]])          # [['PRON', 'VERB', 'PRON', 'NOUN', 'PUNCT']]
    run.evaluate(tag.bundled_ud_ewt()["test"])              # {"accuracy", "precision", "recall", "f1", "tokens", ...}
    run = tag.load("runs/pos")                               # later, in another process

Data are CoNLL-U files (label column ``upos`` or ``xpos``) or CoNLL-2003-style column files (label column
a 0-based index, default -1 = the last), read by :func:`rnnkit.data.conll.read_tagged`. Training batches
hold sentences of similar length (:func:`rnnkit.data.batching.length_batches`, seeded by (seed, epoch),
so a resumed run sees the same batches); the loss is summed over real tokens and the engine divides
by their number. Predictions come back in input order.

Vocabularies: words (``<pad>``, ``<unk>``; words seen fewer than ``min_count`` times are ``<unk>``; with
``lowercase`` the word embeddings are keyed by lowercased words, while the character encoder still reads the
word as written), characters (``<pad>``, ``<unk>``) and tags (no specials); all three are saved in
``RUN/tokenizer.json``.
During training each real word is replaced by ``<unk>`` with probability ``word_dropout``, so the
``<unk>`` embedding is trained for the unseen words of test data.

The CLI (``rnnkit tag ...``) is a thin layer over :func:`train`, :func:`resume` and :func:`load`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.batching import RankBatches, length_batches, restore_order
from rnnkit.data.conll import CONLLU_COLUMNS, Sentence, bundled_ud_ewt, read_tagged
from rnnkit.data.vectors import load_word_vectors
from rnnkit.data.vocab import Vocab, check_format
from rnnkit.errors import ConfigError, DataError
from rnnkit.metrics.tagging import detect_scheme, span_scores, tagging_report
from rnnkit.models.tagger import Tagger, TaggerBatch, TaggerConfig, collate_tagged
from rnnkit.nn.crf import bio_constraints
from rnnkit.nn.registry import describe_cells, resolve_cell
from rnnkit.train.config import TrainConfig, option, task_default, train_option, valid_option
from rnnkit.train.distributed import DistInfo, is_main_process, shard
from rnnkit.train.driver import Driver, TaskSpec
from rnnkit.train.engine import StepResult, Task

__all__ = ["TagConfig", "TagRun", "TagTask", "TagVocabs", "bundled_ud_ewt", "load", "make_config",
           "resume", "train"]

TASK = "tag"
VOCAB_FORMAT = "rnnkit.tag-vocab/1"
EVAL_BATCH = 128  # sentences per batch when predicting or evaluating (no gradients: bigger is cheaper)


@dataclass(frozen=True)
class TagConfig(TrainConfig):
    """Everything ``rnnkit tag train`` needs: data, model and training fields (flag ``--x-y`` = field x_y)."""

    train: str | None = train_option("training data, CoNLL-U or column file", "the bundled UD English EWT train split")
    valid: str | None = valid_option("validation data", "the EWT dev split")
    column: str | None = option(None, "label column: upos or xpos for CoNLL-U (default upos), a 0-based "
                                "index for column files (default -1, the last)")
    out: str = option("runs/tag", "run folder to write")
    min_count: int = option(1, "words seen fewer times in training become <unk>", low=1)
    lowercase: bool = option(False, "look word embeddings up by the lowercased word (the character encoder "
                             "still sees the case): fewer unseen words")
    word_dropout: float = option(0.05, "training: replace each word by <unk> with this probability", fraction=True)
    word_vectors: str | None = option(None, "pre-trained word vectors, word2vec/GloVe text format (their "
                                      "size must equal --emb)", data_file=True)
    emb: int = option(100, "word embedding size", low=1)
    chars: bool = option(True, "character encoder for each word (a bidirectional --char-cell)")
    char_emb: int = option(32, "character embedding size", low=1)
    char_hidden: int = option(64, "character encoder hidden size per direction", low=1)
    max_word_chars: int = option(24, "the character encoder reads a word's first and last N/2 characters "
                                 "(0 = all)", low=0)
    cell: str = option("lstm", f"recurrent cell of the sentence encoder: {describe_cells()}", check=resolve_cell)
    char_cell: str = option("lstm", f"recurrent cell of the character encoder: {describe_cells()}",
                            check=resolve_cell)
    hidden: int = option(192, "sentence encoder hidden size per direction", low=1)
    layers: int = option(1, "stacked sentence encoder layers", low=1)
    dropout: float = option(0.33, "dropout on embeddings, between layers and before the output layer", fraction=True)
    crf: bool = option(False, "linear-chain CRF output layer (Viterbi decoding) instead of a softmax")
    constraints: str = option("auto", "CRF transition constraints: auto = BIO/BIOES constraints when the tag "
                              "set is BIO/BIOES and every training sentence obeys them", choices=("auto", "none"))
    batch_size: int = option(32, "sentences per batch", low=1)
    bucket: bool = option(True, "batch sentences of similar length together (less padding)")
    # the default run: UPOS on the bundled UD English EWT inside a few minutes on 2 CPU cores
    time_budget: float | None = task_default("time_budget", 240.0)
    eval_every: int = task_default("eval_every", 150)

    def validate(self) -> None:
        check_column(self.column)

    def model_config(self, vocabs: TagVocabs) -> TaggerConfig:
        return TaggerConfig(num_words=len(vocabs.words), num_tags=len(vocabs.tags),
                            num_chars=len(vocabs.chars) if vocabs.chars is not None else 0, emb=self.emb,
                            char_emb=self.char_emb, char_hidden=self.char_hidden, hidden=self.hidden,
                            layers=self.layers, dropout=self.dropout, crf=self.crf, use_chars=self.chars,
                            word_pad_id=vocabs.words.pad_id, char_pad_id=0, cell=self.cell,
                            char_cell=self.char_cell)


def check_column(column: str | int | None) -> None:
    """Reject a label column that fits no format: not upos/xpos and not a nonzero integer."""
    if column is None or str(column).lower() in CONLLU_COLUMNS:
        return
    try:
        index = int(column)
    except ValueError:
        raise ValueError(f"field 'column': {column!r} is not upos, xpos (CoNLL-U) or a column number "
                         f"(column files)") from None
    if index == 0:
        raise ValueError("field 'column': 0 is the token column; labels are in column 1 or later (or -1 = last)")


# --- data --------------------------------------------------------------------------------------------

def read_data(path: str | Path, column: str | None, what: str) -> list[Sentence]:
    """Tagged sentences of a CoNLL-U or column file; ``column`` None = the format's default."""
    return read_tagged(path, column, what=what)


def load_sentences(cfg: TagConfig) -> tuple[list[Sentence], list[Sentence] | None, str, str | None]:
    """(train, valid or None, train name, valid name) for a config; reads and checks the files."""
    if cfg.train is None:
        if cfg.valid is not None:
            raise ConfigError("field 'valid': give --train too, or neither for the bundled corpus")
        paths = bundled_ud_ewt()
        return (read_data(paths["train"], cfg.column, "training data"),
                read_data(paths["dev"], cfg.column, "validation data"), str(paths["train"]), str(paths["dev"]))
    train = read_data(cfg.train, cfg.column, "training data")
    valid = read_data(cfg.valid, cfg.column, "validation data") if cfg.valid is not None else None
    return train, valid, cfg.train, cfg.valid


@dataclass
class TagVocabs:
    """Word, character (None without the character encoder) and tag vocabularies of a run."""

    words: Vocab
    chars: Vocab | None
    tags: Vocab
    max_word_chars: int = 0
    lowercase: bool = False

    @classmethod
    def build(cls, sentences: Sequence[Sentence], cfg: TagConfig) -> TagVocabs:
        tokens = [s.tokens for s in sentences]
        keys = [[w.lower() for w in sent] for sent in tokens] if cfg.lowercase else tokens
        words = Vocab.build(keys, min_count=cfg.min_count)
        chars = Vocab.build([list(w) for sent in tokens for w in sent]) if cfg.chars else None
        tags = Vocab.build([s.labels for s in sentences], specials=(), unk=None)
        return cls(words, chars, tags, cfg.max_word_chars, cfg.lowercase)

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "words": self.words.to_dict(),
                "chars": None if self.chars is None else self.chars.to_dict(), "tags": self.tags.to_dict(),
                "max_word_chars": self.max_word_chars, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TagVocabs:
        check_format(d, VOCAB_FORMAT, "tagger vocabularies")
        chars = None if d["chars"] is None else Vocab.from_dict(d["chars"])
        return cls(Vocab.from_dict(d["words"]), chars, Vocab.from_dict(d["tags"]), int(d["max_word_chars"]),
                   bool(d.get("lowercase", False)))  # runs saved before the field existed: case-sensitive

    def word_ids(self, tokens: Sequence[str]) -> list[int]:
        """Word-embedding ids of tokens (looked up lowercased when the run was trained so)."""
        return self.words.encode([w.lower() for w in tokens] if self.lowercase else tokens)

    def word_chars(self, word: str) -> list[int]:
        """Character ids of a word: its first and last ``max_word_chars / 2`` characters (all when 0)."""
        n = self.max_word_chars
        if n and len(word) > n:
            word = word[: (n + 1) // 2] + word[len(word) - n // 2:]
        return self.chars.encode(word)


@dataclass
class Example:
    """One encoded sentence; ``tags`` is None when unknown (prediction) or holding an unseen label."""

    words: list[int]
    chars: list[list[int]] | None
    tags: list[int] | None


def encode(vocabs: TagVocabs, tokens: Sequence[str], labels: Sequence[str] | None = None) -> Example:
    tags = None
    if labels is not None and all(lab in vocabs.tags.stoi for lab in labels):
        tags = [vocabs.tags.stoi[lab] for lab in labels]
    chars = [vocabs.word_chars(w) for w in tokens] if vocabs.chars is not None else None
    return Example(vocabs.word_ids(tokens), chars, tags)


def collate(examples: Sequence[Example], vocabs: TagVocabs, with_tags: bool) -> TaggerBatch:
    return collate_tagged([e.words for e in examples],
                          [e.chars for e in examples] if vocabs.chars is not None else None,
                          [e.tags for e in examples] if with_tags else None,
                          word_pad_id=vocabs.words.pad_id, char_pad_id=0)


def constraint_scheme(cfg: TagConfig, vocabs: TagVocabs, train: Sequence[Example], train_name: str) -> str | None:
    """The scheme ('BIO'/'BIOES') whose CRF constraints to apply, or None (see the ``constraints`` field)."""
    if not cfg.crf or cfg.constraints == "none":
        return None
    labels = vocabs.tags.itos
    scheme = detect_scheme(labels)
    if scheme is None:
        return None
    trans, start, end = (m.tolist() for m in bio_constraints(labels, scheme))
    for i, ex in enumerate(train, start=1):
        t = ex.tags
        bad = None
        if not start[t[0]]:
            bad = f"starts with {labels[t[0]]}"
        elif not end[t[-1]]:
            bad = f"ends with {labels[t[-1]]}"
        else:
            step = next((k for k in range(1, len(t)) if not trans[t[k - 1]][t[k]]), None)
            if step is not None:
                bad = f"has {labels[t[step - 1]]} -> {labels[t[step]]}"
        if bad:
            if is_main_process():
                print(f"rnnkit: note: {train_name}: sentence {i} {bad}, which {scheme} forbids; the CRF is "
                      f"trained without transition constraints", file=sys.stderr)
            return None
    return scheme


# --- prediction and scoring (shared by the task's validation and the API) -----------------------------

@torch.no_grad()
def predict_examples(model: Tagger, examples: Sequence[Example], vocabs: TagVocabs, device: torch.device,
                     batch_size: int = EVAL_BATCH, *, with_loss: bool = False) -> tuple[list[list[int]], float, int]:
    """Tag ids of every example, in input order, and (``with_loss``) the summed loss and token count of
    the examples whose gold tags are known. Sentences are sorted by length for batching; the model
    must be in eval mode."""
    batches = length_batches([len(e.words) for e in examples], batch_size, shuffle=False, pool=None)
    predictions: list[list[int]] = []
    loss_sum, loss_tokens = 0.0, 0
    for idx in batches:
        group = [examples[i] for i in idx]
        batch = collate(group, vocabs, with_tags=False).to(device)
        predictions.extend(model.predict(batch))
        if with_loss:
            known = [e for e in group if e.tags is not None]
            if known:
                loss, n = model.loss(collate(known, vocabs, with_tags=True).to(device))
                loss_sum += float(loss)
                loss_tokens += n
    return restore_order(predictions, batches), loss_sum, loss_tokens


def score_labels(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], vocabs: TagVocabs) -> dict[str, Any]:
    """Accuracy and span P/R/F1 (BIO/BIOES tag sets; token-level micro otherwise), unseen gold labels counted."""
    scheme = detect_scheme(vocabs.tags.itos) or "token"
    return tagging_report(gold, pred, scheme=scheme, train_labels=vocabs.tags.itos)


class TagTask(Task):
    """The engine's view of tagging: length-bucketed batches of sentences, loss summed over real tokens.

    Under torchrun, rank r of W takes sentences ``r, r + W, ...`` of every batch (``batch_size`` must
    divide by W; a last batch with fewer than W sentences is skipped by all ranks) and its share of
    the validation sentences; :meth:`summarize` combines the ranks' sums.

    The 'best' checkpoint (and early stopping) follows validation accuracy, or span F1 for BIO/BIOES tag
    sets: what a tagger is judged on. The valid loss turns up early (over-confident probabilities) while
    accuracy still improves (UD EWT: lowest dev loss at step 2000 with 93.9%, 94.3% at step 5000).
    """

    name = TASK

    def __init__(self, cfg: TagConfig, vocabs: TagVocabs, train: list[Example], valid: list[Example] | None,
                 valid_gold: list[list[str]] | None, device: torch.device, info: DistInfo | None = None) -> None:
        self.cfg, self.vocabs, self.device, self.info = cfg, vocabs, device, info or DistInfo()
        shard(cfg.batch_size, self.info, "batch_size")  # checks that batches split evenly over ranks
        self.train = train
        self.batches = RankBatches([len(e.words) for e in train], cfg.batch_size, seed=cfg.seed, bucket=cfg.bucket,
                                   rank=self.info.rank, world_size=self.info.world_size)
        self.valid, self.valid_gold = valid, valid_gold
        self.has_valid = valid is not None
        self.unk_id = vocabs.words.unk_id
        self.scheme = detect_scheme(vocabs.tags.itos)  # BIO / BIOES, or None: no spans
        self.selects_on = ("accuracy", "max") if self.scheme is None else ("f1", "max")
        self.ddp_find_unused_parameters = False

    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def train_batches(self, epoch: int, start: int) -> Iterator[TaggerBatch]:
        for idx in self.batches.epoch(epoch)[start:]:
            yield collate([self.train[i] for i in idx], self.vocabs, with_tags=True)

    def train_loss(self, model: Tagger, batch: TaggerBatch, carry: Any) -> StepResult:
        if self.cfg.word_dropout > 0:
            real = torch.arange(batch.words.size(1)).unsqueeze(0) < batch.lengths.unsqueeze(1)  # (B, T)
            drop = (torch.rand(batch.words.shape) < self.cfg.word_dropout) & real
            batch.words = batch.words.masked_fill(drop, self.unk_id)
        loss_sum, tokens = model.loss(batch.to(self.device))
        return StepResult(loss_sum, tokens)

    def evaluate_stats(self, model: Tagger) -> dict[str, float]:
        """Summed loss, token and (span) counts on this rank's share of the validation sentences."""
        assert self.valid is not None and self.valid_gold is not None
        mine = range(self.info.rank, len(self.valid), self.info.world_size)
        stats = {"loss_sum": 0.0, "loss_tokens": 0.0, "correct_tokens": 0.0, "tokens": 0.0, "correct": 0.0,
                 "predicted": 0.0, "gold": 0.0}
        if not mine:
            return stats
        pred_ids, loss_sum, loss_tokens = predict_examples(model, [self.valid[i] for i in mine], self.vocabs,
                                                           self.device, with_loss=True)
        gold = [self.valid_gold[i] for i in mine]
        pred = [self.vocabs.tags.decode(p) for p in pred_ids]
        spans = span_scores(gold, pred, self.scheme or "token")
        right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
        stats.update(loss_sum=loss_sum, loss_tokens=loss_tokens, tokens=sum(len(g) for g in gold),
                     correct_tokens=right, correct=spans["correct"], predicted=spans["predicted"], gold=spans["gold"])
        return stats

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        """Validation metrics from summed statistics: loss per token, accuracy, span P/R/F1 (BIO/BIOES)."""
        out = {"loss": stats["loss_sum"] / max(1.0, stats["loss_tokens"]),
               "accuracy": stats["correct_tokens"] / max(1.0, stats["tokens"])}
        if self.scheme is not None:
            p = stats["correct"] / stats["predicted"] if stats["predicted"] else 0.0
            r = stats["correct"] / stats["gold"] if stats["gold"] else 0.0
            out.update(precision=p, recall=r, f1=2 * p * r / (p + r) if p + r else 0.0)
        return out

    def evaluate(self, model: Tagger) -> dict[str, float]:
        """Validation metrics of one process (the engine calls :meth:`evaluate_stats` and :meth:`summarize`)."""
        return self.summarize(self.evaluate_stats(model))


# --- the Python API ----------------------------------------------------------------------------------

@dataclass
class TagRun:
    """A trained tagger loaded from a run folder: tag sentences and evaluate on labelled files."""

    path: Path
    config: TagConfig
    vocabs: TagVocabs
    model: Tagger
    device: torch.device
    checkpoint: str = "best"

    @property
    def labels(self) -> list[str]:
        """The tag set, in id order."""
        return list(self.vocabs.tags.itos)

    def predict(self, sentences: Sequence[Sequence[str]], *, batch_size: int = EVAL_BATCH) -> list[list[str]]:
        """Tags of tokenised sentences, one list per sentence in input order (an empty sentence gets [])."""
        sentences = list(sentences)
        for i, s in enumerate(sentences):
            if isinstance(s, str) or not all(isinstance(t, str) for t in s):
                raise TypeError(f"sentence {i}: expected a list of token strings, got {type(s).__name__}")
        keep = [i for i, s in enumerate(sentences) if len(s) > 0]
        examples = [encode(self.vocabs, sentences[i]) for i in keep]
        out: list[list[str]] = [[] for _ in sentences]
        if examples:
            ids, _, _ = predict_examples(self.model, examples, self.vocabs, self.device, batch_size)
            for i, p in zip(keep, ids):
                out[i] = self.vocabs.tags.decode(p)
        return out

    def evaluate_sentences(self, sentences: Sequence[Sentence]) -> dict[str, Any]:
        """Scores on labelled sentences (see :meth:`evaluate`)."""
        pred = self.predict([s.tokens for s in sentences])
        report = score_labels([s.labels for s in sentences], pred, self.vocabs)
        report["sentences"] = len(sentences)
        return report

    def evaluate(self, path: str | Path | None = None, column: str | int | None = None) -> dict[str, Any]:
        """Accuracy, precision, recall, F1 and token count on a CoNLL-U or column file.

        Span (conlleval) scores for BIO/BIOES tag sets, token-level micro scores otherwise
        (``span_level`` says which). Gold labels never seen in training count as errors and are
        reported in ``unseen_label_tokens`` / ``unseen_labels``. With no path: the run's validation
        data. ``column`` defaults to the run's.
        """
        if path is None:
            _, valid, _, _ = load_sentences(self.config)
            if valid is None:
                raise ConfigError("field 'test': the run has no validation data; give a test file")
            return self.evaluate_sentences(valid)
        if column is not None:
            try:
                check_column(column)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        col = self.config.column if column is None else str(column)
        return self.evaluate_sentences(read_data(path, col, "test data"))


def _examples(vocabs: TagVocabs, sentences: Sequence[Sentence]) -> list[Example]:
    return [encode(vocabs, s.tokens, s.labels) for s in sentences]


def prepare(cfg: TagConfig) -> tuple[TagVocabs, list[Example], list[Sentence] | None, str, tuple | None]:
    """Read, check and encode the data of a config (nothing is written).

    Returns (vocabularies, training examples, validation sentences, training data name, and the
    ``(vectors, found)`` pair of :func:`load_word_vectors` or None).
    """
    train, valid, train_name, _ = load_sentences(cfg)
    vocabs = TagVocabs.build(train, cfg)
    if len(vocabs.tags) < 2:
        raise DataError(f"{train_name}: every token has the label {vocabs.tags.itos[0]!r}; nothing to learn "
                        f"(wrong --column?)")
    vectors = None
    if cfg.word_vectors is not None:
        vectors, found = load_word_vectors(cfg.word_vectors, vocabs.words)
        if vectors.size(1) != cfg.emb:
            raise ConfigError(f"field 'emb': {cfg.word_vectors} has {vectors.size(1)}-dimensional vectors, "
                              f"but --emb is {cfg.emb}")
        if is_main_process():
            print(f"rnnkit: {int(found.sum())} of {len(vocabs.words) - 2} training words have a pre-trained "
                  f"vector", file=sys.stderr)
        vectors = (vectors, found)
    return vocabs, _examples(vocabs, train), valid, train_name, vectors


@dataclass
class TagData:
    """A tagging run's encoded data: training examples, validation sentences (None without validation
    data) and, for a new run, the training data's name and pre-trained vectors (see :func:`prepare`)."""

    train: list[Example]
    valid: list[Sentence] | None
    train_name: str
    vectors: tuple | None = None


class TagSpec(TaskSpec[TagConfig, TagVocabs, TagData]):
    """Sequence labelling for the driver: word/char/tag vocabularies, sentences, :class:`Tagger`.

    Checkpoints store ``constraints``, the scheme of the CRF's transition constraints (or None).
    """

    name = TASK
    run_class = TagRun
    meta_keys = ("constraints",)
    vocab_from_dict = staticmethod(TagVocabs.from_dict)

    def prepare(self, cfg: TagConfig) -> tuple[TagVocabs, TagData]:
        vocabs, train_ex, valid, train_name, vectors = prepare(cfg)
        return vocabs, TagData(train_ex, valid, train_name, vectors)

    def datasets(self, cfg: TagConfig, vocabs: TagVocabs) -> TagData:
        """The training and validation data of a resumed run, encoded with its saved vocabularies."""
        train_sents, valid, train_name, _ = load_sentences(cfg)
        train_ex = _examples(vocabs, train_sents)
        missing = next((i for i, e in enumerate(train_ex) if e.tags is None), None)
        if missing is not None:
            raise DataError(f"{train_name}: sentence {missing + 1} has a label the run's tag set lacks; "
                            f"the training data changed since the run started")
        return TagData(train_ex, valid, train_name)

    def model_config(self, cfg: TagConfig, vocabs: TagVocabs) -> TaggerConfig:
        return cfg.model_config(vocabs)

    def run_meta(self, cfg: TagConfig, vocabs: TagVocabs, data: TagData) -> dict[str, Any]:
        return {"constraints": constraint_scheme(cfg, vocabs, data.train, data.train_name)}

    def build_model(self, cfg: TagConfig, vocabs: TagVocabs, meta: dict[str, Any]) -> Tagger:
        scheme = meta["constraints"]
        constraints = None if scheme is None else bio_constraints(vocabs.tags.itos, scheme)
        return Tagger(cfg.model_config(vocabs), crf_constraints=constraints)

    def init_model(self, model: Tagger, data: TagData) -> None:
        if data.vectors is not None:
            vectors, found = data.vectors
            model.set_word_vectors(vectors.to(next(model.parameters()).device), found=found)

    def engine_task(self, cfg: TagConfig, vocabs: TagVocabs, data: TagData, device: torch.device,
                    info: DistInfo) -> TagTask:
        valid_ex = _examples(vocabs, data.valid) if data.valid is not None else None
        gold = [s.labels for s in data.valid] if data.valid is not None else None
        return TagTask(cfg, vocabs, data.train, valid_ex, gold, device, info)


DRIVER = Driver(TagSpec())

# the Python API: make_config(**fields), train(config=None, *, overwrite=False, progress=True, **fields),
# resume(run_dir, *, progress=True, **stopping_fields), load(run_dir, checkpoint="best", device="auto")
make_config, train, resume, load = DRIVER.make_config, DRIVER.train, DRIVER.resume, DRIVER.load
