"""``rnnkit tag`` from the command line: results on stdout, one-line errors naming file:line, exit codes."""

from __future__ import annotations

import io
import json
import sys

import pytest

from rnnkit.cli.main import main
from rnnkit.data.conll import read_conllu
from rnnkit.tasks import tag
from tests.test_tag_task import ner_sentences, pos_sentences, write_columns, write_conllu

TINY = ["--emb", "16", "--char-emb", "8", "--char-hidden", "8", "--hidden", "16", "--layers", "1", "--batch-size",
        "8", "--threads", "1", "--no-progress", "--time-budget", "none", "--eval-every", "0", "--lr", "0.01"]


@pytest.fixture
def files(tmp_path):
    train, valid = tmp_path / "train.conllu", tmp_path / "dev.conllu"
    write_conllu(train, pos_sentences(120, 1))
    write_conllu(valid, pos_sentences(30, 2))
    return train, valid


def run_cli(capsys, *argv, monkeypatch=None, stdin: bytes | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_run(capsys, files, out, *extra):
    train, valid = files
    return run_cli(capsys, "tag", "train", "--train", train, "--valid", valid, "--out", out, "--max-steps", "60",
                   *TINY, *extra)


@pytest.fixture
def trained(tmp_path, files, capsys):
    run = tmp_path / "run"
    code, out, err = train_run(capsys, files, run)
    assert code == 0, err
    return run


def test_train_predict_evaluate(tmp_path, files, trained, capsys, monkeypatch):
    run, (_, valid) = trained, files
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name
    # plain sentences on stdin -> token<TAB>tag, a blank line after each sentence (blank input lines skipped)
    code, out, err = run_cli(capsys, "tag", "predict", run, monkeypatch=monkeypatch,
                             stdin=b"the dog sat .\n\na zebra ran !\n")
    assert code == 0, err
    blocks = out.split("\n\n")
    assert out.endswith("\n\n") and len(blocks) == 3 and blocks[2] == ""
    assert blocks[0].splitlines() == ["the\tDET", "dog\tNOUN", "sat\tVERB", ".\tPUNCT"]
    assert [line.split("\t")[0] for line in blocks[1].splitlines()] == ["a", "zebra", "ran", "!"]
    # the same from a file
    plain = tmp_path / "plain.txt"
    plain.write_text("the dog sat .\n\na zebra ran !\n")
    assert run_cli(capsys, "tag", "predict", run, "--input", plain)[1] == out
    # CoNLL-U in -> CoNLL-U out: every line copied, only the UPOS column replaced
    code, out, err = run_cli(capsys, "tag", "predict", run, "--input", valid, "--format", "conllu")
    assert code == 0, err
    src, got = valid.read_text().splitlines(), out.splitlines()
    assert len(src) == len(got)
    for a, b in zip(src, got):
        fa, fb = a.split("\t"), b.split("\t")
        if a.startswith("#") or not a or not fa[0].isdigit():
            assert a == b
        else:
            assert fa[:3] == fb[:3] and fa[4:] == fb[4:]
    pred_file = tmp_path / "pred.conllu"
    pred_file.write_text(out)
    gold, pred = read_conllu(valid), read_conllu(pred_file)
    assert [s.tokens for s in gold] == [s.tokens for s in pred]
    agree = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g.labels, p.labels))
    # evaluate: JSON, fractions in [0, 1], the same accuracy the written predictions have
    code, out, err = run_cli(capsys, "tag", "evaluate", run, "--test", valid, "--json")
    assert code == 0, err
    m = json.loads(out)
    assert set(m) >= {"accuracy", "precision", "recall", "f1", "tokens", "span_level", "unseen_label_tokens"}
    assert all(0 <= m[k] <= 1 for k in ("accuracy", "precision", "recall", "f1"))
    assert m["accuracy"] == agree / m["tokens"] and m["accuracy"] > 0.9
    code, out, err = run_cli(capsys, "tag", "evaluate", run)  # the run's validation data, human-readable
    assert code == 0 and out.startswith("accuracy ") and "token-level micro" in out and out.count("\n") == 1
    # predict on a column file, conllu output without a source layout
    cols = tmp_path / "cols.txt"
    write_columns(cols, pos_sentences(3, 5))
    code, out, err = run_cli(capsys, "tag", "predict", run, "--input", cols, "--input-format", "columns",
                             "--format", "conllu")
    assert code == 0, err
    first = out.splitlines()[0].split("\t")
    assert len(first) == 10 and first[0] == "1" and first[3] in tag.load(run).labels


def test_span_scores_for_bio_and_crf_flag(tmp_path, capsys):
    train, valid = tmp_path / "train.txt", tmp_path / "dev.txt"
    write_columns(train, ner_sentences(100, 3))
    write_columns(valid, ner_sentences(30, 4))
    run = tmp_path / "ner"
    code, _, err = run_cli(capsys, "tag", "train", "--train", train, "--valid", valid, "--out", run, "--crf",
                           "--no-chars", "--max-steps", "40", *TINY)
    assert code == 0, err
    assert "[span]" in err  # the closing summary on stderr: span scores for a BIO tag set
    code, out, _ = run_cli(capsys, "tag", "evaluate", run, "--test", valid)
    assert code == 0 and "[span]" in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["crf"] is True and saved["chars"] is False


def test_resume(tmp_path, files, capsys):
    run = tmp_path / "run"
    assert train_run(capsys, files, run, "--max-steps", "3")[0] == 0
    code, _, err = run_cli(capsys, "tag", "train", "--resume", run, "--max-steps", "6", "--no-progress")
    assert code == 0, err
    assert "stopped after step 6" in err and "3 steps in this run" in err
    code, _, err = run_cli(capsys, "tag", "train", "--resume", run, "--hidden", "8")
    assert code == 2 and "--resume takes only" in err
    code, _, err = train_run(capsys, files, run)
    assert code == 2 and "already holds a run" in err


def _check_error(result, message):
    code, out, err = result
    assert code == 2, err
    assert message in err, (message, err)
    assert err.count("\n") == 1 and out == "" and "Traceback" not in err


def test_bad_training_input(tmp_path, files, capsys):
    train, _ = files
    bad = tmp_path / "bad.conllu"
    bad.write_text("# c\n1\tthe\tthe\tDET\tD\t_\t0\tdep\t_\t_\n2\tcat\tcat\tNOUN\n\n")
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("John X B-PER\nran O\n")
    empty, binary = tmp_path / "empty.conllu", tmp_path / "bin.txt"
    empty.write_text("")
    binary.write_bytes(b"a O\n\x00\x01\x02")
    cases = [
        (["--train", bad], "bad.conllu:3: expected 10 tab-separated CoNLL-U columns, got 4"),
        (["--train", ragged], "ragged.txt:2: expected 3 columns like line 1, got 2"),
        (["--train", train, "--column", "lemma"], "field 'column': 'lemma' is not upos, xpos"),
        (["--train", train, "--column", "7"], "'7' is not a CoNLL-U label column"),
        (["--train", ragged, "--column", "xpos"], "column: 'xpos' needs a CoNLL-U file"),
        (["--train", empty], "empty.conllu: file is empty"),
        (["--train", binary], "bin.txt:2: binary file"),
        (["--train", tmp_path / "missing.conllu"], "missing.conllu: no such file"),
        (["--train", train, "--constraints", "strict"], None),  # argparse choices: exit before our handler
    ]
    for args, message in cases:
        if message is None:
            with pytest.raises(SystemExit):
                run_cli(capsys, "tag", "train", "--out", tmp_path / "r", *TINY, *args)
            capsys.readouterr()
            continue
        _check_error(run_cli(capsys, "tag", "train", "--out", tmp_path / "r", *TINY, *args), message)
        assert not (tmp_path / "r").exists()


def test_bad_prediction_and_evaluation_input(tmp_path, trained, capsys, monkeypatch):
    run = trained
    binary, latin, empty = tmp_path / "bin.conllu", tmp_path / "latin.txt", tmp_path / "empty.txt"
    binary.write_bytes(b"1\tthe\n\x00")
    latin.write_bytes(b"ok line\ncaf\xe9 au lait\n")
    empty.write_text("  \n")
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tthe\tthe\tDET\tD\t_\t0\tdep\t_\t_\nx\tcat\tcat\tNOUN\t_\t_\t0\tdep\t_\t_\n")
    _check_error(run_cli(capsys, "tag", "predict", run, monkeypatch=monkeypatch, stdin=b"the cat\n\x00\n"),
                 "<stdin>:2: binary input (NUL byte)")
    _check_error(run_cli(capsys, "tag", "predict", run, monkeypatch=monkeypatch, stdin=b"ok\ncaf\xe9\n"),
                 "<stdin>:2: not valid UTF-8")
    _check_error(run_cli(capsys, "tag", "predict", run, monkeypatch=monkeypatch, stdin=b"\n \n"),
                 "<stdin>: no input")
    _check_error(run_cli(capsys, "tag", "predict", run, "--input", latin), "latin.txt:2: not valid UTF-8")
    _check_error(run_cli(capsys, "tag", "predict", run, "--input", empty), "empty.txt: file is empty")
    _check_error(run_cli(capsys, "tag", "predict", run, "--input", bad),
                 "bad.conllu:2: token id 'x' is not a whole number")
    _check_error(run_cli(capsys, "tag", "predict", run, "--input-format", "conllu"), "needs --input FILE")
    _check_error(run_cli(capsys, "tag", "evaluate", run, "--test", binary), "bin.conllu:2: binary file")
    _check_error(run_cli(capsys, "tag", "evaluate", run, "--test", bad), "bad.conllu:2: token id 'x'")
    _check_error(run_cli(capsys, "tag", "evaluate", run, "--test", bad, "--column", "lemma"),
                 "field 'column': 'lemma' is not upos, xpos")
    _check_error(run_cli(capsys, "tag", "evaluate", run, "--threads", "0"), "field 'threads'")
    _check_error(run_cli(capsys, "tag", "evaluate", tmp_path / "nowhere"), "nowhere: no such run folder")


def test_unseen_labels_at_evaluation_are_reported(tmp_path, trained, capsys):
    test = tmp_path / "test.conllu"
    sents = pos_sentences(10, 7)
    sents[2] = (sents[2][0] + ["wow"], sents[2][1] + ["INTJ"])
    write_conllu(test, sents)
    code, out, err = run_cli(capsys, "tag", "evaluate", trained, "--test", test, "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["unseen_label_tokens"] == 1 and m["unseen_labels"] == ["INTJ"]
    assert "1 gold tokens have labels never seen in training (counted as errors): INTJ" in err
    assert err.count("\n") == 1


def test_runs_of_other_tasks_are_refused(tmp_path, trained, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\n" * 40)
    lm_run = tmp_path / "lm"
    code, _, err = run_cli(capsys, "lm", "train", "--train", text, "--out", lm_run, "--max-steps", "1", "--hidden",
                           "8", "--emb", "8", "--layers", "1", "--batch-size", "2", "--bptt", "8", "--no-progress",
                           "--time-budget", "none", "--sample-length", "0")
    assert code == 0, err
    _check_error(run_cli(capsys, "tag", "evaluate", lm_run), "run of task 'lm', not 'tag'")
    _check_error(run_cli(capsys, "tag", "train", "--resume", lm_run), "run of task 'lm', not 'tag'")
    (trained / "best.safetensors").write_bytes((lm_run / "best.safetensors").read_bytes())
    _check_error(run_cli(capsys, "tag", "predict", trained, "--input", text),
                 "checkpoint is for task 'lm', not 'tag'")
