"""Bad flags and outputs through the command line: one-line errors naming the field, non-zero exit, valid
JSON, and plots that go where ``--out`` says."""

from __future__ import annotations

import json
import math

import pytest

from rnnkit.cli.main import main
from rnnkit.metrics.lm import lm_summary
from rnnkit.tasks import lm
from tests.test_lm_task import make_text
from tests.test_seq2seq_task import reverse_pairs, write_tsv

LM_TINY = ["--level", "word", "--hidden", "8", "--emb", "8", "--layers", "1", "--batch-size", "2", "--bptt", "6",
           "--threads", "1", "--no-progress", "--time-budget", "none", "--sample-length", "0"]
MT_TINY = ["--emb", "8", "--enc-hidden", "8", "--hidden", "16", "--batch-size", "8", "--threads", "1",
           "--no-progress", "--time-budget", "none", "--samples", "0"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: "), err
    return err[len("rnnkit: error: "):].rstrip("\n")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust_lm")
    train = folder / "train.txt"
    train.write_text(make_text(60, 1))
    run = folder / "run"
    assert main([str(a) for a in ("lm", "train", "--train", train, "--valid", train, "--out", run,
                                  "--max-steps", "2", *LM_TINY)]) == 0
    return run


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust_mt")
    train = folder / "train.tsv"
    write_tsv(train, reverse_pairs(40, 1))
    run = folder / "run"
    assert main([str(a) for a in ("seq2seq", "train", "--train", train, "--valid", train, "--out", run,
                                  "--max-steps", "2", *MT_TINY)]) == 0
    return run


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "nan"], "field 'temperature': must be a finite number >= 0 (0 = greedy), got nan"),
    (["--temperature", "-0.5"], "field 'temperature': must be a finite number >= 0 (0 = greedy), got -0.5"),
    (["--temperature", "inf"], "field 'temperature': must be a finite number >= 0 (0 = greedy), got inf"),
    (["--top-p", "nan"], "field 'top_p': must be in (0, 1] (1 = off), got nan"),
    (["--top-p", "0"], "field 'top_p': must be in (0, 1] (1 = off), got 0.0"),
    (["--top-k", "-1"], "field 'top_k': must be an integer >= 0 (0 = off), got -1"),
])
def test_generate_rejects_bad_sampling_settings(lm_run, capsys, flags, message):
    code, out, err = run_cli(capsys, "lm", "generate", lm_run, "--length", "3", *flags)
    msg = one_line_error(code, err)
    assert out == "" and msg == message


def test_evaluate_json_is_valid_when_perplexity_overflows(lm_run, capsys, monkeypatch):
    monkeypatch.setattr(lm.LMRun, "evaluate", lambda self, test=None: lm_summary(8000.0, 10))
    code, out, err = run_cli(capsys, "lm", "evaluate", lm_run, "--json")
    assert code == 0, err
    assert "Infinity" not in out and "NaN" not in out
    m = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert m == {"loss": 800.0, "perplexity": None, "perplexity_note": "overflow: inf (loss 800 nats)",
                 "bits_per_token": 800.0 / math.log(2), "tokens": 10}


def test_evaluate_json_of_a_diverged_model(lm_run, capsys, monkeypatch):
    nan = float("nan")
    monkeypatch.setattr(lm.LMRun, "evaluate", lambda self, test=None: {"loss": nan, "perplexity": nan,
                                                                          "bits_per_token": nan, "tokens": 3})
    code, out, _ = run_cli(capsys, "lm", "evaluate", lm_run, "--json")
    assert code == 0
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == {
        "loss": None, "loss_note": "not a number", "perplexity": None, "perplexity_note": "not a number",
        "bits_per_token": None, "bits_per_token_note": "not a number", "tokens": 3}


@pytest.mark.parametrize("flag, value, message", [
    ("--eval-every", "-1", "flags: field 'eval_every': must be >= 0, got -1"),
    ("--max-vocab", "0", "flags: field 'max_vocab': must be >= 1, got 0"),
])
def test_train_rejects_out_of_range_fields_before_writing(tmp_path, capsys, flag, value, message):
    train = tmp_path / "train.txt"
    train.write_text(make_text(60, 1))
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "lm", "train", "--train", train, "--out", run, "--max-steps", "2", flag, value,
                           *LM_TINY)
    assert one_line_error(code, err) == message
    assert not run.exists()


def test_plot_out_folder_prints_the_file(lm_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "plot", lm_run, "--out", tmp_path)
    assert code == 0, err
    assert out == f"{tmp_path / 'curves.png'}\n"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    code, out, err = run_cli(capsys, "plot", lm_run, "--out", tmp_path / "c.svg")
    assert code == 0 and out == f"{tmp_path / 'c.svg'}\n" and b"<svg" in (tmp_path / "c.svg").read_bytes()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.svg", "curves.png"]  # no temporary file left


def test_plot_bad_out(lm_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "plot", lm_run, "--out", tmp_path / "curves.foo")
    msg = one_line_error(code, err)
    assert msg.startswith(f"field 'out': {tmp_path / 'curves.foo'}: unknown image format '.foo'; use one of ")
    assert ".png" in msg and ".pdf" in msg and ".svg" in msg
    code, _, err = run_cli(capsys, "plot", lm_run, "--out", tmp_path / "missing" / "c.png")
    assert one_line_error(code, err) == (f"field 'out': {tmp_path / 'missing' / 'c.png'}: folder "
                                         f"{tmp_path / 'missing'} does not exist")
    code, _, err = run_cli(capsys, "plot", lm_run, "--out", tmp_path / "noext")
    assert "no image extension (nor an existing folder)" in one_line_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_attention_bad_out(mt_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "seq2seq", "attention", mt_run, "ant bee", "--out", tmp_path / "no" / "a.png")
    assert one_line_error(code, err) == f"field 'out': {tmp_path / 'no' / 'a.png'}: folder {tmp_path / 'no'} " \
        "does not exist"


def test_attention_of_a_very_long_sentence_is_drawn_scaled(mt_run, tmp_path, capsys):
    sentence = " ".join(["ant", "bee", "cat"] * 400)  # 1,200 words: 600 inches wide unscaled, past matplotlib's limit
    code, out, err = run_cli(capsys, "seq2seq", "attention", mt_run, sentence, "--out", tmp_path)
    assert code == 0, err
    png = tmp_path / "attention.png"
    assert out == f"{png}\n"
    from matplotlib.image import imread

    height, width = imread(png).shape[:2]
    assert width <= 16 * 120 and height <= 16 * 120  # MAX_FIGURE_INCHES at 120 dpi


def test_plot_attention_of_3000_source_tokens_is_drawn_scaled(tmp_path):
    import numpy as np

    from rnnkit.plot import plot_attention

    weights = np.random.default_rng(0).dirichlet(np.ones(3000), size=40)  # rows sum to 1
    source = [f"w{i}" for i in range(3000)]
    png = plot_attention(weights, source, [f"o{i}" for i in range(40)], tmp_path)
    assert png == tmp_path / "attention.png"
    from matplotlib.image import imread

    height, width = imread(png).shape[:2]
    assert width <= 16 * 120 and height <= 16 * 120


@pytest.mark.parametrize("data, message", [
    (b'{"split": "train", "loss": 1.0}\n', "{m}:1: a train record needs numbers for 'step' and 'loss'"),
    (b'{"split": "valid", "step": 1, "loss": 2}\n{"split": "train", "step": "3", "loss": 1}\n',
     "{m}:2: a train record needs numbers for 'step' and 'loss'"),
    ('{"split": "train", "step": 1, "loss": 1}\n'.encode("utf-16"),
     "{m}: UTF-16 (little-endian) text, not UTF-8; convert it: iconv -f UTF-16LE -t UTF-8 {m} > NEW (metrics)"),
    (b"", "{m}: no loss values to plot yet"),
])
def test_plot_bad_metrics_file(tmp_path, capsys, data, message):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(data)
    code, out, err = run_cli(capsys, "plot", tmp_path)
    assert one_line_error(code, err) == message.format(m=metrics) and out == ""


def test_tag_overwrite_with_nan_word_vectors_keeps_the_old_run(tmp_path, capsys):
    from tests.test_tag_task import pos_sentences, write_conllu

    train = tmp_path / "train.conllu"
    write_conllu(train, pos_sentences(20, 1))
    run = tmp_path / "run"
    tiny = ["--train", train, "--out", run, "--emb", "4", "--char-emb", "4", "--char-hidden", "4", "--hidden", "4",
            "--layers", "1", "--batch-size", "8", "--threads", "1", "--no-progress", "--time-budget", "none"]
    assert run_cli(capsys, "tag", "train", *tiny, "--max-steps", "1")[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    words = sorted({w for s, _ in pos_sentences(20, 1) for w in s})
    vectors = tmp_path / "vec.txt"
    vectors.write_text(f"{words[0]} 0.1 0.2 0.3 0.4\n{words[1]} 0.5 nan 0.7 0.8\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "tag", "train", *tiny, "--max-steps", "1", "--overwrite", "--word-vectors", vectors)
    assert one_line_error(code, err) == f"{vectors}:2: 'nan' is not a finite number (word vectors)"
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
