"""Smoke test of the LM benchmark scripts' ``--quick`` paths, so that they keep running as the product changes.

The scripts live in ``benchmarks/`` (not a package); they are imported from there and run in-process on tiny
models and a small generated PTB-like corpus, except ``lm_process.py`` whose point is to time two real
processes (``rnnkit lm train`` and the reference script): here both of its command lines run in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import runpy
import sys
from pathlib import Path

import pytest

from rnnkit.cli.main import main as cli_main

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def fake_ptb(root: Path) -> Path:
    """A small PTB-like corpus (Zipf-ish words, ``<unk>``, one sentence per line) in ``root/ptb``."""
    rng = random.Random(0)
    words = ["<unk>", "N"] + [f"w{i}" for i in range(80)]
    weights = [1 / (i + 1) for i in range(len(words))]
    (root / "ptb").mkdir(parents=True)
    for split, lines in (("train", 300), ("valid", 40), ("test", 40)):
        text = "".join(" " + " ".join(rng.choices(words, weights, k=rng.randint(3, 15))) + " \n"
                       for _ in range(lines))
        (root / "ptb" / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return root


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_lm_benchmark_scripts_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("common", "throughput", "lm_process", "generation", "lm_quality"):
        sys.modules.pop(name, None)
    import generation
    import lm_process
    import lm_quality
    import throughput

    data = str(fake_ptb(tmp_path / "data"))
    common_flags = ["--quick", "--threads", "1"]

    # throughput: the memory children run in-process here (a fresh interpreter per child costs seconds);
    # the argv they get is the one a real child gets
    children = []

    def child_in_process(argv: list[str], timeout: float | None = None, env: dict | None = None) -> dict:
        assert Path(argv[0]).name == "throughput.py"
        children.append(argv)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            throughput.main(argv[1:])
        return last_json(out.getvalue())

    monkeypatch.setattr(throughput.common, "run_child", child_in_process)
    res = throughput.main([*common_flags, "--configs", "char-2x512"])
    assert last_json(capsys.readouterr().out)["results"] == json.loads(json.dumps(res["results"]))
    got = {(r["mode"], r["side"]) for r in res["results"]}
    assert got == {(m, s) for m in ("train", "infer") for s in ("reference", "rnnkit")}
    train = [r for r in res["results"] if r["mode"] == "train"]
    assert all(r["tokens_per_s"]["median"] > 0 and r["peak_rss_mib"] > 0 for r in train)
    assert len(children) == 2 and res["gemm"]["peak_gflops"] > 0 and res["keras"].startswith("skipped")
    # the reference model's FLOP count: 2 LSTM layers (2 * 4H(in + H) each) + the output layer (2 H V)
    spec = throughput.Spec(vocab=10, emb=3, hidden=4, layers=2, batch=1, bptt=1)
    assert throughput.flops_per_token(spec) == 2 * 16 * 7 + 2 * 16 * 8 + 2 * 4 * 10

    res = throughput.main([*common_flags, "--adaptive", "--no-memory", "--data-dir", data, "--modes", "train"])
    sides = {r["side"]: r for r in res["results"]}
    assert set(sides) == {"reference", "rnnkit", "rnnkit-adaptive"}
    assert sides["rnnkit-adaptive"]["vs_rnnkit_full"]["ratio"] > 0
    capsys.readouterr()

    # whole process: both command lines run in-process here (what can rot is the flags and the reference
    # script, not subprocess.run), with the exit status checked as run_timed checks it
    ran = []

    def run_in_process(argv: list[str]) -> float:
        if argv[1].endswith("reference.py"):
            monkeypatch.setattr(sys, "argv", argv[1:])
            runpy.run_path(argv[1], run_name="__main__")
        else:
            start = argv.index("lm")
            assert argv[:start] in ([str(Path(sys.executable).with_name("rnnkit"))], [sys.executable, "-m", "rnnkit"])
            assert cli_main(argv[start:]) == 0
        ran.append(Path(argv[1]).name if argv[1].endswith(".py") else "rnnkit")
        return 1.0

    monkeypatch.setattr(lm_process, "run_timed", run_in_process)
    res = lm_process.main([*common_flags, "--data-dir", data])
    assert sorted(ran) == ["reference.py", "rnnkit"]
    assert set(res["times"]) == {"reference", "rnnkit"} and res["ratio"]["ratio"] > 0
    assert last_json(capsys.readouterr().out)["ratio"] == res["ratio"]

    # generation: the naive loop samples the same tokens as rnnkit's carried state (greedy)
    res = generation.main([*common_flags, "--batches", "1", "3"])
    assert [r["batch"] for r in res["results"]] == [1, 3]
    assert all(r["carried_tokens_per_s"]["median"] > 0 for r in res["results"])
    model = generation.LanguageModel(generation.QUICK).eval()
    prompt = [1, 2, 3]
    naive = generation.naive_generate(model, prompt, 6, 2, generation.torch.Generator(), temperature=0)
    assert naive == generation.generate(model, prompt, 6, temperature=0, num_samples=2)
    capsys.readouterr()

    # quality: every part through the product's API, on tiny settings
    res = lm_quality.main([*common_flags, "--part", "char", "zaremba", "best", "adaptive", "--data-dir", data])
    out = last_json(capsys.readouterr().out)
    assert [r["part"] for r in out["results"]] == ["char", "zaremba", "best", "adaptive"]
    by_part = {r["part"]: r for r in res["results"]}
    assert math.isfinite(by_part["char"]["valid"]["loss"]) and by_part["char"]["planned_steps"] >= 1
    assert by_part["zaremba"]["settings"]["lr"] == 20.0 and by_part["zaremba"]["settings"]["clip"] == 0.25
    for part in ("zaremba", "best"):
        assert by_part[part]["test"]["perplexity"] > 1 and by_part[part]["steps"] >= 1
    assert by_part["adaptive"]["adaptive"]["settings"]["softmax"] == "adaptive"
    assert by_part["adaptive"]["test_ppl_ratio"] > 0


def test_cells_benchmark_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("common", "cells"):
        sys.modules.pop(name, None)
    import cells

    text = tmp_path / "shakespeare.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 60, encoding="utf-8")
    res = cells.main(["--quick", "--threads", "1", "--part", "throughput", "quality", "--data", str(text)])
    assert last_json(capsys.readouterr().out)["quality"] == json.loads(json.dumps(res["quality"]))
    rows = {r["layer"]: r for r in res["throughput"]}
    assert set(rows) == {"lstm-fused", "lstm-generic", "mingru", "minlstm"}
    assert {kind: r["engine"] for kind, r in rows.items()} == {
        "lstm-fused": "fused", "lstm-generic": "generic", "mingru": "parallel", "minlstm": "parallel"}
    assert all(r["tokens_per_s"]["median"] > 0 for r in rows.values())
    # equal parameters: each min layer is the multiple of 8 nearest the LSTM's count (LSTM 16: 8*16^2 + 8*16)
    assert rows["lstm-fused"]["params"] == 2176 and rows["mingru"]["hidden"] == 32 and rows["minlstm"]["hidden"] == 24
    assert cells.matched_hidden("mingru", None, 8 * 512**2 + 8 * 512) == 1024  # 2H'^2 + 2H' with H' = 2H
    quality = res["quality"]["results"]
    assert [r["layer"] for r in quality] == ["lstm-fused", "mingru", "minlstm"]
    assert all(math.isfinite(r["valid_loss"]) and r["steps"] >= 1 for r in quality)
    assert res["quality"]["data"] == str(text)
    with pytest.raises(SystemExit, match="Tiny Shakespeare text not found"):
        cells.main(["--quick", "--part", "quality", "--data", str(tmp_path / "missing.txt")])


def test_gpu_benchmark_runs_on_cpu_quick(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # the GPU script runs only where a GPU is lent (minutes of device time): its code paths are checked here
    # on CPU at tiny sizes, so that a break (say, in the engine internals it drives) shows before then
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu", None)
    import gpu

    gpu.main(["--device", "cpu", "--quick"])
    res = last_json(capsys.readouterr().out)
    assert res["device"] == "cpu" and res["quick"] is True
    assert res["exactness_max_abs"] < 1e-5  # rnnkit's LSTM with lengths equals torch.nn's packed run
    assert res["chunk_warnings"] == {f"dropout_hidden={p}": {"train": 0, "eval": 0} for p in (0.0, 0.5)}
    assert [r["side"] for r in res["results"]] == ["reference fp32", "rnnkit fp32", "rnnkit bf16"]
    assert all(r["tokens_per_s"] > 0 for r in res["results"])


def test_deployment_benchmark_scripts_quick(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("common", "inference", "serve_load"):
        sys.modules.pop(name, None)
    import inference
    import serve_load

    # inference: three sides timed step by step; the fp32 graph scores what eager scores
    res = inference.main(["--quick", "--threads", "1"])
    (r,) = res["results"]
    assert {s: v["steps"] for s, v in r["latency_ms"].items()} == {"eager": 20, "ort-fp32": 20, "ort-int8": 20}
    assert r["perplexity"]["ort-fp32"] == pytest.approx(r["perplexity"]["eager"], rel=1e-4)
    assert abs(r["int8_ppl_change"]) < 0.05
    assert last_json(capsys.readouterr().out)["results"][0]["model"] == "quick"

    # serve load: a real server per mode, every request answered 200, memory sampled
    res = serve_load.main(["--quick", "--threads", "1"])
    assert [(r["mode"], r["concurrency"]) for r in res["results"]] == [
        ("batched", 1), ("batched", 4), ("one-at-a-time", 1), ("one-at-a-time", 4)]
    for r in res["results"]:
        assert r["requests"] > 0 and r["errors"] == {} and r["rss_first_mib"] > 0
    assert last_json(capsys.readouterr().out)["endpoint"] == "/v1/tag"

def test_padding_layers_and_phases_quick(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The layers part of ``padding.py`` (four ways to run a layer) and ``phases.py`` (windows per task)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("common", "padding", "phases"):
        sys.modules.pop(name, None)
    import padding
    import phases

    res = padding.main(["--quick", "--threads", "1", "--task", "layers"])
    assert [r["layer"] for r in res["rows"]] == ["LSTM", "LSTM bi", "GRU", "GRU bi"]
    for row in res["rows"]:
        assert all(row[way]["median"] > 0 for way in ("plain", "all T", "variable", "torch packed"))
        assert row["all T / plain time"] == round(row["all T"]["median"] / row["plain"]["median"], 3)
    assert "packed / variable time" in capsys.readouterr().out

    res = phases.main(["--quick", "--threads", "1"])
    assert [r["task"] for r in res["results"]] == ["lm", "tag", "seq2seq", "classify"]
    for r in res["results"]:
        assert [w["step"] for w in r["windows"]] == [2, 4, 6]
        assert r["counted"] == 2 and r["median/slowest"] >= 1.0
    assert "median/slowest" in capsys.readouterr().out


def test_phases_summary_flags_a_collapse_and_marks_validation_windows(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("phases", None)
    import phases

    lines = [{"step": s, "split": "train", "tokens_per_s": rate}
             for s, rate in ((50, 100.0), (100, 7000.0), (150, 6800.0), (200, 6900.0), (250, 7100.0))]
    lines.insert(3, {"step": 150, "split": "valid", "loss": 1.0})
    lines.append({"step": 300, "split": "train", "tokens_per_s": 7200.0})
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = phases.windows(metrics)
    assert [r["eval"] for r in rows] == [False, False, False, True, False, False]
    # the engine leaves evaluation time out of tokens/s: a window holding one counts like the others
    assert phases.summary(rows, warmup=1) == {"counted": 5, "median": 7000.0, "slowest": 6800.0,
                                              "median/slowest": 1.03, "flag": False}
    rows[3]["tokens_per_s"] = 300.0  # a collapse
    assert phases.summary(rows, warmup=1)["flag"] is True


def test_classify_quality_quick(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import classify_quality

    res = classify_quality.main(["--quick", "--threads", "1", "--part", "sst2-lm", "trec"])
    assert last_json(capsys.readouterr().out)["test_accuracy"] == {k: r["test"]["accuracy"]
                                                                   for k, r in res["results"].items()}
    assert list(res["results"]) == ["sst2", "sst2-lm", "trec"]  # sst2-lm brings the from-scratch run along
    assert res["lm_gain"] == res["results"]["sst2-lm"]["test"]["accuracy"] - res["results"]["sst2"]["test"]["accuracy"]
    assert res["results"]["sst2-lm"]["settings"]["init_from"] == res["results"]["sst2-lm"]["lm"]["path"]
    assert sorted(res["results"]["trec"]["test"]["per_class"]) == ["DESC", "HUM", "LOC", "NUM"]
    assert res["results"]["sst2"]["test"]["examples"] == 20 and res["results"]["trec"]["dev"]["examples"] == 8
