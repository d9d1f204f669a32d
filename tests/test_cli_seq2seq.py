"""``rnnkit seq2seq`` from the command line: results on stdout, n-best format, one-line errors, exit codes."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest

from rnnkit.cli.main import main
from tests.test_seq2seq_task import reverse_pairs, write_tsv

TINY = ["--emb", "16", "--enc-hidden", "16", "--hidden", "32", "--batch-size", "16", "--lr", "0.01", "--dropout",
        "0", "--threads", "1", "--no-progress", "--time-budget", "none", "--epochs", "50"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_pairs")
    train, valid = folder / "train.tsv", folder / "valid.tsv"
    write_tsv(train, reverse_pairs(300, 1))
    write_tsv(valid, reverse_pairs(30, 2))
    return train, valid


def run_cli(capsys, *argv, monkeypatch=None, stdin: bytes | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli_runs") / "mt"
    train, valid = files
    code = main([str(a) for a in ("seq2seq", "train", "--train", train, "--valid", valid, "--out", run,
                                  "--max-steps", "150", "--eval-every", "75", "--samples", "3", *TINY)])
    assert code == 0
    return run


def test_train_prints_samples_and_writes_a_run(files, tmp_path, capsys):
    train, valid = files
    run = tmp_path / "r"
    code, out, err = run_cli(capsys, "seq2seq", "train", "--train", train, "--valid", valid, "--out", run,
                             "--max-steps", "4", "--samples", "2", *TINY)
    assert code == 0, err
    assert "stopped after step 4" in err and "best checkpoint on the validation pairs (greedy): BLEU" in err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 1 for line in lines)  # source<TAB>translation
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name
    code, out, err = run_cli(capsys, "seq2seq", "train", "--resume", run, "--max-steps", "6", "--samples", "0",
                             "--no-progress")
    assert code == 0 and out == "" and "stopped after step 6 (reached --max-steps); 2 steps in this run" in err


def test_translate_evaluate_attention(trained, files, tmp_path, capsys, monkeypatch):
    _, valid = files
    # stdin -> one line per input line, in order; blank lines stay blank
    code, out, err = run_cli(capsys, "seq2seq", "translate", trained, "--beam", "3", monkeypatch=monkeypatch,
                             stdin=b"ant bee cat\n\n  \ndog\n")
    assert code == 0, err
    assert out.split("\n") == ["CAT BEE ANT", "", "", "DOG", ""]
    src = tmp_path / "src.txt"
    src.write_text("ant bee cat\n\ndog\n")
    code, out2, err = run_cli(capsys, "seq2seq", "translate", trained, "--input", src, "--beam", "3")
    assert code == 0 and out2.split("\n") == ["CAT BEE ANT", "", "DOG", ""]

    code, out, err = run_cli(capsys, "seq2seq", "evaluate", trained, "--test", valid, "--beam", "3", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert set(m) == {"bleu", "chrf", "exact_match", "sentences"} and m["sentences"] == 30
    assert 0 <= m["exact_match"] <= 1 and 0 <= m["bleu"] <= 100 and m["exact_match"] >= 0.5
    code, text, _ = run_cli(capsys, "seq2seq", "evaluate", trained, "--test", valid, "--beam", "3")
    assert code == 0 and text.startswith(f"BLEU {m['bleu']:.2f}  chrF {m['chrf']:.2f}")
    # parallel test files give the same scores
    s, t = tmp_path / "t.src", tmp_path / "t.tgt"
    lines = valid.read_text().splitlines()
    s.write_text("".join(x.split("\t")[0] + "\n" for x in lines))
    t.write_text("".join(x.split("\t")[1] + "\n" for x in lines))
    code, out, err = run_cli(capsys, "seq2seq", "evaluate", trained, "--src-test", s, "--tgt-test", t, "--beam", "3",
                             "--json")
    assert code == 0 and json.loads(out) == m

    png = tmp_path / "att.png"
    code, out, err = run_cli(capsys, "seq2seq", "attention", trained, "ant bee cat", "--out", png)
    assert code == 0, err
    assert out.strip() == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert "translation: CAT BEE ANT" in err


def test_nbest_format(trained, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "seq2seq", "translate", trained, "--beam", "4", "--nbest", "3",
                             monkeypatch=monkeypatch, stdin=b"ant bee\n\ncat dog eel\n")
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(r) == 3 and re.fullmatch(r"-?\d+\.\d{4}", r[1]) for r in rows)
    assert [r[0] for r in rows] == ["0", "0", "0", "1", "2", "2", "2"]
    assert rows[3] == ["1", "0.0000", ""]  # an empty input line: one line with an empty translation
    for i in ("0", "2"):
        scores = [float(r[1]) for r in rows if r[0] == i]
        assert scores == sorted(scores, reverse=True)
    code, best, _ = run_cli(capsys, "seq2seq", "translate", trained, "--beam", "4", monkeypatch=monkeypatch,
                            stdin=b"ant bee\n\ncat dog eel\n")
    assert best.splitlines() == [rows[0][2], "", rows[4][2]]


def one_line_error(code, out, err, message):
    assert code == 2 and out == ""
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: ") and "Traceback" not in err


def test_bad_training_data(files, tmp_path, capsys):
    train, _ = files
    tab, empty, latin = tmp_path / "tab.tsv", tmp_path / "empty.tsv", tmp_path / "latin.tsv"
    tab.write_text("ant\tANT\nbee BEE\n")
    empty.write_text("ant\tANT\nbee\t\n")
    latin.write_bytes(b"ant\tANT\ncaf\xe9\tCAFE\n")
    src, tgt = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text("ant\nbee\n")
    tgt.write_text("ANT\n")
    cases = [
        (["--train", tab], f"{tab}:2: expected one tab (source<TAB>target), found none"),
        (["--train", empty], f"{empty}:2: empty target side"),
        (["--train", latin], f"{latin}:2: not valid UTF-8"),
        (["--train", tmp_path / "missing.tsv"], "missing.tsv: no such file"),
        (["--src-train", src, "--tgt-train", tgt], f"{src}: 2 lines but {tgt} has 1"),
        (["--src-train", src], "field 'tgt_train': --src-train needs --tgt-train"),
        (["--train", train, "--attention", "dot", "--enc-hidden", "8"], "attention=dot needs hidden == 2 * enc_hidden"),
        (["--train", train, "--label-smoothing", "1"], "field 'label_smoothing': must be in [0, 1)"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, "seq2seq", "train", "--out", tmp_path / "r", *TINY, *args)
        one_line_error(code, out, err, message)
        assert not (tmp_path / "r").exists()


def test_bad_inputs_to_a_run(trained, files, tmp_path, capsys, monkeypatch):
    train, _ = files
    code, out, err = run_cli(capsys, "seq2seq", "translate", trained, monkeypatch=monkeypatch, stdin=b"ant\ncaf\xe9\n")
    one_line_error(code, out, err, "<stdin>:2: not valid UTF-8")
    code, out, err = run_cli(capsys, "seq2seq", "translate", trained, monkeypatch=monkeypatch, stdin=b"\n \n")
    one_line_error(code, out, err, "<stdin>: no input")
    code, out, err = run_cli(capsys, "seq2seq", "translate", trained, "--beam", "2", "--nbest", "3",
                             monkeypatch=monkeypatch, stdin=b"ant\n")
    one_line_error(code, out, err, "field 'nbest': must be in [1, --beam = 2], got 3")
    bad = tmp_path / "bad.tsv"
    bad.write_text("ant\tANT\nbee\tBEE\tX\n")
    code, out, err = run_cli(capsys, "seq2seq", "evaluate", trained, "--test", bad)
    one_line_error(code, out, err, f"{bad}:2: expected one tab (source<TAB>target), found 2")
    code, out, err = run_cli(capsys, "seq2seq", "evaluate", trained, "--src-test", train)
    one_line_error(code, out, err, "parallel test files come in pairs")
    code, out, err = run_cli(capsys, "seq2seq", "attention", trained, "   ")
    one_line_error(code, out, err, "the sentence is empty")

    # a language-model run is refused by every command
    lm_run = tmp_path / "lm"
    text = tmp_path / "t.txt"
    text.write_text("ant bee cat dog\n" * 40)
    code, _, err = run_cli(capsys, "lm", "train", "--train", text, "--out", lm_run, "--max-steps", "1", "--hidden", "8",
                           "--emb", "8", "--layers", "1", "--batch-size", "2", "--bptt", "4", "--sample-length", "0",
                           "--no-progress", "--time-budget", "none", "--threads", "1")
    assert code == 0, err
    for argv in (["translate", lm_run, "--input", text], ["evaluate", lm_run, "--test", train],
                 ["attention", lm_run, "ant"], ["train", "--resume", lm_run, "--max-steps", "2"]):
        code, out, err = run_cli(capsys, "seq2seq", *argv)
        one_line_error(code, out, err, "this is a run of task 'lm', not 'seq2seq'")
