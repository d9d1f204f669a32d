"""Training flushes denormal floats to zero on CPU (a tagger was seen slowing 20-30x once they appeared) and
restores the usual arithmetic afterwards; that changes no result that matters: a short training logs the same
losses with and without it."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.tasks import tag
from rnnkit.train.engine import Trainer
from tests.test_tag_task import pos_sentences, small, write_conllu

DENORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


@pytest.fixture
def restore_flush():
    yield
    torch.set_flush_denormal(False)


def test_training_flushes_denormals_and_restores_the_mode(tmp_path, monkeypatch, restore_flush):
    torch.set_flush_denormal(False)
    assert torch.tensor([DENORMAL]).mul(1.0).item() != 0.0  # this CPU keeps denormals by default
    seen = []
    fit = Trainer.fit

    def recording_fit(self):
        seen.append(torch.tensor([DENORMAL]).mul(1.0).item())
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    train = tmp_path / "train.conllu"
    write_conllu(train, pos_sentences(40, seed=0))
    run = tag.train(out=str(tmp_path / "run"), train=str(train), max_steps=2, progress=False, **small())
    tag.resume(run.path, max_steps=3, progress=False)
    assert seen == [0.0, 0.0]  # flushed while training and while resuming
    assert torch.tensor([DENORMAL]).mul(1.0).item() != 0.0  # and the process's arithmetic as before


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
