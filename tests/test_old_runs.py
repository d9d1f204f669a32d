"""Run folders written by rnnkit 0.1 (tests/fixtures/runs_v0_1) still load and give the same results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rnnkit.tasks.lm as lm
import rnnkit.tasks.seq2seq as s2s
import rnnkit.tasks.tag as tag

RUNS = Path(__file__).parent / "fixtures" / "runs_v0_1"
EXPECTED = json.loads((RUNS / "expected.json").read_text(encoding="utf-8"))


def test_lm_run_of_0_1_loads_and_scores_the_same():
    run = lm.load(RUNS / "lm", device="cpu")
    text = (RUNS / "lm.txt").read_text(encoding="utf-8")
    assert run.evaluate(text=text[:200]) == pytest.approx(EXPECTED["lm"]["evaluate"], rel=1e-6)
    assert run.generate("the ", 20, seed=1) == EXPECTED["lm"]["generate"]


def test_tag_run_of_0_1_loads_and_tags_the_same():
    run = tag.load(RUNS / "tag", device="cpu")
    sentences = [["the", "cat", "sat", "."], ["a", "dog", "ran", "."], ["dog", "the"]]
    assert run.predict(sentences) == EXPECTED["tag"]["predict"]
    assert run.evaluate(RUNS / "tag.tsv") == EXPECTED["tag"]["evaluate"]


def test_seq2seq_run_of_0_1_loads_and_translates_the_same():
    run = s2s.load(RUNS / "seq2seq", device="cpu")
    assert run.translate(["a b c", "d e"], beam=2) == EXPECTED["seq2seq"]["translate"]
    assert run.evaluate(RUNS / "seq2seq.tsv", beam=2) == pytest.approx(EXPECTED["seq2seq"]["evaluate"], rel=1e-6)
