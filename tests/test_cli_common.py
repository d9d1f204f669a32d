"""What every task's CLI shares: the same run as the Python API, help with choices and one default per
flag, and tasks registered explicitly (a broken task module fails loudly)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import rnnkit.cli
import rnnkit.tasks.classify as classify
import rnnkit.tasks.lm as lm
import rnnkit.tasks.seq2seq as s2s
import rnnkit.tasks.tag as tag
from rnnkit.cli.main import build_parser, main
from rnnkit.nn.registry import describe_cells

DATA = Path(__file__).parent / "fixtures" / "runs_v0_1"
TASKS = {
    "lm": (lm, {"train": DATA / "lm.txt", "hidden": 8, "emb": 4, "layers": 1, "batch_size": 4, "bptt": 8,
                "tie_weights": False}),
    "tag": (tag, {"train": DATA / "tag.tsv", "valid": DATA / "tag.tsv", "hidden": 4, "emb": 4, "char_emb": 4,
                  "char_hidden": 4, "batch_size": 8, "crf": True, "chars": False}),
    "seq2seq": (s2s, {"train": DATA / "seq2seq.tsv", "emb": 4, "enc_hidden": 4, "hidden": 8, "batch_size": 8}),
    "classify": (classify, {"train": DATA / "seq2seq.tsv", "valid": DATA / "seq2seq.tsv", "format": "tsv",
                            "text_column": "0", "label_column": "1", "emb": 4, "hidden": 4, "batch_size": 8,
                            "pooling": "attention", "bidirectional": False}),
}


def flags(fields: dict) -> list[str]:
    """The CLI flags giving ``fields``: ``--batch-size 4``, ``--crf`` / ``--no-crf`` for booleans."""
    out = []
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


@pytest.mark.parametrize("name", sorted(TASKS))
def test_python_api_and_cli_write_the_same_config(name, tmp_path, capsys):
    module, fields = TASKS[name]
    fields = {**fields, "max_steps": 1, "threads": 1}
    module.train(out=str(tmp_path / "api"), progress=False, **{k: str(v) if isinstance(v, Path) else v
                                                                 for k, v in fields.items()})
    extra = {"lm": ["--sample-length", "0"], "seq2seq": ["--samples", "0"]}.get(name, [])
    assert main([name, "train", "--out", str(tmp_path / "cli"), "--no-progress", *flags(fields), *extra]) == 0
    err = capsys.readouterr().err
    if name in ("tag", "classify"):  # the stop line says what the task selects its best checkpoint on
        assert "best checkpoint by validation accuracy (highest)" in err
    api = json.loads((tmp_path / "api" / "config.json").read_text())
    cli = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert api.pop("out") != cli.pop("out")
    assert api == cli
    # the task's own defaults reach both: e.g. its time budget, not TrainConfig's None
    assert api["time_budget"] == module.DRIVER.spec.config_class().time_budget is not None


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_help_shows_choices_and_each_default_once(name, capsys):
    text = help_text(capsys, name, "train")
    assert "{adam,adamw,sgd}" in text
    assert "{none,plateau,cosine,step}" in text
    assert "{fp32,bf16,fp16}" in text
    for flag in ("--optimizer", "--scheduler", "--precision"):  # no choice list hidden behind a metavar
        assert f"{flag} S" not in text
    for entry in " ".join(text.split()).split(" --"):  # one flag's help per entry
        assert entry.count("(default:") <= 1, entry
    cfg = TASKS[name][0].DRIVER.spec.config_class()
    assert f"(default: {cfg.time_budget:g}s)" in " ".join(text.split())


def test_lm_help_lists_the_models(capsys):
    text = " ".join(help_text(capsys, "lm", "train").split())
    assert f"recurrent cell: {describe_cells()}" in text


def test_a_broken_task_module_fails_loudly(monkeypatch):
    monkeypatch.delattr(rnnkit.cli, "tag", raising=False)
    monkeypatch.setitem(sys.modules, "rnnkit.cli.tag", None)  # importing it raises ImportError
    with pytest.raises(ImportError):
        build_parser()


def test_every_task_is_registered(capsys):
    text = help_text(capsys)
    for name in ("lm", "tag", "seq2seq", "classify", "plot"):
        assert name in text
