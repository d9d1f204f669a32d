"""Every run flushes denormal floats to zero on CPU (issue 17: a tagger slowed 20-30x once they appeared),
and that changes no result that matters: a short training logs the same losses with and without it."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.tasks import tag
from rnnkit.train.driver import setup_torch
from tests.test_tag_task import pos_sentences, small, write_conllu

DENORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


@pytest.fixture
def restore_flush():
    yield
    torch.set_flush_denormal(False)


def test_setup_torch_flushes_denormals(restore_flush):
    torch.set_flush_denormal(False)
    assert torch.tensor([DENORMAL]).mul(1.0).item() != 0.0  # this CPU keeps denormals by default
    setup_torch(seed=0, threads=None)
    assert torch.tensor([DENORMAL]).mul(1.0).item() == 0.0


def test_training_losses_equal_with_and_without_flushing(tmp_path, monkeypatch, restore_flush):
    train = tmp_path / "train.conllu"
    write_conllu(train, pos_sentences(120, seed=0))
    losses = {}
    for flush in (True, False):
        if not flush:  # the run as it was before: denormals kept
            torch.set_flush_denormal(False)
            monkeypatch.setattr(torch, "set_flush_denormal", lambda mode: False)
        out = tmp_path / f"flush-{flush}"
        tag.train(out=str(out), train=str(train), max_steps=30, progress=False, **small())
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses[flush] = [r["loss"] for r in lines if r.get("split") == "train"]
    assert len(losses[True]) == 6
    assert losses[True] == losses[False]  # the logged losses (6 decimals) are identical
