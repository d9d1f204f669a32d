"""``rnnkit lm`` and ``rnnkit plot`` from the command line: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rnnkit.cli.main import main
from rnnkit.nn import cell_names
from tests.test_lm_task import make_text

TINY = ["--hidden", "16", "--emb", "8", "--layers", "1", "--batch-size", "4", "--bptt", "8", "--threads", "1",
        "--no-progress", "--time-budget", "none"]


@pytest.fixture
def files(tmp_path):
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text(make_text(200, 1))
    valid.write_text(make_text(30, 2))
    return train, valid


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_run(capsys, files, out, *extra):
    train, valid = files
    return run_cli(capsys, "lm", "train", "--train", train, "--valid", valid, "--out", out, "--max-steps", "6",
                   "--sample-length", "20", *TINY, *extra)


def test_train_evaluate_generate_plot(tmp_path, files, capsys):
    run = tmp_path / "run"
    code, out, err = train_run(capsys, files, run, "--level", "word", "--eval-every", "3", "--log-every", "2")
    assert code == 0, err
    assert len(out.split()) >= 1  # the sample on stdout
    assert "stopped after step 6" in err
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "best.safetensors", "last.safetensors"):
        assert (run / name).is_file(), name
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rec = [r for r in rec if r["split"] == "train"][0]
    assert set(train_rec) >= {"step", "epoch", "split", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}

    code, out, err = run_cli(capsys, "lm", "evaluate", run, "--test", files[1], "--json")
    assert code == 0, err
    m = json.loads(out)
    assert set(m) == {"loss", "perplexity", "bits_per_token", "tokens"}

    code, out, err = run_cli(capsys, "lm", "generate", run, "--prompt", "the zebra", "--length", "5", "--seed", "1")
    assert code == 0
    assert out.startswith("the zebra")
    assert "zebra" in err and err.count("warning") == 1  # warned once, naming the unknown symbol
    code, out2, _ = run_cli(capsys, "lm", "generate", run, "--prompt", "the zebra", "--length", "5", "--seed", "1")
    assert out2 == out

    code, out, err = run_cli(capsys, "plot", run)
    assert code == 0 and (run / "curves.png").stat().st_size > 1000


def test_config_file_and_flags_win(tmp_path, files, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('hidden = 12\nlevel = "word"\nlr = 0.01\n')
    code, _, err = train_run(capsys, files, tmp_path / "r", "--config", cfg, "--lr", "0.02")
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["level"] == "word" and saved["lr"] == 0.02
    assert saved["hidden"] == 16  # TINY passes --hidden 16: the flag wins over the file's 12
    yaml_cfg = tmp_path / "c.yaml"
    yaml_cfg.write_text("emb: 10\nmodel: gru\n")
    code, _, err = train_run(capsys, files, tmp_path / "y", "--config", yaml_cfg, "--emb", "6")
    assert code == 0, err
    saved = json.loads((tmp_path / "y" / "config.json").read_text())
    assert saved["model"] == "gru" and saved["emb"] == 6


@pytest.mark.parametrize("content, message", [
    ('hiden = 3\n', "c.toml: unknown field 'hiden'"),
    ('hidden = "big"\n', "c.toml: field 'hidden': expected an integer"),
    ('hidden = [\n', "c.toml: ill-formed config"),
    ('model = "transformer"\n', f"c.toml: field 'model': unknown cell 'transformer' (choose from "
                                f"{', '.join(cell_names())} or package.module:ClassName)"),
])
def test_bad_config_file(tmp_path, files, capsys, content, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    code, out, err = train_run(capsys, files, tmp_path / "r", "--config", cfg)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_bad_data_files(tmp_path, files, capsys):
    train, valid = files
    empty, binary, latin = tmp_path / "empty.txt", tmp_path / "bin.txt", tmp_path / "latin.txt"
    empty.write_text("")
    binary.write_bytes(b"abc\n\x00\x01\x02")
    latin.write_bytes(b"ok line\ncaf\xe9\n")
    short = tmp_path / "short.txt"
    short.write_text("a b\n")
    cases = [
        (["--train", tmp_path / "missing.txt"], "missing.txt: no such file"),
        (["--train", empty], "empty.txt: file is empty"),
        (["--train", binary], "bin.txt:2: binary file"),
        (["--train", latin], "latin.txt:2: not valid UTF-8"),
        (["--train", short, "--level", "word"], "short.txt: corpus too short"),
        (["--train", train, "--valid", tmp_path / "nope.txt"], "nope.txt: no such file"),
        (["--train", train, "--lr", "fast"], "field 'lr': expected a number"),
        (["--train", train, "--time-budget", "soon"], "field 'time_budget': not a duration"),
        (["--train", train, "--dropout", "1.5"], "field 'dropout': must be in [0, 1)"),
        (["--train", train, "--precision", "bf16", "--device", "cpu"], "field 'precision': bf16 autocast needs"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, "lm", "train", "--out", tmp_path / "r", *TINY, *args)
        assert code == 2, (args, err)
        assert message in err, (message, err)
        assert err.count("\n") == 1 and out == ""
        assert not (tmp_path / "r").exists()


def test_existing_run_is_not_overwritten(tmp_path, files, capsys):
    run = tmp_path / "run"
    assert train_run(capsys, files, run)[0] == 0
    before = (run / "best.safetensors").read_bytes()
    code, _, err = train_run(capsys, files, run)
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    # a bad input with --overwrite leaves the old run untouched
    code, _, err = run_cli(capsys, "lm", "train", "--train", tmp_path / "missing.txt", "--out", run, "--overwrite",
                           *TINY)
    assert code == 2 and (run / "best.safetensors").read_bytes() == before
    code, _, err = train_run(capsys, files, run, "--overwrite")
    assert code == 0, err


def test_bad_runs_and_checkpoints(tmp_path, files, capsys):
    run = tmp_path / "run"
    assert train_run(capsys, files, run)[0] == 0
    code, _, err = run_cli(capsys, "lm", "evaluate", tmp_path / "nowhere")
    assert code == 2 and "nowhere: no such run folder" in err
    (tmp_path / "empty_run").mkdir()
    code, _, err = run_cli(capsys, "lm", "evaluate", tmp_path / "empty_run")
    assert code == 2 and "config.json: missing" in err
    # a run folder without a checkpoint
    nock = tmp_path / "nock"
    nock.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (nock / name).write_bytes((run / name).read_bytes())
    code, _, err = run_cli(capsys, "lm", "generate", nock)
    assert code == 2 and "no 'best' checkpoint" in err
    # damaged checkpoint
    data = (run / "best.safetensors").read_bytes()
    (run / "best.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "lm", "evaluate", run)
    assert code == 2 and "best.safetensors: damaged" in err and err.count("\n") == 1
    # a checkpoint of another shape: a bigger model's weights in this run
    other = tmp_path / "other"
    train, valid = files
    assert run_cli(capsys, "lm", "train", "--train", train, "--out", other, "--max-steps", "2", *TINY,
                   "--hidden", "20")[0] == 0
    (run / "best.safetensors").write_bytes((other / "best.safetensors").read_bytes())
    code, _, err = run_cli(capsys, "lm", "evaluate", run, "--test", valid)
    assert code == 2 and "checkpoint is for another model (hidden = 20, the run's config says 16)" in err
    # a run of another task
    cfg = json.loads((run / "config.json").read_text())
    cfg["task"] = "tag"
    (run / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "lm", "evaluate", run)
    assert code == 2 and "run of task 'tag', not 'lm'" in err
    # --resume accepts only stopping, saving, device and thread flags
    code, _, err = run_cli(capsys, "lm", "train", "--resume", other, "--hidden", "8")
    assert code == 2 and "--resume takes only" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_save_say_how_to_resume_and_exit_non_zero(tmp_path, files, sig):
    train, _ = files
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # --save-every 0: the only checkpoint is the one written on the signal
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "lm", "train", "--train", str(train), "--out", str(run),
                             "--log-every", "1", "--epochs", "100000", "--sample-length", "0", "--save-every", "0",
                             *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    assert not (run / "last.safetensors").exists()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err  # 130 / 143: `train && evaluate` must not go on
    assert "interrupted" in err and f"--resume {run}" in err and "Traceback" not in err
    assert (run / "last.safetensors").is_file()
    step = step_of(run)
    code = main(["lm", "train", "--resume", str(run), "--max-steps", str(step + 2), "--sample-length", "0",
                 "--no-progress"])
    assert code == 0 and step_of(run) == step + 2


def step_of(run) -> int:  # noqa: ANN001
    from rnnkit.train import checkpoint as ck

    return ck.load_checkpoint(run / "last.safetensors").meta["state"]["step"]
