"""Bit-exact training at more than one CPU thread: straight runs and stopped-and-resumed runs agree.

Advanced indexing with repeated indices (``x[idx]`` where a row of ``x`` is picked twice) has a backward
that adds the repeated rows with ``index_put_(accumulate=True)``; on CPU, in float32, on two or more
threads and from 32768 indexed elements on, that kernel adds with racing atomics, so the rounding of the
gradient changes from run to run (the tagger's character encoder, which encodes each distinct spelling
once and gathers it back per word, made two identical tagger runs differ from step 8 on). One test looks
for such an accumulation in a training step of every task; another trains a tagger at two threads
straight and stopped-and-resumed in separate processes and compares every tensor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from rnnkit.tasks import lm, seq2seq, tag
from tests.test_tag_task import ner_sentences, pos_sentences, write_conllu

ROOT = Path(__file__).resolve().parent.parent


class RepeatedAccumulation(TorchDispatchMode):
    """Records every floating-point ``index_put(accumulate=True)`` whose indices pick an element twice."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func.__name__.startswith(("index_put", "_index_put_impl")):
            accumulate = kwargs.get("accumulate", args[3] if len(args) > 3 else False)
            if accumulate and args[0].is_floating_point() and _repeats(args[1]):
                self.found.append(tuple(args[0].shape))
        return func(*args, **kwargs)


def _repeats(indices: list[torch.Tensor | None]) -> bool:
    """Whether the (broadcast) index tensors address some element more than once."""
    parts = [t for i in indices if i is not None
             for t in (i.nonzero(as_tuple=True) if i.dtype == torch.bool else (i,))]
    keys = torch.stack([t.reshape(-1) for t in torch.broadcast_tensors(*parts)], dim=1)  # (N, index dims)
    return keys.size(0) != torch.unique(keys, dim=0).size(0)


def test_repeated_accumulation_detector():
    """The detector sees the backward of ``x[idx]`` with a repeated index, and only then."""
    x = torch.randn(4, 3, requires_grad=True)
    found = []
    for idx in ([0, 2, 0], [0, 2, 1]):
        with RepeatedAccumulation() as mode:
            x[torch.tensor(idx)].sum().backward()
        found.append(mode.found)
    assert found == [[(4, 3)], []]


@pytest.fixture
def tag_files(tmp_path):
    train, ner = tmp_path / "train.conllu", tmp_path / "ner.conllu"
    write_conllu(train, pos_sentences(128, seed=1))
    write_conllu(ner, ner_sentences(64, seed=2))
    return train, ner


def test_no_order_dependent_gradient_sums(tmp_path, tag_files):
    """No training step of any task (tagger with chars, softmax and CRF; LM; seq2seq) accumulates a
    gradient element twice through index_put_: such sums are not reproducible at more than one thread."""
    pos, ner = tag_files
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat .\nthe dog sat on the cat .\n" * 40, encoding="utf-8")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the cat\tle chat\nthe dog\tle chien\na cat\tun chat\n" * 12, encoding="utf-8")
    common = dict(max_steps=2, time_budget=None, threads=1, progress=False)
    runs = {
        "tag": lambda: tag.train(out=str(tmp_path / "tag"), train=str(pos), emb=8, char_emb=4, char_hidden=4,
                                 hidden=8, batch_size=32, **common),
        "tag crf": lambda: tag.train(out=str(tmp_path / "crf"), train=str(ner), crf=True, emb=8,
                                     char_emb=4, char_hidden=4, hidden=8, batch_size=32, **common),
        "lm word": lambda: lm.train(out=str(tmp_path / "lm"), train=str(text), level="word", emb=8, hidden=8,
                                    batch_size=4, bptt=8, **common),
        "seq2seq": lambda: seq2seq.train(out=str(tmp_path / "s2s"), train=str(pairs), emb=8, enc_hidden=8,
                                         hidden=16, batch_size=8, **common),
    }
    found = {}
    for name, train in runs.items():
        with RepeatedAccumulation() as mode:
            train()
        found[name] = mode.found
    assert found == {name: [] for name in runs}


def _train(*args: str) -> None:
    """``rnnkit tag train ARGS`` in a fresh process (its own allocator, thread pool and library state)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "rnnkit", "tag", "train", "--no-progress", *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_resume_in_new_process_is_exact_at_two_threads(tmp_path, tag_files):
    """12 steps straight equal 6 steps, then --resume to 12 in another process, bit for bit, at 2 threads
    (enough words per batch, 64 sentences x about 6, times 2 * 64 character features, for the racing
    kernel to run; with threads=1, as the other resume tests use, it never does)."""
    train, _ = tag_files
    settings = ["--train", str(train), "--threads", "2", "--batch-size", "64", "--emb", "16", "--hidden", "16",
                "--char-hidden", "64", "--time-budget", "none", "--log-every", "1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(*settings, "--out", str(straight), "--max-steps", "12")
    _train(*settings, "--out", str(resumed), "--max-steps", "6")
    _train("--resume", str(resumed), "--max-steps", "12")
    a, b = load_file(straight / "last.safetensors"), load_file(resumed / "last.safetensors")
    assert sorted(a) == sorted(b)
    assert [k for k in sorted(a) if not torch.equal(a[k], b[k])] == []
