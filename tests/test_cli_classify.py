"""``rnnkit classify``: train (bundled data by default), predict, evaluate --json/--confusion, explain, and
every bad input as a one-line error that leaves an existing run folder untouched."""

from __future__ import annotations

import io
import json
import random
import re
import sys

import pytest

from rnnkit.cli.main import main
from tests.test_classify_task import texts, write_tsv

SMALL = ["--emb", "8", "--hidden", "8", "--batch-size", "8", "--threads", "1", "--no-progress", "--lr", "0.02"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = random.Random(3)
    train, dev = write_tsv(folder / "train.tsv", texts(rng, 160)), write_tsv(folder / "dev.tsv", texts(rng, 40))
    out = folder / "run"
    assert main(["classify", "train", "--train", str(train), "--valid", str(dev), "--text-column", "text",
                 "--label-column", "label", "--epochs", "5", "--pooling", "attention", "--out", str(out),
                 *SMALL]) == 0
    return out, dev


def test_train_with_no_data_uses_the_bundled_ewt_genres(tmp_path, capsys):
    out = tmp_path / "genres"
    assert main(["classify", "train", "--out", str(out), "--max-steps", "2", "--emb", "4", "--hidden", "4",
                 "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "best checkpoint by validation accuracy (highest)" in err
    assert "examples 2001" in err  # the EWT dev split
    labels = json.loads((out / "tokenizer.json").read_text())["labels"]
    assert sorted(labels["tokens"]) == ["answers", "email", "newsgroup", "reviews", "weblog"]


def test_predict_reads_stdin_or_a_file_one_prediction_per_line(run_dir, tmp_path, capsys, monkeypatch):
    out, _ = run_dir
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"it was good\n\nbad plot\n")))
    assert main(["classify", "predict", str(out)]) == 0
    assert capsys.readouterr().out == "pos\n\nneg\n"
    (tmp_path / "in.txt").write_text("a fine film\ngood\n", encoding="utf-8")
    assert main(["classify", "predict", str(out), "--input", str(tmp_path / "in.txt"), "--top-k", "2",
                 "--probs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    first = lines[0].split("\t")
    assert first[0] == "neu" and len(first) == 4 and float(first[1]) >= float(first[3])
    assert main(["classify", "predict", str(out), "--input", str(tmp_path / "in.txt"), "--top-k", "2"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == ["neu", "pos"]


def test_evaluate_json_and_confusion_picture(run_dir, tmp_path, capsys):
    out, dev = run_dir
    png = tmp_path / "cm.png"
    assert main(["classify", "evaluate", str(out), "--test", str(dev), "--json", "--confusion", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "micro_f1", "per_class", "examples"} <= set(report)
    assert report["examples"] == 40
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_warns_about_labels_only_in_the_test_file(run_dir, tmp_path, capsys):
    out, _ = run_dir
    test = write_tsv(tmp_path / "t.tsv", [("good", "pos"), ("great", "wow"), ("superb", "wow")])
    assert main(["classify", "evaluate", str(out), "--test", str(test), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["unseen_label_examples"] == 2
    assert ("rnnkit: warning: 2 test examples have labels never seen in training (counted as errors): wow"
            in captured.err)


def test_explain_prints_weights_and_writes_a_picture(run_dir, tmp_path, capsys):
    out, _ = run_dir
    png = tmp_path / "w.png"
    assert main(["classify", "explain", str(out), "the film was good", "--out", str(png)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["the", "film", "was", "good"]
    assert sum(float(r[1]) for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert png.read_bytes()[:4] == b"\x89PNG"


def existing_run(folder):
    """A folder holding a run (stand-in files): bad input must leave every byte of it in place."""
    folder.mkdir()
    files = {"config.json": "{\"task\": \"classify\"}\n", "best.safetensors": "weights", "metrics.jsonl": "{}\n"}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


TSV = "text\tlabel\ngood film\tpos\nbad film\tneg\n"
BAD_INPUTS = [
    ("missing-label-column.tsv", TSV.encode(), ["--text-column", "text", "--label-column", "stars"],
     r"missing-label-column.tsv:1: the header has no column 'stars' \(columns: text, label\)"),
    ("missing-text-column.tsv", b"good\tpos\nbad\n", ["--text-column", "0", "--label-column", "1"],
     r"missing-text-column.tsv:2: the row has 1 field, so no label column \(1\)"),
    ("header.tsv", TSV.encode(), ["--text-column", "sentence", "--label-column", "label"],
     r"header.tsv:1: the header has no column 'sentence'"),
    ("one-class.tsv", b"text\tlabel\ngood\tpos\nfine\tpos\n", ["--text-column", "text", "--label-column", "label"],
     r"one-class.tsv: only one class \('pos'\) in the training data; a classifier needs two or more"),
    ("quote.csv", b'text,label\n"good film,pos\nbad,neg\n', ["--text-column", "text", "--label-column", "label"],
     r"quote.csv:2: unclosed quote: the quoted field starting on this line never ends"),
    ("latin1.tsv", "text\tlabel\ncaf\u00e9 good\tpos\nbad\tneg\n".encode("latin-1"),
     ["--text-column", "text", "--label-column", "label"], r"latin1.tsv:2: not valid UTF-8 .*--encoding"),
    ("empty-label.tsv", b"text\tlabel\ngood\t\nbad\tneg\n", ["--text-column", "text", "--label-column", "label"],
     r"empty-label.tsv:2: empty label"),
]


@pytest.mark.parametrize("name, content, args, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_the_run_folder_untouched(name, content, args, message, tmp_path, capsys):
    data = tmp_path / name
    data.write_bytes(content)
    out = tmp_path / "run"
    files = existing_run(out)
    code = main(["classify", "train", "--train", str(data), *args, "--out", str(out), "--overwrite", *SMALL])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("rnnkit: error: ")
    assert re.search(message, err), err
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert all((out / n).read_text() == text for n, text in files.items())


def test_latin1_file_reads_with_encoding(tmp_path, capsys):
    data = tmp_path / "latin1.tsv"
    data.write_bytes("text\tlabel\ncaf\u00e9 good\tpos\nbad\tneg\n".encode("latin-1"))
    out = tmp_path / "run"
    assert main(["classify", "train", "--train", str(data), "--text-column", "text", "--label-column", "label",
                 "--encoding", "latin-1", "--max-steps", "1", "--out", str(out), *SMALL]) == 0
    assert "café" in json.loads((out / "tokenizer.json").read_text())["tokenizer"]["vocab"]["tokens"]


def test_empty_texts_are_skipped_with_a_warning_and_count(tmp_path, capsys):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\ngood\tpos\n \tneg\nbad\tneg\n\tpos\n", encoding="utf-8")
    assert main(["classify", "train", "--train", str(data), "--text-column", "text", "--label-column", "label",
                 "--max-steps", "1", "--out", str(tmp_path / "run"), *SMALL]) == 0
    err = capsys.readouterr().err
    assert f"rnnkit: warning: {data}: skipped 2 record(s) with an empty text (training data; line 3, 5)" in err
