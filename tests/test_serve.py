"""`rnnkit serve`: a real server on 127.0.0.1 in a subprocess, answers equal to the Python API, dynamic
batching, overload (503), bad requests (413/422/404), server-sent events, clean shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from rnnkit.tasks import lm, seq2seq, tag
from tests.test_lm_task import make_text
from tests.test_seq2seq_task import reverse_pairs, write_tsv
from tests.test_tag_task import ner_sentences, write_columns

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "lm.txt").write_text(make_text(200, 1))
    lm_run = lm.train(out=str(tmp / "lm"), train=str(tmp / "lm.txt"), level="char", max_steps=3, hidden=16, emb=8,
                      batch_size=4, bptt=12, time_budget=None, threads=1, progress=False, seed=3)
    write_columns(tmp / "ner.txt", ner_sentences(60, 3))
    tag_run = tag.train(out=str(tmp / "ner"), train=str(tmp / "ner.txt"), max_steps=4, progress=False, emb=16,
                        char_emb=8, char_hidden=8, hidden=16, batch_size=8, threads=1, time_budget=None, eval_every=0,
                        seed=3, crf=True)
    write_tsv(tmp / "pairs.tsv", reverse_pairs(200, 1))
    mt_run = seq2seq.train(out=str(tmp / "mt"), train=str(tmp / "pairs.tsv"), max_steps=20, progress=False, emb=16,
                           enc_hidden=16, hidden=32, batch_size=16, time_budget=None, threads=1, dropout=0.0, seed=3)
    return {"lm": lm_run, "tag": tag_run, "seq2seq": mt_run}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(run_dirs, *flags, stop=True):
    """A running ``rnnkit serve`` (waits up to 60 s for /health); SIGTERM at the end."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", *map(str, run_dirs), "--port", str(port),
                             *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("server did not start within 60 s")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sse_text(base, body) -> str:
    pieces = []
    with httpx.stream("POST", f"{base}/v1/generate", json={**body, "stream": True}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                if line == "data: [DONE]":
                    return "".join(pieces)
                pieces.append(json.loads(line[6:])["text"])
    raise AssertionError("stream ended without [DONE]")


def test_endpoints_equal_the_python_api_and_bad_requests_are_refused(runs):
    lm_run, tag_run, mt_run = runs["lm"], runs["tag"], runs["seq2seq"]
    with server([r.path for r in runs.values()], "--max-input", "300", "--max-body", "4000") as (base, proc):
        c = httpx.Client(base_url=base, timeout=30)
        models = c.get("/v1/models").json()["models"]
        assert [(m["name"], m["task"]) for m in models] == [("lm", "lm"), ("ner", "tag"), ("mt", "seq2seq")]
        texts = ["the cat sat\n", make_text(2, 5)]
        r = c.post("/v1/score", json={"texts": texts}).json()
        assert r["log_likelihoods"] == pytest.approx([lm_run.score(t)[0] for t in texts], rel=1e-6)
        for body in ({"prompt": "the dog", "length": 20, "temperature": 0}, {"prompt": "a", "length": 15, "seed": 4}):
            want = lm_run.generate(body["prompt"], body["length"], temperature=body.get("temperature", 1.0),
                                   seed=body.get("seed"))[0]
            assert c.post("/v1/generate", json=body).json()["text"] == want
            assert sse_text(base, body) == want
        sentences = [["John", "went", "to", "Rome", "."], ["Mary", "flew", "to", "New", "York", "."]]
        assert c.post("/v1/tag", json={"sentences": sentences, "model": "ner"}).json()["tags"] == \
            tag_run.predict(sentences)
        sources = [s for s, _ in reverse_pairs(4, 8)]
        for beam in (1, 3):
            got = c.post("/v1/translate", json={"sentences": sources, "beam": beam}).json()["translations"]
            assert got == mt_run.translate(sources, beam=beam)
        assert set(c.get("/openapi.json").json()["paths"]) >= {"/v1/generate", "/v1/score", "/v1/tag",
                                                                "/v1/translate", "/health", "/v1/models"}
        assert c.get("/docs").status_code == 200

        # bad requests: clear answers, and the server stays up
        r = c.post("/v1/tag", content=b'{"sentences": [["a"]', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "JSON" in json.dumps(r.json()["detail"])
        r = c.post("/v1/translate", json={"beam": 2})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "sentences"]
        r = c.post("/v1/generate", json={"prompt": "x", "length": -1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "length"]
        r = c.post("/v1/generate", json={"prompt": "x", "length": 5000})
        assert r.status_code == 422 and r.json()["detail"] == "field 'length': at most 1000, got 5000"
        r = c.post("/v1/score", json={"texts": ["a" * 301]})
        assert r.status_code == 422 and r.json()["detail"] == "input too long: 301 characters, the limit is 300"
        r = c.post("/v1/score", json={"texts": ["a" * 100] * 50})
        assert r.status_code == 413 and "request body too large" in r.json()["detail"]
        r = c.post("/v1/score", content=iter([b'{"texts": ["a"]}']), headers={"content-type": "application/json"})
        assert r.status_code == 411  # chunked: no length to check before reading
        r = c.post("/v1/tag", json={"sentences": [["a"]], "model": "nope"})
        assert r.status_code == 404 and r.json()["detail"] == "field 'model': no tag run named 'nope'; loaded: ner"
        assert c.post("/v1/classify", json={"texts": ["a"]}).status_code == 404
        assert c.get("/health").json()["status"] == "ok"
        assert proc.poll() is None


def test_classify_endpoint_equals_the_python_api(tmp_path):
    import random

    from rnnkit.tasks import classify
    from tests.test_classify_task import texts
    from tests.test_classify_task import write_tsv as write_texts

    data = write_texts(tmp_path / "t.tsv", texts(random.Random(5), 40))
    run = classify.train(out=str(tmp_path / "genre"), train=str(data), text_column="text", label_column="label",
                         max_steps=3, emb=8, hidden=8, batch_size=8, threads=1, time_budget=None, progress=False)
    sample = ["the film was good", "bad", "a very fine plot"]
    with server([run.path]) as (base, proc):
        c = httpx.Client(base_url=base, timeout=30)
        assert c.post("/v1/classify", json={"texts": sample}).json()["predictions"] == run.predict(sample)
        got = c.post("/v1/classify", json={"texts": sample, "top_k": 2}).json()["predictions"]
        want = run.predict(sample, top_k=2)
        assert [[lab for lab, _ in row] for row in got] == [[lab for lab, _ in row] for row in want]
        assert [p for row in got for _, p in row] == pytest.approx([p for row in want for _, p in row], abs=1e-6)
        r = c.post("/v1/classify", json={"texts": ["good", "  "]})
        assert r.status_code == 422 and "text 1 is empty" in r.json()["detail"][0]["msg"]
        r = c.post("/v1/classify", json={"texts": ["good"], "top_k": 9})
        assert r.status_code == 422 and r.json()["detail"] == "field 'top_k': must be in 1..3 (the number of " \
            "classes), got 9"
        assert proc.poll() is None


def test_concurrent_requests_are_batched_and_equal_unbatched(runs):
    tag_run = runs["tag"]
    sentences = [tokens for tokens, _ in ner_sentences(16, 5)]
    with server([tag_run.path], "--max-wait-ms", "200", "--max-batch", "8") as (base, _):
        def one(s):
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post("/v1/tag", json={"sentences": [s]}).json()["tags"][0]

        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(one, sentences))
        stats = httpx.get(f"{base}/health").json()["batching"]["ner /v1/tag"]
    assert got == [tag_run.predict([s])[0] for s in sentences]
    assert stats["requests"] == 16 and stats["batches"] < 16 and 1 < stats["largest"] <= 8


def test_overload_answers_503_with_retry_after(runs):
    with server([runs["lm"].path], "--max-queue", "1", "--max-batch", "1", "--max-wait-ms", "0") as (base, _):
        def one(i):
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/generate", json={"prompt": "the", "length": 400, "seed": i})

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(one, range(24)))
        codes = [a.status_code for a in answers]
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "queue is full" in busy.json()["detail"]
        assert httpx.get(f"{base}/health").status_code == 200


def test_sigterm_shuts_down_cleanly(runs):
    with server([runs["lm"].path]) as (base, proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_cli_refuses_bad_settings_and_runs(tmp_path, capsys):
    from rnnkit.cli.main import main

    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert capsys.readouterr().err == "rnnkit: error: --max-batch: must be >= 1, got 0\n"
    assert main(["serve", str(tmp_path / "none")]) == 2
    assert "none/config.json: cannot read the run's task" in capsys.readouterr().err
