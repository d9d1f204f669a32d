"""Language modelling, end to end: config, data, the engine's task, and the Python API.

    import rnnkit.tasks.lm as lm
    run = lm.train(out="runs/shakespeare", max_steps=200)    # bundled Tiny Shakespeare, char level
    print(run.evaluate())                                     # {"loss", "perplexity", "bits_per_token", "tokens"}
    print(run.generate("ROMEO:", length=200, temperature=0.8, seed=1))
    run = lm.load("runs/shakespeare")                         # later, in another process

The CLI (``rnnkit lm ...``) is a thin layer over :func:`train`, :func:`resume` and :func:`load`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.files import read_text
from rnnkit.data.lm import BPTTStream, batchify, ids_tensor
from rnnkit.data.tokenize import Tokenizer, build_tokenizer, tokenizer_from_dict
from rnnkit.decode import stream
from rnnkit.decode.sampling import generate as sample_tokens
from rnnkit.errors import ConfigError, DataError
from rnnkit.metrics.lm import lm_summary
from rnnkit.models.lm import LanguageModel, LMModelConfig
from rnnkit.nn.registry import describe_cells, resolve_cell
from rnnkit.train.config import TokenizerFields, TrainConfig, option, positive, task_default, train_option, valid_option
from rnnkit.train.distributed import DistInfo, shard
from rnnkit.train.driver import Driver, TaskSpec
from rnnkit.train.engine import StepResult, Task

TASK = "lm"


@dataclass(frozen=True)
class LMConfig(TokenizerFields, TrainConfig):
    """Everything ``rnnkit lm train`` needs: data, model and training fields (flag ``--x-y`` = field x_y)."""

    train: str | None = train_option("training text", "the bundled Tiny Shakespeare, first 90%%")
    valid: str | None = valid_option("validation text", "its last 10%%")
    out: str = option("runs/lm", "run folder to write")
    level: str = task_default("level", "char")
    model: str = option("lstm", f"recurrent cell: {describe_cells()}", check=resolve_cell)
    layers: int = option(2, "stacked recurrent layers", low=1)
    hidden: int = option(256, "hidden size", low=1)
    emb: int = option(128, "embedding size", low=1)
    dropout: float = option(0.1, "locked dropout on the recurrent output", fraction=True)
    dropout_emb: float = option(0.0, "locked dropout on the embeddings", fraction=True)
    dropout_hidden: float = option(0.0, "locked dropout between recurrent layers", fraction=True)
    weight_dropout: float = option(0.0, "DropConnect on the hidden-to-hidden weights (AWD-LSTM)", fraction=True)
    tie_weights: bool = option(False, "share the embedding and output weights (needs --emb == --hidden)")
    softmax: str = option("full", "output layer", choices=("full", "adaptive"))
    cutoffs: tuple[int, ...] = option((), "adaptive softmax cut-offs, e.g. 2000,10000")
    init_range: float | None = option(None, "initialise every weight uniformly in [-X, X] (Zaremba et al.: 0.1); "
                                      "default: torch's initialisation", check=positive)
    batch_size: int = option(64, "parallel streams per batch", low=1)
    bptt: int = option(128, "truncated back-propagation length", low=1)
    variable_bptt: bool = option(False, "AWD-LSTM's random BPTT lengths (learning rate scaled to match)")
    # the default run: char-level Tiny Shakespeare inside a few minutes on 2 CPU cores
    time_budget: float | None = task_default("time_budget", 180.0)
    eval_every: int = task_default("eval_every", 200)

    def validate(self) -> None:
        """The model settings must fit together (e.g. --tie-weights needs --emb == --hidden)."""
        self.model_config(vocab_size=max(self.cutoffs, default=0) + 2)

    def model_config(self, vocab_size: int) -> LMModelConfig:
        return LMModelConfig(vocab_size=vocab_size, model=self.model, emb=self.emb, hidden=self.hidden,
                             layers=self.layers, dropout=self.dropout, dropout_emb=self.dropout_emb,
                             dropout_hidden=self.dropout_hidden, weight_dropout=self.weight_dropout,
                             tie_weights=self.tie_weights, softmax=self.softmax, cutoffs=self.cutoffs,
                             init_range=self.init_range)


def bundled_shakespeare() -> str:
    """The bundled Tiny Shakespeare text (public domain; see LICENSES/tinyshakespeare-SOURCE.md)."""
    return resources.files("rnnkit").joinpath("resources/tinyshakespeare.txt").read_text(encoding="utf-8")


def load_texts(cfg: LMConfig) -> tuple[str, str | None, str, str | None]:
    """(train text, valid text or None, train name, valid name) for a config; reads and checks files."""
    if cfg.train is None:
        if cfg.valid is not None:
            raise ConfigError("field 'valid': give --train too, or neither for the bundled corpus")
        text = bundled_shakespeare()
        cut = int(len(text) * 0.9)
        return text[:cut], text[cut:], "bundled Tiny Shakespeare (first 90%)", "bundled Tiny Shakespeare (last 10%)"
    train = read_text(cfg.train, what="training text")
    valid = read_text(cfg.valid, what="validation text") if cfg.valid is not None else None
    return train, valid, cfg.train, cfg.valid


def encode_checked(tokenizer: Tokenizer, text: str, name: str, min_tokens: int) -> torch.Tensor:
    ids = ids_tensor(tokenizer.encode_stream(text))
    if ids.numel() < min_tokens:
        raise DataError(f"{name}: corpus too short: {ids.numel()} tokens, need at least {min_tokens} "
                        f"(lower --batch-size or --bptt)")
    return ids


def eval_layout(ids: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets covering every next-token prediction of ``ids`` exactly once, (rows, width) each.

    The n-1 (input, target) pairs are laid out row-major in ``batch_size`` contiguous rows; the tail of
    the last rows is padding, marked by target -100, which the masked loss never counts.
    """
    n = ids.numel() - 1
    rows = max(1, min(batch_size, n))
    width = math.ceil(n / rows)
    x = torch.zeros(rows * width, dtype=torch.long)
    y = torch.full((rows * width,), -100, dtype=torch.long)
    x[:n], y[:n] = ids[:-1], ids[1:]
    return x.view(rows, width), y.view(rows, width)  # (rows, width)


def eval_batches(ids: torch.Tensor, batch_size: int, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """BPTT windows over :func:`eval_layout` (state is carried from one window to the next)."""
    x, y = eval_layout(ids, batch_size)
    for pos in range(0, x.size(1), bptt):
        yield x[:, pos:pos + bptt], y[:, pos:pos + bptt]


@torch.no_grad()
def nll_stats(model: LanguageModel, x: torch.Tensor, y: torch.Tensor, bptt: int,
              device: torch.device) -> dict[str, float]:
    """Summed NLL and counted targets over a (rows, width) layout, in BPTT windows with state carried."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for pos in range(0, x.size(1), bptt):
        nll, state = model.loss(x[:, pos:pos + bptt].to(device), y[:, pos:pos + bptt].to(device), state)
        total += nll.double()
    model.train(was_training)
    return {"nll": float(total), "tokens": float((y != -100).sum())}


def summarize(stats: dict[str, float]) -> dict[str, float]:
    return lm_summary(stats["nll"], int(stats["tokens"]))


def evaluate_ids(model: LanguageModel, ids: torch.Tensor, bptt: int, device: torch.device,
                 batch_size: int) -> dict[str, float]:
    """Masked NLL over a token stream (state carried across windows): loss, perplexity, bits, tokens."""
    x, y = eval_layout(ids, batch_size)
    return summarize(nll_stats(model, x, y, bptt, device))


class LMTask(Task):
    """The engine's view of language modelling: BPTT windows over parallel streams, state carried.

    Under torchrun rank r owns streams ``r*B/W .. (r+1)*B/W - 1`` of the one-process layout.
    """

    name = TASK

    def __init__(self, cfg: LMConfig, train_ids: torch.Tensor, valid_ids: torch.Tensor | None,
                 device: torch.device, info: DistInfo | None = None) -> None:
        self.cfg, self.device, self.info = cfg, device, info or DistInfo()
        rows = shard(cfg.batch_size, self.info, "batch_size")
        self.data = batchify(train_ids, cfg.batch_size)[rows]  # (B / W, N // B)
        self.valid = eval_layout(valid_ids, cfg.batch_size) if valid_ids is not None else None
        self.has_valid = valid_ids is not None
        self.ddp_find_unused_parameters = cfg.softmax == "adaptive"  # a batch may miss a tail cluster
        self.selects_on = ("loss", "min")

    def _stream(self, epoch: int) -> BPTTStream:
        return BPTTStream(self.data, self.cfg.bptt, variable=self.cfg.variable_bptt,
                          seed=self.cfg.seed * 100_003 + epoch)

    def batches_per_epoch(self) -> int:
        return len(self._stream(0))

    def train_batches(self, epoch: int, start: int) -> Iterator[Any]:
        for i, window in enumerate(self._stream(epoch)):
            if i >= start:
                yield window

    def train_loss(self, model: LanguageModel, batch: Any, carry: Any) -> StepResult:
        x, y, lr_scale = batch
        nll, state = model.loss(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                                carry)
        return StepResult(nll, x.numel(), state, lr_scale)

    def evaluate_stats(self, model: LanguageModel) -> dict[str, float]:
        assert self.valid is not None
        x, y = self.valid
        if x.size(0) % self.info.world_size == 0:
            rows = shard(x.size(0), self.info, "batch_size")
        else:  # too few rows to share: rank 0 evaluates them all
            rows = slice(0, x.size(0) if self.info.is_main else 0)
        return nll_stats(model, x[rows], y[rows], self.cfg.bptt, self.device)

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        return summarize(stats)


@dataclass
class LMData:
    """The encoded token streams of a run: training, and validation (None without validation text)."""

    train: torch.Tensor
    valid: torch.Tensor | None


# --- the Python API ----------------------------------------------------------------------------------

@dataclass
class LMRun:
    """A trained language model loaded from a run folder: evaluate it and generate from it."""

    path: Path
    config: LMConfig
    tokenizer: Tokenizer
    model: LanguageModel
    device: torch.device
    checkpoint: str = "best"

    def evaluate(self, text_or_path: str | Path | None = None, *, text: str | None = None) -> dict[str, float]:
        """Loss (nats per token), perplexity, bits per token and token count on a file or a text.

        With no argument: the run's validation text (for the bundled corpus, its last 10%).
        """
        if text is None:
            if text_or_path is None:
                _, text, _, valid_name = load_texts(self.config)
                if text is None:
                    raise ConfigError("field 'test': the run has no validation text; give a test file")
            else:
                text = read_text(text_or_path, what="test text")
        name = str(text_or_path) if text_or_path is not None else "text"
        ids = encode_checked(self.tokenizer, text, name, min_tokens=2)
        return evaluate_ids(self.model, ids, self.config.bptt, self.device, self.config.batch_size)

    def unknown_symbols(self, prompt: str) -> list[str]:
        return self.tokenizer.unknown(prompt)

    def generate(self, prompt: str = "", length: int = 200, *, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, num_samples: int = 1) -> list[str]:
        """Continue ``prompt`` by ``length`` tokens; returns the generated text of each sample
        (the prompt not repeated). Unknown prompt symbols map to <unk> (see :meth:`unknown_symbols`)."""
        ids = self.tokenizer.encode_stream(prompt) if prompt else []
        if self.tokenizer.level != "char" and ids and prompt and not prompt.endswith("\n"):
            eos = self.tokenizer.vocab.eos_id
            if eos is not None and ids[-1] == eos:
                ids = ids[:-1]  # a prompt is an unfinished line: no <eos> after it
        if not ids:  # start a new line
            ids = self.tokenizer.encode_stream("\n") or [self.tokenizer.vocab.eos_id]
        out = sample_tokens(self.model, ids, length, temperature=temperature, top_k=top_k, top_p=top_p,
                            seed=seed, num_samples=num_samples)
        return [self.tokenizer.decode_stream(sample) for sample in out]

    # streaming, stateful inference: rnnkit.decode.stream (states are dicts of plain tensors)
    def initial_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """The zero state of ``batch`` streams; see :func:`rnnkit.decode.stream.initial_state`."""
        return stream.initial_state(self.model, batch)

    def step(self, token_ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """(B,) ids -> next-token log-probabilities (B, V) and the new state (:func:`~rnnkit.decode.stream.step`)."""
        return stream.step(self.model, token_ids, state)

    def score(self, text: str, state: dict | None = None) -> tuple[float, dict]:
        """Total log-likelihood of ``text`` and the state after it (:func:`~rnnkit.decode.stream.score_ids`)."""
        return stream.score_ids(self.model, self.tokenizer.encode_stream(text), state)

    def score_many(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each text, each read from a fresh state, in one padded batch
        (:func:`~rnnkit.decode.stream.score_many`): ``score(text)[0]`` for each, to rounding."""
        return stream.score_many(self.model, [self.tokenizer.encode_stream(t) for t in texts])


def prepare(cfg: LMConfig) -> tuple[Tokenizer, torch.Tensor, torch.Tensor | None]:
    """Read, check and encode the data of a config (nothing is written)."""
    train_text, valid_text, train_name, valid_name = load_texts(cfg)
    try:
        tokenizer = build_tokenizer(cfg.level, [train_text], min_count=cfg.min_count, max_size=cfg.max_vocab,
                                    subword_vocab_size=cfg.subword_vocab)
    except ValueError as e:  # settings that do not fit the level (e.g. max_vocab with subwords)
        raise ConfigError(f"field 'level': {e}") from None
    train_ids = encode_checked(tokenizer, train_text, train_name, min_tokens=cfg.batch_size * 2)
    valid_ids = encode_checked(tokenizer, valid_text, valid_name, 2) if valid_text is not None else None
    if cfg.softmax == "adaptive" and max(cfg.cutoffs) >= len(tokenizer.vocab) - 1:
        raise ConfigError(f"field 'cutoffs': {list(cfg.cutoffs)} must stay below the vocabulary size "
                          f"{len(tokenizer.vocab)} - 1")
    return tokenizer, train_ids, valid_ids


class LMSpec(TaskSpec[LMConfig, Tokenizer, LMData]):
    """Language modelling for the driver: one tokenizer, token streams, :class:`LanguageModel`."""

    name = TASK
    run_class = LMRun
    vocab_name = "tokenizer"
    vocab_from_dict = staticmethod(tokenizer_from_dict)

    def prepare(self, cfg: LMConfig) -> tuple[Tokenizer, LMData]:
        tokenizer, train_ids, valid_ids = prepare(cfg)
        return tokenizer, LMData(train_ids, valid_ids)

    def datasets(self, cfg: LMConfig, tokenizer: Tokenizer) -> LMData:
        """The training and validation token streams of a config, encoded with ``tokenizer``."""
        train_text, valid_text, train_name, valid_name = load_texts(cfg)
        train_ids = encode_checked(tokenizer, train_text, train_name, min_tokens=cfg.batch_size * 2)
        valid_ids = encode_checked(tokenizer, valid_text, valid_name, 2) if valid_text is not None else None
        return LMData(train_ids, valid_ids)

    def model_config(self, cfg: LMConfig, vocabs: Tokenizer) -> LMModelConfig:
        return cfg.model_config(len(vocabs.vocab))

    def engine_task(self, cfg: LMConfig, vocabs: Tokenizer, data: LMData, device: torch.device,
                    info: DistInfo) -> LMTask:
        return LMTask(cfg, data.train, data.valid, device, info)


DRIVER = Driver(LMSpec())

# the Python API: make_config(**fields), train(config=None, *, overwrite=False, progress=True, **fields),
# resume(run_dir, *, progress=True, **stopping_fields), load(run_dir, checkpoint="best", device="auto")
make_config, train, resume, load = DRIVER.make_config, DRIVER.train, DRIVER.resume, DRIVER.load
