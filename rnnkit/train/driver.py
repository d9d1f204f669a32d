"""One driver for every task: train, resume and load a run folder, in one documented order.

A task (language modelling, tagging, translation...) is a :class:`TaskSpec`: it declares its name, config
class, model class and Run class, and supplies only what is specific to it (reading data and building
vocabularies, the model's config, the engine's task). :class:`Driver` does the rest, the same way for
every task (a task module's ``train``, ``resume`` and ``load`` are its driver's methods):

``train`` (a new run):
    1. start: check the output folder (touching nothing), join torchrun's process group, check the
       device and precision, seed torch and set the thread count;
    2. prepare data: read and check every input, build the vocabularies (:meth:`TaskSpec.prepare`) and
       hash every data file (``option(..., data_file=True)`` fields);
    3. build the model (seeded; running out of memory is a one-line error), then give each rank its own
       dropout randomness, and the trainer with its optimiser; steps 1-3 touch no file, so that a bad
       input or setting loses nothing;
    4. lock the run folder (:func:`run_lock`, rank 0) and create the run: ``config.json`` (data paths
       absolute, with their hashes) and ``tokenizer.json`` (rank 0; the others wait). A run that replaces
       another (``overwrite``) is written into ``RUN/.rnnkit-new`` and moved into place file by file
       once its first checkpoint is written: until then the old run is whole;
    5. train (:class:`~rnnkit.train.engine.Trainer`);
    6. report why and where training stopped (one line on stderr); after Ctrl-C or SIGTERM raise
       :class:`~rnnkit.errors.TrainingInterrupted`, whose message says how to resume;
    7. reload the best checkpoint as the task's Run (without validation: the model in hand), and give it
       to :meth:`TaskSpec.after_training` (e.g. to calibrate on the validation data).

``resume`` locks the run folder, reads the saved config (only stopping, saving, device and thread fields
may change) and refuses data files whose content changed since the run started, reads the ``last``
checkpoint and the saved vocabularies, then goes through 1 and 2 (with the saved vocabularies), builds
the model, restores the loop's state (random generators included), drops metric lines logged after the
checkpoint, and goes through 5-7. ``load`` reads config, vocabularies and a checkpoint and returns the
Run; it takes no lock, so runs can be evaluated and used while they train.

A run folder holds::

    config.json          the resolved config (every field) and the task's name
    tokenizer.json       vocabularies / tokenizers (task-specific content)
    metrics.jsonl        one JSON object per logged step and per evaluation
    best.safetensors     the checkpoint that scored best on the task's selection metric
                         (:attr:`~rnnkit.train.engine.Task.selects_on`), or the latest, with no validation
    last.safetensors     the latest checkpoint, for resuming
    curves.png           written by ``rnnkit plot``
    threshold.json       multi-label classification: the decision threshold chosen after training
    .lock                the training lock (:func:`run_lock`): who holds it, while it is held
    .scheduled-best.safetensors   the 'best' an end-of-run evaluation replaced, for a resumed run to
                         restore (see :meth:`~rnnkit.train.engine.Trainer.final_evaluation`)
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from rnnkit.errors import CheckpointError, ConfigError, TrainingInterrupted
from rnnkit.train import checkpoint as ck
from rnnkit.train import distributed as dist
from rnnkit.train.config import TrainConfig, build_config, config_to_dict, data_file_fields
from rnnkit.train.distributed import DistInfo, resolve_device
from rnnkit.train.engine import SCHEDULED_BEST, Task, Trainer, is_out_of_memory

C = TypeVar("C", bound=TrainConfig)
V = TypeVar("V")
D = TypeVar("D")

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
RUN_FILES = (CONFIG, TOKENIZER, METRICS, "best.safetensors", "last.safetensors", "curves.png", "threshold.json",
             SCHEDULED_BEST + ck.SUFFIX)
LOCK = ".lock"
STAGING = ".rnnkit-new"  # a run that replaces another is written here until its first checkpoint
DATA_HASHES = "data_sha256"  # config.json's key: sha256 of each data file (see data_hashes)
BUNDLED = "(bundled data)"  # DATA_HASHES's key for the data shipped with rnnkit

# the only fields a resumed run may change: when it stops and saves, and what it runs on
RESUME_FIELDS = ("max_steps", "time_budget", "epochs", "save_every", "device", "threads")


@dataclass
class Run:
    """A trained run as :meth:`Driver.load` returns it, for a task without a Run class of its own: the model
    (in eval mode) with its config and vocabularies."""

    path: Path
    config: Any
    vocabs: Any
    model: nn.Module
    device: torch.device
    checkpoint: str = "best"


class TaskSpec(ABC, Generic[C, V, D]):
    """What a task declares and supplies; :class:`Driver`'s ``train``, ``resume`` and ``load`` do the rest.

    Type parameters: ``C`` the config class, ``V`` the vocabularies (whatever ``tokenizer.json`` holds),
    ``D`` the prepared data (whatever :meth:`engine_task` needs: encoded training and validation sets).

    Declared attributes:
        name: the task's name (``config.json``'s ``task``, checkpoints' ``task``, the CLI command).
        run_class: the user-facing Run, built as ``run_class(path, config, vocabs, model, device,
            checkpoint)`` (by default :class:`Run`).
        config_class: a frozen dataclass deriving from :class:`TrainConfig`; its field defaults are
            the task's defaults (for the CLI and the Python API alike). By default the type of the
            Run's ``config`` field.
        model_class: the model, built from :meth:`model_config` (see :meth:`build_model`). By default the
            type of the Run's ``model`` field.
        vocab_name: what ``tokenizer.json`` holds, for messages ("tokenizer", "vocabularies"...).
        meta_keys: the keys of :meth:`run_meta`, read back from the checkpoint on resume and load.
    """

    name: ClassVar[str]
    run_class: ClassVar[type] = Run
    config_class: ClassVar[type]
    model_class: ClassVar[type]
    vocab_name: ClassVar[str] = "vocabularies"
    meta_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Fill ``config_class`` and ``model_class`` from the annotations of ``run_class`` (a dataclass with
        ``config`` and ``model`` fields) where the subclass does not declare them."""
        super().__init_subclass__(**kwargs)
        run_class = cls.__dict__.get("run_class")
        missing = [(attr, run_field) for attr, run_field in (("config_class", "config"), ("model_class", "model"))
                   if attr not in cls.__dict__]
        if run_class is None or not missing:
            return
        hints = typing.get_type_hints(run_class)
        for attr, run_field in missing:
            if run_field in hints:
                setattr(cls, attr, hints[run_field])

    def prepare(self, cfg: C) -> tuple[V, D]:
        """Read and check the data of a new run and build its vocabularies; write nothing. By default, for a
        task without vocabularies: ``({}, datasets(cfg, {}))``."""
        return {}, self.datasets(cfg, {})

    @abstractmethod
    def datasets(self, cfg: C, vocabs: V) -> D:
        """Read and check the data of a resumed run, encoded with its saved vocabularies."""

    def vocab_to_dict(self, vocabs: V) -> dict[str, Any]:
        """The JSON document saved as ``tokenizer.json``: ``vocabs.to_dict()``, or ``vocabs`` when they
        are a dict already."""
        return vocabs if isinstance(vocabs, dict) else vocabs.to_dict()

    def vocab_from_dict(self, d: Any) -> V:
        """The vocabularies of a saved ``tokenizer.json``; KeyError/TypeError/ValueError when damaged. By
        default the document itself (vocabularies that are a dict, see :meth:`vocab_to_dict`)."""
        return d

    @abstractmethod
    def model_config(self, cfg: C, vocabs: V) -> Any:
        """The model's config: a JSON-ready dict or an object with ``to_dict()``; saved in every checkpoint
        and checked on load."""

    def build_model(self, cfg: C, vocabs: V, meta: dict[str, Any]) -> nn.Module:
        """A freshly initialised model; ``meta`` holds the :attr:`meta_keys` (:meth:`run_meta` for a new
        run, the checkpoint's values on resume and load). By default ``model_class(model_config(...))``."""
        return self.model_class(self.model_config(cfg, vocabs))

    @abstractmethod
    def engine_task(self, cfg: C, vocabs: V, data: D, device: torch.device, info: DistInfo) -> Task:
        """The engine's view of the task: batches, loss, evaluation, ``selects_on``..."""

    def run_meta(self, cfg: C, vocabs: V, data: D) -> dict[str, Any]:
        """Task-specific values (keys :attr:`meta_keys`) a new run stores in its checkpoints."""
        return {}

    def init_model(self, model: nn.Module, data: D) -> None:
        """Set data-dependent weights of a new run's model (e.g. pre-trained word vectors)."""

    def after_training(self, run: Any) -> Any:
        """The Run that ``train`` and ``resume`` return, given the reloaded one once training is over (every
        rank calls it); a task may finish the run folder here (calibration on the validation data)."""
        return run


class Driver(Generic[C, V, D]):
    """The Python API of one task, shared: ``make_config``, ``train``, ``resume``, ``load``."""

    def __init__(self, spec: TaskSpec[C, V, D]) -> None:
        self.spec = spec

    def make_config(self, config: C | None = None, **overrides: Any) -> C:
        """A task config from keyword arguments (checked like flags), on top of ``config`` if given."""
        if config is not None and not overrides:
            return config
        base = dataclasses.asdict(config) if config is not None else {}
        return build_config(self.spec.config_class, {**base, **overrides}, source="keyword arguments")

    def train(self, config: C | None = None, *, overwrite: bool = False, progress: bool = True,
              **overrides: Any) -> Any:
        """Train a new run into ``config.out`` and return its best checkpoint as the task's Run.

        Fields may be given as keyword arguments (``train(max_steps=100)``) or as a config.
        """
        spec = self.spec
        cfg = self.make_config(config, **overrides)
        out = Path(cfg.out)
        info, device = start(cfg, overwrite=overwrite)
        # every input is checked, the model and optimiser built, before anything in the folder is touched
        vocabs, data = spec.prepare(cfg)
        hashes = data_hashes(cfg)
        extra = spec.run_meta(cfg, vocabs, data)
        model = build_model(lambda: spec.build_model(cfg, vocabs, extra), device)
        spec.init_model(model, data)
        if info.enabled:  # each rank its own dropout randomness, once the (identical) model is built
            torch.manual_seed(cfg.seed + 1000 * info.rank)
        trainer = self._trainer(cfg, vocabs, data, model, extra, device, out, progress, info)
        with run_lock(out, main=info.is_main):
            trainer.run_dir, trainer.publish = create_run(
                out, cfg, spec.name, spec.vocab_to_dict(vocabs), hashes, overwrite=overwrite, info=info)
            try:
                _fit(trainer)
            finally:
                if trainer.publish is not None and info.is_main:  # stopped before its first checkpoint
                    shutil.rmtree(out / STAGING, ignore_errors=True)
            finish(trainer, out, spec.name)
        if not trainer.task.has_valid:  # 'best' is the model in hand: no need to read it back
            return spec.after_training(spec.run_class(out, cfg, vocabs, model.eval(), device))
        return spec.after_training(self.load(out))

    def resume(self, run_dir: str | Path, *, progress: bool = True, **overrides: Any) -> Any:
        """Continue a run from its ``last`` checkpoint; only stopping, saving, device and thread fields may
        change."""
        spec = self.spec
        out = Path(run_dir)
        load_run_config(out, spec.config_class, spec.name)  # a clear error before the lock for a non-run
        with run_lock(out, main=dist.is_main_process()):
            cfg = resume_settings(out, spec.config_class, spec.name, overrides)
            hashes = check_data_hashes(out, cfg)
            ckpt = load_checkpoint(out, "last", spec.name)
            info, device = start(cfg, overwrite=None)
            vocabs = self.read_vocabs(out)
            data = spec.datasets(cfg, vocabs)
            extra = {k: ckpt.meta.get(k) for k in spec.meta_keys}
            model = build_model(lambda: spec.build_model(cfg, vocabs, extra), device)
            trainer = self._trainer(cfg, vocabs, data, model, extra, device, out, progress, info)
            trainer.restore(ckpt)
            if info.is_main:  # drop metric lines logged after the checkpoint
                truncate_metrics(out, trainer.state.step)
                save_run_config(out, cfg, spec.name, hashes)
            _fit(trainer)
            finish(trainer, out, spec.name)
        return spec.after_training(self.load(out))

    def load(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto") -> Any:
        """Load a trained run (its ``best`` checkpoint unless ``checkpoint='last'``) as the task's Run; a run
        that is training can be loaded (no lock is taken: checkpoints are replaced whole)."""
        spec = self.spec
        out = Path(run_dir)
        cfg = load_run_config(out, spec.config_class, spec.name)
        vocabs = self.read_vocabs(out)
        ckpt = load_checkpoint(out, checkpoint, spec.name)
        dev = resolve_device(device)
        check_model_config(ckpt, spec.model_config(cfg, vocabs))
        model = spec.build_model(cfg, vocabs, {k: ckpt.meta.get(k) for k in spec.meta_keys}).to(dev)
        ck.load_model_state(model, ckpt)
        return spec.run_class(out, cfg, vocabs, model.eval(), dev, checkpoint)

    def read_vocabs(self, run_dir: Path) -> V:
        """A run's ``tokenizer.json``; damage is a CheckpointError naming the file."""
        path = Path(run_dir) / TOKENIZER
        data = read_json(path, self.spec.vocab_name)
        try:
            return self.spec.vocab_from_dict(data)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: damaged {self.spec.vocab_name} ({e})") from None

    def _trainer(self, cfg: C, vocabs: V, data: D, model: nn.Module, extra: dict[str, Any],
                 device: torch.device, out: Path, progress: bool, info: DistInfo) -> Trainer:
        task = self.spec.engine_task(cfg, vocabs, data, device, info)
        model_config = as_dict(self.spec.model_config(cfg, vocabs))
        meta = {"task": self.spec.name, "model_config": model_config, **extra}
        return Trainer(model, task, cfg, out, meta, device, progress=progress, dist_info=info)


# --- the steps, shared by every task ------------------------------------------------------------

def is_run(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_FILES)


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that already holds a run, unless ``overwrite``; touches nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"field 'out': {out} exists and is not a folder")
    if out.is_dir() and is_run(out) and not overwrite:
        raise ConfigError(f"field 'out': {out} already holds a run; pass --overwrite to replace it or "
                          f"--resume {out} to continue it")


def check_writable(out: Path) -> None:
    """Refuse an output folder that cannot be created or written (a path under a file, a read-only
    folder or file system); touches nothing."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"field 'out': cannot create {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"field 'out': cannot write in {existing} (read-only or permission denied)")


def write_json(path: Path, obj: Any) -> None:
    ck.atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what}); is {path.parent} an rnnkit run folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged {what} ({e})") from None


def load_run_config(run_dir: Path, cls: type[C], task: str) -> C:
    """The saved config of a run; a run of another task is a CheckpointError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    data = read_json(run_dir / CONFIG, "run config")
    if not isinstance(data, dict) or data.get("task") != task:
        other = data.get("task") if isinstance(data, dict) else None
        raise CheckpointError(f"{run_dir / CONFIG}: this is a run of task '{other}', not '{task}'")
    try:
        return build_config(cls, {k: v for k, v in data.items() if k not in ("task", DATA_HASHES)},
                            source=str(run_dir / CONFIG))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def save_run_config(run_dir: Path, cfg: Any, task: str, hashes: dict[str, str] | None) -> None:
    """Write ``config.json``: the task, every field (data file paths made absolute, so that the run resumes
    and evaluates from any working directory) and the data files' hashes (:func:`data_hashes`)."""
    values = config_to_dict(cfg)
    for name in data_file_fields(cfg):
        if values[name] is not None:
            values[name] = os.path.abspath(values[name])
    doc = {"task": task, **values}
    if hashes is not None:
        doc[DATA_HASHES] = hashes
    write_json(Path(run_dir) / CONFIG, doc)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundled_sha256() -> str:
    """One sha256 over every data file shipped with rnnkit (``rnnkit/resources``), by name."""
    h = hashlib.sha256()

    def walk(node: Any, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                h.update(f"{prefix}{child.name}|".encode())
                h.update(hashlib.sha256(child.read_bytes()).digest())

    walk(resources.files("rnnkit").joinpath("resources"), "")
    return h.hexdigest()


def data_hashes(cfg: Any) -> dict[str, str]:
    """sha256 of each data file a config names (its ``data_file`` fields), by field; when one of them is
    not given (the task's bundled default, or none), also the bundled data's (:func:`bundled_sha256`)."""
    fields = data_file_fields(cfg)
    hashes = {name: file_sha256(Path(getattr(cfg, name))) for name in fields if getattr(cfg, name) is not None}
    if len(hashes) < len(fields):
        hashes[BUNDLED] = bundled_sha256()
    return hashes


def check_data_hashes(run_dir: Path, cfg: Any) -> dict[str, str] | None:
    """Refuse to resume a run whose data files changed since it started (runs saved without hashes
    resume unchecked); returns the saved hashes."""
    saved = read_json(Path(run_dir) / CONFIG, "run config").get(DATA_HASHES)
    if saved is None:
        return None
    missing = [name for name in data_file_fields(cfg) if getattr(cfg, name) is not None
               and not Path(getattr(cfg, name)).is_file()]
    if missing:  # the task's reader says so, naming the file
        return saved
    for name, digest in data_hashes(cfg).items():
        if saved.get(name) != digest:
            what = ("the data bundled with this rnnkit differs from the run's" if name == BUNDLED else
                    f"field '{name}': {getattr(cfg, name)} changed since the run started")
            raise CheckpointError(f"{Path(run_dir) / CONFIG}: cannot resume: {what} (sha256 differs); "
                                  f"start a new run on the new data")
    return saved


def resume_config(saved: C, overrides: dict[str, Any]) -> C:
    """The saved config with only the stopping, saving, device and thread fields replaced."""
    bad = sorted(set(overrides) - set(RESUME_FIELDS))
    if bad:
        raise ConfigError(f"field '{bad[0]}': --resume takes only {', '.join(RESUME_FIELDS)}; everything "
                          f"else comes from the run's saved config")
    return dataclasses.replace(saved, **overrides)


def load_checkpoint(run_dir: Path, name: str, task: str) -> ck.Checkpoint:
    """``best`` or ``last`` of a run, with a clear error when the run has none."""
    path = ck.checkpoint_path(run_dir, name)
    if not path.is_file():
        raise CheckpointError(f"{Path(run_dir)}: no '{name}' checkpoint ({path.name} is missing)")
    return ck.load_checkpoint(path, task=task)


def setup_torch(seed: int, threads: int | None) -> None:
    """Seed torch's generators (before any model is built) and set the CPU thread count."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"field 'threads': must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    torch.manual_seed(seed)


def _fit(trainer: Trainer) -> None:
    """``trainer.fit()`` under the process settings every training run gets (``train`` and ``resume`` alike):
    glibc keeping freed blocks and denormals flushed to zero."""
    keep_freed_blocks()
    with flushing_denormals():
        trainer.fit()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
HEAP_BLOCKS = 1 << 30  # blocks up to 1 GiB come from the heap, and freed heap memory is kept up to 1 GiB


def keep_freed_blocks() -> bool:
    """Make glibc's allocator reuse freed large blocks instead of unmapping them and faulting them in again.

    By default glibc gives every block of more than 32 MiB (less before its threshold adapts) its own mmap
    and unmaps it when freed, so a training step that allocates and frees the same large tensors (a batch's
    activations, the output layer's logits) pays a page fault for every 4 KiB of them, every step. Measured
    (2 cores, 2026-11-30): the default ``rnnkit lm train`` went from 36-38k to 64k tokens/s, and the fused
    LSTM layer at H 512, B 32 from about 25k to 31-32k; that kernel took 225k page faults a step at T 256.
    The cost: the process keeps its peak heap instead of returning freed memory to the system (the default
    ``rnnkit lm train``: peak RSS 809 MiB against 598; a 256 MiB trim threshold gave 61.7k tokens/s and
    821 MiB, glibc's own trim threshold 52.5k and 727 MiB, so freed memory is kept up to 1 GiB). It is a
    process-wide setting that glibc cannot read back, applied by :meth:`Driver.train` and :meth:`Driver.resume`
    and kept for the rest of the process. Returns False (and does nothing) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl)
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS)) and bool(mallopt(M_TRIM_THRESHOLD, HEAP_BLOCKS))


@contextmanager
def flushing_denormals() -> Iterator[None]:
    """Training runs with denormal floats flushed to zero on CPU, and the process's mode is restored after.

    Denormal floats (|x| < 1.2e-38 in float32) cost x86 CPUs a microcode assist per operation, so a run that
    starts making them can slow down many-fold: the UD EWT XPOS tagger with default settings was seen falling
    from ~7,000 to 200-400 tokens/s after 40-60 steps, and flushing denormals removed the slow stretches.
    Where they arise was not found (not in parameters, gradients, optimiser moments or any module's outputs:
    presumably inside the oneDNN LSTM or fused Adam kernels). Treating them as zero changes results only
    below 1e-38 (tests/test_denormals.py); benchmarks/phases.py watches for slow phases. The mode is a
    per-thread CPU flag that torch cannot read back, so it is switched off again after training (Python
    starts with it off): code running in the same process afterwards (numpy, Hypothesis...) sees the
    usual IEEE arithmetic. A no-op where the CPU lacks the mode.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (a run killed after its last checkpoint), before resuming."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    ck.atomic_write_text(path, "".join(x + "\n" for x in keep))


def start(cfg: TrainConfig, *, overwrite: bool | None) -> tuple[DistInfo, torch.device]:
    """Checks before a run (output folder unless resuming, device), joins torchrun's process group if
    there is one, then seeds and sets threads; writes nothing."""
    if overwrite is not None:
        check_out_dir(Path(cfg.out), overwrite=overwrite)
        check_writable(Path(cfg.out))
    info, device = dist.setup(cfg.device)
    if cfg.precision != "fp32" and device.type != "cuda":
        raise ConfigError(f"field 'precision': {cfg.precision} autocast needs a CUDA device (this run is on "
                          f"{device.type}); use fp32")
    setup_torch(cfg.seed, cfg.threads)
    return info, device


def create_run(out: Path, cfg: Any, task: str, tokenizer: dict[str, Any], hashes: dict[str, str], *,
               overwrite: bool, info: DistInfo) -> tuple[Path, Callable[[], Path] | None]:
    """Write a new run's config and vocabularies (rank 0 only; the others wait for it), under the lock.

    Returns the folder to train into and the trainer's ``publish`` (None: nothing to publish): ``out``
    itself, or, when ``out`` holds a run (``overwrite``), the staging folder ``out/.rnnkit-new``, whose
    ``publish`` replaces the old run by the new one once the new one has a checkpoint.
    """
    if not info.is_main:  # the other ranks write nothing
        dist.barrier()
        return out, None
    check_out_dir(out, overwrite=overwrite)  # again, under the lock
    replacing = is_run(out)
    folder = out / STAGING if replacing else out
    if folder.exists() and replacing:
        shutil.rmtree(folder)  # a staging folder left by a killed run
    folder.mkdir(parents=True, exist_ok=True)
    save_run_config(folder, cfg, task, hashes)
    write_json(folder / TOKENIZER, tokenizer)
    dist.barrier()
    return folder, (lambda: publish_run(folder, out)) if replacing else None


def publish_run(staging: Path, out: Path) -> Path:
    """Replace the run in ``out`` by the one in ``staging`` (each file renamed over the old one, the old
    run's other files removed: only run files, anything else a user keeps there stays); returns ``out``."""
    new = sorted(p.name for p in staging.iterdir())
    for name in new:
        os.replace(staging / name, out / name)
    for name in set(RUN_FILES) - set(new):
        (out / name).unlink(missing_ok=True)
    staging.rmdir()
    return out


@contextmanager
def run_lock(run_dir: Path, *, main: bool) -> Iterator[None]:
    """Hold the exclusive training lock of ``run_dir`` (rank 0 under torchrun; creates the folder).

    An ``flock`` on ``RUN/.lock``: the kernel releases it when the process ends, however it ends, so a
    dead process's lock never blocks. The file names the holder (pid, host, command), for the error a
    second writer gets. Readers take no lock.

    Raises:
        CheckpointError: another process holds the lock.
    """
    if not main:
        yield
        return
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CheckpointError(f"{run_dir}: in use by {holder}; wait for it to finish or stop it") from None
        f.seek(0)
        f.truncate()
        command = " ".join(["rnnkit", *sys.argv[1:]])[:200]
        f.write(f"process {os.getpid()} on {socket.gethostname()} ({command})\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_model(build: Callable[[], nn.Module], device: torch.device) -> nn.Module:
    """``build()`` on ``device``; running out of memory is a ConfigError giving the parameter count."""
    try:
        return build().to(device)
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
    with torch.device("meta"):  # count the parameters without allocating them
        n = sum(p.numel() for p in build().parameters())
    raise ConfigError(f"the model does not fit in memory on {device.type}: {n:,} parameters "
                      f"({n * 4 / 2**30:,.1f} GiB in fp32, more for training); lower --hidden, --emb or --layers")


def resume_settings(run_dir: Path, cls: type[C], task: str, overrides: dict[str, Any]) -> C:
    """The saved config of ``run_dir`` with the allowed resume overrides applied (and checked)."""
    saved = load_run_config(run_dir, cls, task)
    checked = build_config(cls, {**dataclasses.asdict(saved), **overrides}, source="flags")
    return resume_config(saved, {k: getattr(checked, k) for k in overrides})


def finish(trainer: Trainer, out: Path, task: str) -> None:
    """Say why and where training stopped; after Ctrl-C or SIGTERM (``last`` saved) raise
    TrainingInterrupted, whose message says how to resume (empty on ranks other than 0)."""
    report_stop(trainer, out)
    if trainer.stop_reason == "interrupted":
        assert trainer.stop_signal is not None
        message = f"interrupted; resume with: rnnkit {task} train --resume {out}" if trainer.dist.is_main else ""
        raise TrainingInterrupted(message, trainer.stop_signal)


def report_stop(trainer: Trainer, out: Path) -> None:
    """One line on stderr saying why and where training stopped."""
    if not trainer.dist.is_main:
        return
    s = trainer.state
    metric, mode = trainer.task.selects_on
    why = {"max_steps": "reached --max-steps", "time_budget": "time budget used up", "epochs": "all epochs done",
           "early_stopping": f"early stopping (validation {metric} stopped improving)",
           "interrupted": "interrupted"}[trainer.stop_reason]
    best = (f"; best checkpoint by validation {metric} ({'highest' if mode == 'max' else 'lowest'})"
            if trainer.task.has_valid else "")
    print(f"rnnkit: stopped after step {s.step} ({why}); {trainer.steps_this_run} steps in this run, "
          f"{s.elapsed_s:.0f}s of training in all{best}; run folder {out}", file=sys.stderr)


def as_dict(model_config: Any) -> dict[str, Any]:
    """A model config as the JSON-ready dict checkpoints store (see :meth:`TaskSpec.model_config`)."""
    return model_config if isinstance(model_config, dict) else model_config.to_dict()


def check_model_config(ckpt: ck.Checkpoint, model_config: Any) -> None:
    """The checkpoint's model must be the one the run's config describes (:func:`as_dict`); a field missing
    from the checkpoint has its ``ADDED_FIELDS`` value (runs saved before the field existed)."""
    expected = as_dict(model_config)
    saved = ckpt.meta.get("model_config")
    if isinstance(saved, dict):  # saved before a field existed: the value every such run had
        saved = {**getattr(type(model_config), "ADDED_FIELDS", {}), **saved}
    if saved == expected:
        return
    diff = next((k for k, v in expected.items() if not isinstance(saved, dict) or saved.get(k) != v), "model_config")
    got = saved.get(diff) if isinstance(saved, dict) else None
    raise CheckpointError(f"{ckpt.path}: checkpoint is for another model ({diff} = {got!r}, the run's config "
                          f"says {expected.get(diff)!r})")


