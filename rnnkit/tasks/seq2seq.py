"""Attention seq2seq translation, end to end: config, data, the engine's task, and the Python API.

    import rnnkit.tasks.seq2seq as s2s
    run = s2s.train(out="runs/mt", max_steps=500)                 # bundled Tatoeba English -> French
    run.translate(["I am hungry.", "She is tired."], beam=5)       # e.g. ["J'ai faim.", 'Elle est fatiguée.']
    run.evaluate(s2s.bundled_tatoeba()["test"], beam=5)            # {"bleu", "chrf", "exact_match", "sentences"}
    src_tokens, out_tokens, weights = run.attention("I am hungry.")
    run = s2s.load("runs/mt")                                      # later, in another process

Data are sentence pairs: a TSV file (``source<TAB>target`` per line, ``train``/``valid``) or two
line-aligned files (``src_train``/``tgt_train``, likewise for valid), read by
:mod:`rnnkit.data.pairs`. A pair with a side longer than ``max_chars`` characters is skipped, with one
warning per file giving the count. Each side has its own tokenizer (``level`` word, char or subword;
one shared tokenizer with ``share_embeddings``); both are saved in ``RUN/tokenizer.json``.

Training batches hold pairs of similar length (:func:`rnnkit.data.batching.length_batches`, seeded by
(seed, epoch), so a resumed run sees the same batches); the loss is the label-smoothed NLL summed over
real target tokens (``<eos>`` included) and the engine divides by their number. Validation reports the
unsmoothed NLL per target token (``loss``, which picks the ``best`` checkpoint), its perplexity and,
unless ``valid_beam`` is 0, the BLEU and exact match of decoded validation sources.

BLEU, chrF and exact match are computed on detokenised text: the target tokenizer's ``decode`` (words
joined by single spaces, characters concatenated, BPE pieces joined by their ``▁`` markers), against
the reference as written in the file (one reference per line). Several lines may share a source
(Tatoeba lists several translations): each line is scored against its own reference, unless
``group_references`` makes each distinct source one example with all its targets as references.

The CLI (``rnnkit seq2seq ...``) is a thin layer over :func:`train`, :func:`resume` and :func:`load`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.data.batching import RankBatches, length_batches, restore_order
from rnnkit.data.pairs import MAX_CHARS, Pair, PairBatch, bundled_tatoeba, collate_pairs, read_parallel, read_tsv_pairs
from rnnkit.data.pairs import group_references as group_pairs
from rnnkit.data.tokenize import Tokenizer, build_tokenizer, tokenizer_from_dict
from rnnkit.data.vocab import EOS, check_format
from rnnkit.decode.search import Hypothesis, beam_search, greedy_search
from rnnkit.errors import ConfigError, DataError
from rnnkit.metrics.lm import perplexity
from rnnkit.metrics.translation import bleu_from_stats, bleu_stats, corpus_scores, exact_matches
from rnnkit.models.seq2seq import ATTENTION_TYPES, Seq2Seq, Seq2SeqConfig
from rnnkit.nn.registry import describe_cells, resolve_cell
from rnnkit.train.config import TokenizerFields, TrainConfig, option, task_default, train_option, valid_option
from rnnkit.train.distributed import DistInfo, is_main_process, shard
from rnnkit.train.driver import Driver, TaskSpec
from rnnkit.train.engine import StepResult, Task

__all__ = ["DEFAULT_BEAM", "DEFAULT_LENGTH_PENALTY", "Seq2SeqRun", "Seq2SeqTask", "Seq2SeqTaskConfig",
           "Translation", "bundled_tatoeba", "load", "make_config", "resume", "train"]

TASK = "seq2seq"
TOKENIZERS_FORMAT = "rnnkit.seq2seq-tokenizers/1"
EVAL_BATCH = 64  # sentences per batch when scoring or decoding (beam search multiplies it by the beam)
DEFAULT_BEAM = 5
DEFAULT_LENGTH_PENALTY = 0.6  # GNMT's alpha (Wu et al. 2016); 0 ranks hypotheses by log-probability
DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B = 2.0, 10  # at most 2 * source length + 10 output tokens


@dataclass(frozen=True)
class Seq2SeqTaskConfig(TokenizerFields, TrainConfig):
    """Everything ``rnnkit seq2seq train`` needs: data, model and training fields (flag ``--x-y`` = field x_y)."""

    train: str | None = train_option("training pairs, a TSV file of source<TAB>target lines",
                                     "the bundled Tatoeba English-French train split")
    valid: str | None = valid_option("validation pairs, TSV", "its valid split")
    src_train: str | None = option(None, "training sources, one sentence per line (with --tgt-train, "
                                   "instead of --train)", data_file=True)
    tgt_train: str | None = option(None, "training targets, line-aligned with --src-train", data_file=True)
    src_valid: str | None = option(None, "validation sources (with --tgt-valid, instead of --valid)",
                                   data_file=True)
    tgt_valid: str | None = option(None, "validation targets, line-aligned with --src-valid", data_file=True)
    max_chars: int = option(MAX_CHARS, "pairs with a side longer than this many characters are skipped "
                            "(with a warning giving the count)", low=1)
    out: str = option("runs/seq2seq", "run folder to write")
    cell: str = option("lstm", f"recurrent cell of the encoder and decoder: {describe_cells()}",
                       check=resolve_cell)
    attention: str = option("additive", "attention over the encoder outputs (none = the classic encoder-decoder)",
                            choices=ATTENTION_TYPES)
    emb: int = option(128, "embedding size (both sides)", low=1)
    enc_hidden: int = option(128, "encoder hidden size per direction", low=1)
    hidden: int = option(256, "decoder hidden size (dot/scaled attention need 2 * --enc-hidden)", low=1)
    layers: int = option(1, "recurrent layers of the encoder and of the decoder", low=1)
    dropout: float = option(0.2, "dropout on embeddings, between layers and before the output layer", fraction=True)
    tie_weights: bool = option(False, "share the target embedding and output weights (needs --emb == --hidden)")
    share_embeddings: bool = option(False, "one vocabulary and embedding for source and target")
    label_smoothing: float = option(0.1, "label smoothing of the training loss (validation loss is unsmoothed)",
                                    fraction=True)
    batch_size: int = option(64, "sentence pairs per batch", low=1)
    bucket: bool = option(True, "batch pairs of similar length together (less padding)")
    valid_beam: int = option(1, "at each evaluation, translate the validation sources with this beam and log "
                             "BLEU and exact match (1 = greedy, 0 = loss only)", low=0)
    # the default run: English -> French on the bundled Tatoeba subset inside a few minutes on 2 CPU cores
    epochs: int = task_default("epochs", 40)
    time_budget: float | None = task_default("time_budget", 300.0)

    def validate(self) -> None:
        for split in ("train", "valid"):
            tsv, src, tgt = getattr(self, split), getattr(self, f"src_{split}"), getattr(self, f"tgt_{split}")
            if tsv is not None and (src is not None or tgt is not None):
                raise ValueError(f"field '{split}': give --{split} (TSV) or --src-{split}/--tgt-{split}, not both")
            if (src is None) != (tgt is None):
                given, missing = ("src", "tgt") if src is not None else ("tgt", "src")
                raise ValueError(f"field '{missing}_{split}': --{given}-{split} needs --{missing}-{split} "
                                 f"(two line-aligned files)")
        if not self.has_train_files and self.has_valid_files:
            raise ValueError("field 'valid': give training pairs too, or neither for the bundled Tatoeba data")
        try:
            self.model_config(src_vocab_size=4, tgt_vocab_size=4, pad_id=0, bos_id=2, eos_id=3)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @property
    def has_train_files(self) -> bool:
        return self.train is not None or self.src_train is not None

    @property
    def has_valid_files(self) -> bool:
        return self.valid is not None or self.src_valid is not None

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int, pad_id: int, bos_id: int,
                     eos_id: int) -> Seq2SeqConfig:
        return Seq2SeqConfig(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, pad_id=pad_id,
                             bos_id=bos_id, eos_id=eos_id, cell=self.cell, attention=self.attention, emb=self.emb,
                             enc_hidden=self.enc_hidden, hidden=self.hidden, layers=self.layers,
                             dropout=self.dropout, share_embeddings=self.share_embeddings,
                             tie_weights=self.tie_weights)


# --- data --------------------------------------------------------------------------------------------

def _warn(message: str) -> None:
    if is_main_process():
        print(f"rnnkit: warning: {message}", file=sys.stderr)


def read_pairs(tsv: str | os.PathLike | None = None, src: str | os.PathLike | None = None,
               tgt: str | os.PathLike | None = None, *, max_chars: int = MAX_CHARS,
               what: str = "sentence pairs", multi_target: bool = False) -> tuple[list[Pair], str]:
    """Pairs of a TSV file or of two parallel files, and a name for messages; over-long pairs are skipped
    with one warning on stderr (count, first line numbers). ``multi_target``: a TSV line may hold several
    target columns, one pair each (:func:`rnnkit.data.pairs.read_tsv_pairs`)."""
    if tsv is not None:
        result = read_tsv_pairs(tsv, max_chars=max_chars, what=what, multi_target=multi_target)
        name = os.fspath(tsv)
    elif src is not None and tgt is not None:
        result = read_parallel(src, tgt, max_chars=max_chars, what=what)
        name = f"{os.fspath(src)} and {os.fspath(tgt)}"
    else:
        raise ConfigError("field 'test': give a TSV file or both parallel files")
    if result.skipped:
        lines = ", ".join(map(str, result.skipped_lines)) + (", ..." if result.skipped > len(result.skipped_lines)
                                                             else "")
        _warn(f"{name}: skipped {result.skipped} of {result.skipped + len(result.pairs)} pairs with a side longer "
              f"than {max_chars} characters (lines {lines}; raise --max-chars to keep them)")
    return result.pairs, name


def load_train_pairs(cfg: Seq2SeqTaskConfig) -> tuple[list[Pair], str]:
    """The training pairs of a config (the bundled Tatoeba train split by default) and their name."""
    if not cfg.has_train_files:
        return read_pairs(bundled_tatoeba()["train"], max_chars=cfg.max_chars, what="training pairs")
    return read_pairs(cfg.train, cfg.src_train, cfg.tgt_train, max_chars=cfg.max_chars, what="training pairs")


def load_valid_pairs(cfg: Seq2SeqTaskConfig) -> tuple[list[Pair] | None, str | None]:
    """The validation pairs of a config (the bundled valid split with the bundled training data; None
    when training files are given without validation files) and their name."""
    if not cfg.has_train_files:
        return read_pairs(bundled_tatoeba()["valid"], max_chars=cfg.max_chars, what="validation pairs")
    if not cfg.has_valid_files:
        return None, None
    return read_pairs(cfg.valid, cfg.src_valid, cfg.tgt_valid, max_chars=cfg.max_chars, what="validation pairs")


@dataclass
class Example:
    """One encoded pair: source and target ids without ``<bos>``/``<eos>``."""

    src: list[int]
    tgt: list[int]


@dataclass
class Seq2SeqTokenizers:
    """The source and target tokenizers of a run (one object for both with ``share_embeddings``)."""

    source: Tokenizer
    target: Tokenizer

    @classmethod
    def build(cls, pairs: Sequence[Pair], cfg: Seq2SeqTaskConfig) -> Seq2SeqTokenizers:
        kw = dict(min_count=cfg.min_count, max_size=cfg.max_vocab, subword_vocab_size=cfg.subword_vocab)
        sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
        try:
            if cfg.share_embeddings:
                shared = build_tokenizer(cfg.level, sources + targets, **kw)
                return cls(shared, shared)
            return cls(build_tokenizer(cfg.level, sources, **kw), build_tokenizer(cfg.level, targets, **kw))
        except ValueError as e:  # settings that do not fit the level (e.g. max_vocab with subwords)
            raise ConfigError(f"field 'level': {e}") from None

    def to_dict(self) -> dict[str, Any]:
        shared = self.source is self.target
        return {"format": TOKENIZERS_FORMAT, "shared": shared, "source": self.source.to_dict(),
                "target": None if shared else self.target.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Seq2SeqTokenizers:
        check_format(d, TOKENIZERS_FORMAT, "seq2seq tokenizers")
        source = tokenizer_from_dict(d["source"])
        return cls(source, source if d["shared"] else tokenizer_from_dict(d["target"]))

    def model_config(self, cfg: Seq2SeqTaskConfig) -> Seq2SeqConfig:
        v = self.target.vocab
        return cfg.model_config(len(self.source.vocab), len(v), v.pad_id, v.bos_id, v.eos_id)

    def encode_pairs(self, pairs: Sequence[Pair], name: str) -> list[Example]:
        """Token ids of each pair (no ``<bos>``/``<eos>``); a side without tokens is a DataError."""
        out = []
        for i, (src, tgt) in enumerate(pairs, start=1):
            ex = Example(self.source.encode(src), self.target.encode(tgt))
            if not ex.src or not ex.tgt:
                side = "source" if not ex.src else "target"
                raise DataError(f"{name}: pair {i}: the {side} side has no {self.source.level}-level tokens")
            out.append(ex)
        return out


def collate(examples: Sequence[Example], target: Tokenizer) -> PairBatch:
    v = target.vocab
    return collate_pairs([e.src for e in examples], [e.tgt for e in examples], pad_id=v.pad_id, bos_id=v.bos_id,
                         eos_id=v.eos_id)


def _sort_keys(examples: Sequence[Example]) -> list[int]:
    """Integer keys ordering pairs by target length, then source length (for :func:`length_batches`)."""
    span = max((len(e.src) for e in examples), default=0) + 1
    return [len(e.tgt) * span + len(e.src) for e in examples]


# --- decoding and scoring (shared by validation and the API) ------------------------------------------

def decode_ids(model: Seq2Seq, sources: Sequence[Sequence[int]], device: torch.device, *, beam: int = 1,
               nbest: int = 1, length_penalty: float = DEFAULT_LENGTH_PENALTY,
               max_len_a: float = DEFAULT_MAX_LEN_A, max_len_b: int = DEFAULT_MAX_LEN_B,
               batch_size: int = EVAL_BATCH, return_attention: bool = False) -> list[list[Hypothesis]]:
    """Hypotheses for non-empty source id lists, in input order: greedy search for ``beam=1, nbest=1``,
    beam search otherwise; batches of similar lengths (batched search, not a loop over sentences)."""
    batches = length_batches([len(s) for s in sources], batch_size, shuffle=False, pool=None)
    pad = model.pad_id
    results: list[list[Hypothesis]] = []
    for idx in batches:
        lengths = torch.tensor([len(sources[i]) for i in idx])
        src = torch.full((len(idx), int(lengths.max())), pad, dtype=torch.long)
        for row, i in enumerate(idx):
            src[row, : len(sources[i])] = torch.tensor(sources[i])
        src, lengths = src.to(device), lengths.to(device)
        kw = dict(max_len_a=max_len_a, max_len_b=max_len_b, return_attention=return_attention)
        if beam == 1 and nbest == 1:
            results.extend(greedy_search(model, src, lengths, **kw))
        else:
            results.extend(beam_search(model, src, lengths, beam=beam, nbest=nbest, length_penalty=length_penalty,
                                       **kw))
    return restore_order(results, batches)


@torch.no_grad()
def nll_stats(model: Seq2Seq, examples: Sequence[Example], target: Tokenizer, device: torch.device,
              batch_size: int = EVAL_BATCH) -> tuple[float, int]:
    """Summed NLL (no label smoothing) over every target token (``<eos>`` included) and their number."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for idx in length_batches(_sort_keys(examples), batch_size, shuffle=False, pool=None):
        b = collate([examples[i] for i in idx], target)
        loss, n = model.loss(b.src.to(device), b.src_lengths.to(device), b.tgt_in.to(device), b.tgt_out.to(device))
        total += float(loss)
        tokens += int(n)
    model.train(was_training)
    return total, tokens


class Seq2SeqTask(Task):
    """The engine's view of translation: length-bucketed batches of pairs, loss summed over target tokens.

    Under torchrun, rank r of W takes pairs ``r, r + W, ...`` of every batch (``batch_size`` must divide
    by W; a last batch with fewer than W pairs is skipped by all ranks) and its share of the validation
    pairs; :meth:`summarize` combines the ranks' sums.
    """

    name = TASK

    def __init__(self, cfg: Seq2SeqTaskConfig, tokenizers: Seq2SeqTokenizers, train: list[Example],
                 valid: list[Example] | None, valid_refs: list[str] | None, device: torch.device,
                 info: DistInfo | None = None) -> None:
        self.cfg, self.tokenizers, self.device, self.info = cfg, tokenizers, device, info or DistInfo()
        shard(cfg.batch_size, self.info, "batch_size")  # checks that batches split evenly over ranks
        self.train = train
        self.batches = RankBatches(_sort_keys(train), cfg.batch_size, seed=cfg.seed, bucket=cfg.bucket,
                                   rank=self.info.rank, world_size=self.info.world_size)
        self.valid, self.valid_refs = valid, valid_refs
        self.has_valid = valid is not None
        self.selects_on = ("loss", "min")
        self.ddp_find_unused_parameters = False

    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def train_batches(self, epoch: int, start: int) -> Iterator[PairBatch]:
        for idx in self.batches.epoch(epoch)[start:]:
            yield collate([self.train[i] for i in idx], self.tokenizers.target)

    def train_loss(self, model: Seq2Seq, batch: PairBatch, carry: Any) -> StepResult:
        d = self.device
        loss_sum, tokens = model.loss(batch.src.to(d), batch.src_lengths.to(d), batch.tgt_in.to(d),
                                      batch.tgt_out.to(d), label_smoothing=self.cfg.label_smoothing)
        return StepResult(loss_sum, int(tokens))

    def evaluate_stats(self, model: Seq2Seq) -> dict[str, float]:
        """Summed NLL, target tokens and (``valid_beam`` > 0) BLEU statistics and exact matches of this
        rank's share of the validation pairs."""
        assert self.valid is not None and self.valid_refs is not None
        mine = range(self.info.rank, len(self.valid), self.info.world_size)
        stats = {"nll": 0.0, "tokens": 0.0, "sentences": 0.0, "exact": 0.0}
        if self.cfg.valid_beam > 0:
            stats.update({k: 0.0 for k in bleu_stats([""], [""])})
        if not mine:
            return stats
        examples = [self.valid[i] for i in mine]
        nll, tokens = nll_stats(model, examples, self.tokenizers.target, self.device)
        stats.update(nll=nll, tokens=float(tokens))
        if self.cfg.valid_beam > 0:
            hyps = decode_ids(model, [e.src for e in examples], self.device, beam=self.cfg.valid_beam)
            texts = [self.tokenizers.target.decode(h[0].tokens) for h in hyps]
            refs = [self.valid_refs[i] for i in mine]
            stats.update(bleu_stats(texts, refs), sentences=float(len(texts)),
                         exact=float(exact_matches(texts, refs)))
        return stats

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        """Validation metrics from summed statistics: loss per target token, perplexity, BLEU, exact match."""
        loss = stats["nll"] / max(1.0, stats["tokens"])
        out = {"loss": loss, "perplexity": perplexity(loss)}
        if stats.get("sentences"):
            out.update(bleu=bleu_from_stats(stats), exact_match=stats["exact"] / stats["sentences"])
        return out

    def evaluate(self, model: Seq2Seq) -> dict[str, float]:
        """Validation metrics of one process (the engine calls :meth:`evaluate_stats` and :meth:`summarize`)."""
        return self.summarize(self.evaluate_stats(model))


# --- the Python API ----------------------------------------------------------------------------------

@dataclass
class Translation:
    """One hypothesis of :meth:`Seq2SeqRun.translate_nbest`.

    Attributes:
        text: the detokenised translation.
        score: beam search score, ``log p(Y|X) / ((5 + |Y|) / 6) ** length_penalty`` (|Y| counts ``<eos>``).
        tokens: target token ids (no ``<bos>``/``<eos>``).
    """

    text: str
    score: float
    tokens: list[int]


@dataclass
class Seq2SeqRun:
    """A trained translation model loaded from a run folder: translate, evaluate, show attention."""

    path: Path
    config: Seq2SeqTaskConfig
    tokenizers: Seq2SeqTokenizers
    model: Seq2Seq
    device: torch.device
    checkpoint: str = "best"

    def _decode(self, sentences: Sequence[str], *, beam: int, nbest: int, length_penalty: float, max_len_a: float,
                max_len_b: int, batch_size: int) -> list[list[Translation]]:
        if isinstance(sentences, str):
            raise TypeError("translate expects a list of sentences, got a str; wrap it: [sentence]")
        for name, value, low in (("beam", beam, 1), ("nbest", nbest, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"field '{name}': must be an integer >= {low}, got {value!r}")
        if nbest > beam:
            raise ConfigError(f"field 'nbest': must be <= beam ({beam}), got {nbest}")
        if max_len_a < 0 or max_len_b < 0:
            raise ConfigError(f"field 'max_len_a/max_len_b': must be >= 0, got {max_len_a} and {max_len_b}")
        texts = []
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentence {i}: expected a str, got {type(s).__name__}")
            texts.append(s.strip())
        unique = list(dict.fromkeys(t for t in texts if t))  # each distinct source translated once
        ids = [self.tokenizers.source.encode(t) for t in unique]
        keep = [i for i, x in enumerate(ids) if x]  # a source without tokens gets no translation
        hyps = decode_ids(self.model, [ids[i] for i in keep], self.device, beam=beam, nbest=nbest,
                          length_penalty=length_penalty, max_len_a=max_len_a, max_len_b=max_len_b,
                          batch_size=batch_size)
        target = self.tokenizers.target
        found = {unique[i]: [Translation(target.decode(h.tokens), h.score, h.tokens) for h in hs]
                 for i, hs in zip(keep, hyps)}
        return [found.get(t, []) for t in texts]

    def translate(self, sentences: Sequence[str], *, beam: int = DEFAULT_BEAM,
                  length_penalty: float = DEFAULT_LENGTH_PENALTY, max_len_a: float = DEFAULT_MAX_LEN_A,
                  max_len_b: int = DEFAULT_MAX_LEN_B, batch_size: int = EVAL_BATCH) -> list[str]:
        """The best translation of each sentence, in input order ("" for an empty or blank sentence).

        Args:
            sentences: source sentences (untokenised text, as in the training data).
            beam: beam width (1 = greedy search).
            length_penalty: GNMT :math:`\\alpha`: hypotheses are ranked by ``log p / ((5 + |Y|) / 6) ** alpha``.
            max_len_a, max_len_b: at most ``floor(a * source tokens + b)`` output tokens.
            batch_size: sentences decoded together (sorted by length, results restored to input order).
        """
        out = self._decode(sentences, beam=beam, nbest=1, length_penalty=length_penalty, max_len_a=max_len_a,
                           max_len_b=max_len_b, batch_size=batch_size)
        return [hs[0].text if hs else "" for hs in out]

    def translate_nbest(self, sentences: Sequence[str], nbest: int, *, beam: int = DEFAULT_BEAM,
                        length_penalty: float = DEFAULT_LENGTH_PENALTY, max_len_a: float = DEFAULT_MAX_LEN_A,
                        max_len_b: int = DEFAULT_MAX_LEN_B, batch_size: int = EVAL_BATCH) -> list[list[Translation]]:
        """Up to ``nbest`` (<= ``beam``) translations of each sentence, best first, in input order ([] for an
        empty sentence). Arguments as :meth:`translate`."""
        return self._decode(sentences, beam=beam, nbest=nbest, length_penalty=length_penalty,
                            max_len_a=max_len_a, max_len_b=max_len_b, batch_size=batch_size)

    def evaluate_pairs(self, pairs: Sequence[Pair], *, group_references: bool = False,
                       **search: Any) -> dict[str, float | int]:
        """Scores of translations of ``pairs`` (see :meth:`evaluate`); ``search`` goes to :meth:`translate`.

        With ``group_references`` the pairs that share a source are one example, translated once and scored
        against all their targets (multi-reference BLEU and chrF; an exact match is a match of any of them),
        and ``sentences`` counts the distinct sources. Otherwise each pair is scored against its own target.
        """
        if not pairs:
            raise DataError("no sentence pairs to evaluate")
        if group_references:
            sources, references = group_pairs(pairs)
            return corpus_scores(self.translate(sources, **search), references)
        hyps = self.translate([s for s, _ in pairs], **search)
        return corpus_scores(hyps, [t for _, t in pairs])

    def evaluate(self, test: str | os.PathLike | None = None, *, src: str | os.PathLike | None = None,
                 tgt: str | os.PathLike | None = None, beam: int = DEFAULT_BEAM,
                 length_penalty: float = DEFAULT_LENGTH_PENALTY, max_len_a: float = DEFAULT_MAX_LEN_A,
                 max_len_b: int = DEFAULT_MAX_LEN_B, group_references: bool = False) -> dict[str, float | int]:
        """BLEU, chrF (sacrebleu, detokenised, 0-100), exact match (fraction) and sentence count.

        Args:
            test: a TSV file of pairs; or ``src`` and ``tgt``, two line-aligned files. With none of them:
                the run's validation pairs (the bundled valid split for the bundled data).
            beam, length_penalty, max_len_a, max_len_b: the search, as :meth:`translate`.
            group_references: score each distinct source once against all its references: the targets of
                every line that repeats it and, in a TSV file, further target columns
                (``source<TAB>target<TAB>target...``); see :meth:`evaluate_pairs`.

        Pairs with a side longer than the run's ``max_chars`` are skipped with a warning (count).
        """
        if test is not None and (src is not None or tgt is not None):
            raise ConfigError("field 'test': give a TSV file or --src-test/--tgt-test, not both")
        if (src is None) != (tgt is None):
            raise ConfigError("field 'src_test/tgt_test': parallel test files come in pairs (give both)")
        if test is None and src is None:
            valid, _ = load_valid_pairs(self.config)
            if valid is None:
                raise ConfigError("field 'test': the run has no validation pairs; give a test file")
            pairs = valid
        else:
            pairs, _ = read_pairs(test, src, tgt, max_chars=self.config.max_chars, what="test pairs",
                                  multi_target=group_references)
        return self.evaluate_pairs(pairs, group_references=group_references, beam=beam,
                                   length_penalty=length_penalty, max_len_a=max_len_a, max_len_b=max_len_b)

    def attention(self, sentence: str, *, max_len_a: float = DEFAULT_MAX_LEN_A,
                  max_len_b: int = DEFAULT_MAX_LEN_B) -> tuple[list[str], list[str], Tensor]:
        """Greedy translation of one sentence with its attention weights.

        Returns:
            ``(source tokens, output tokens, weights)``: the output tokens end with ``<eos>``, and
            ``weights`` is a ``(len(output tokens), len(source tokens))`` tensor whose row i is the
            attention of output step i over the source tokens (each row sums to 1).

        Raises:
            ConfigError: the run was trained with ``attention="none"``.
            DataError: the sentence has no tokens.
        """
        if self.config.attention == "none":
            raise ConfigError("field 'attention': this run was trained with --attention none; it has no "
                              "attention weights to show")
        source = self.tokenizers.source
        ids = source.encode(sentence.strip())
        if not ids:
            raise DataError("the sentence is empty; nothing to translate")
        hyp = decode_ids(self.model, [ids], self.device, max_len_a=max_len_a, max_len_b=max_len_b,
                         return_attention=True)[0][0]
        src_tokens = source.tokenize(sentence.strip())
        out_tokens = self.tokenizers.target.vocab.decode(hyp.tokens) + [EOS]
        return src_tokens, out_tokens, hyp.attention.cpu()


def prepare(cfg: Seq2SeqTaskConfig) -> tuple[Seq2SeqTokenizers, list[Example], list[Example] | None, list[str] | None]:
    """Read, check and tokenise the data of a config (nothing is written).

    Returns (tokenizers, training examples, validation examples or None, validation references or None).
    """
    train, train_name = load_train_pairs(cfg)
    tokenizers = Seq2SeqTokenizers.build(train, cfg)
    return (tokenizers, tokenizers.encode_pairs(train, train_name), *_valid_data(cfg, tokenizers))


def _valid_data(cfg: Seq2SeqTaskConfig, tokenizers: Seq2SeqTokenizers) -> tuple[list[Example] | None,
                                                                                list[str] | None]:
    valid, valid_name = load_valid_pairs(cfg)
    if valid is None:
        return None, None
    return tokenizers.encode_pairs(valid, valid_name), [t for _, t in valid]


@dataclass
class Seq2SeqData:
    """A translation run's encoded data: training examples and validation examples and references
    (None without validation pairs)."""

    train: list[Example]
    valid: list[Example] | None
    refs: list[str] | None


class Seq2SeqSpec(TaskSpec[Seq2SeqTaskConfig, Seq2SeqTokenizers, Seq2SeqData]):
    """Translation for the driver: source and target tokenizers, sentence pairs, :class:`Seq2Seq`."""

    name = TASK
    run_class = Seq2SeqRun
    vocab_name = "tokenizers"
    vocab_from_dict = staticmethod(Seq2SeqTokenizers.from_dict)

    def prepare(self, cfg: Seq2SeqTaskConfig) -> tuple[Seq2SeqTokenizers, Seq2SeqData]:
        tokenizers, train_ex, valid_ex, refs = prepare(cfg)
        return tokenizers, Seq2SeqData(train_ex, valid_ex, refs)

    def datasets(self, cfg: Seq2SeqTaskConfig, tokenizers: Seq2SeqTokenizers) -> Seq2SeqData:
        """The training and validation pairs of a resumed run, encoded with its saved tokenizers."""
        train_pairs, train_name = load_train_pairs(cfg)
        return Seq2SeqData(tokenizers.encode_pairs(train_pairs, train_name), *_valid_data(cfg, tokenizers))

    def model_config(self, cfg: Seq2SeqTaskConfig, vocabs: Seq2SeqTokenizers) -> Seq2SeqConfig:
        return vocabs.model_config(cfg)

    def engine_task(self, cfg: Seq2SeqTaskConfig, vocabs: Seq2SeqTokenizers, data: Seq2SeqData,
                    device: torch.device, info: DistInfo) -> Seq2SeqTask:
        return Seq2SeqTask(cfg, vocabs, data.train, data.valid, data.refs, device, info)


DRIVER = Driver(Seq2SeqSpec())

# the Python API: make_config(**fields), train(config=None, *, overwrite=False, progress=True, **fields),
# resume(run_dir, *, progress=True, **stopping_fields), load(run_dir, checkpoint="best", device="auto")
make_config, train, resume, load = DRIVER.make_config, DRIVER.train, DRIVER.resume, DRIVER.load
