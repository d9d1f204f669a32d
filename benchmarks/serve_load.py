"""Load test of ``rnnkit serve``: requests/s and latency with and without dynamic batching, memory over time.

For each mode, a fresh ``rnnkit serve RUN`` process on 127.0.0.1:

* ``batched``: ``--max-batch 64 --max-wait-ms 5`` (concurrent requests run as one batch);
* ``one-at-a-time``: ``--max-batch 1 --max-wait-ms 0``;

and for each ``--concurrency`` level, that many clients (one asyncio task and one keep-alive connection each,
a minimal HTTP/1.1 client: see :class:`Connection`) send ``--endpoint`` requests back to back for
``--seconds``. We report requests/s, p50 and p99 latency, the
non-200 answers (there should be none below the queue limit), and the server's resident memory (VmRSS,
sampled every ``--rss-every`` s) averaged over the first and the last ``--rss-window`` seconds of each
level, with their ratio (target: within 10%).

The default body tags one sentence (``/v1/tag``); ``--endpoint /v1/classify --body '{"texts": ["..."]}'``
measures another endpoint. ``--run`` is required except with ``--quick``, which trains a tiny tagger.

    python benchmarks/serve_load.py --run runs/ud-tagger                     # 60 s per level and mode
    python benchmarks/serve_load.py --quick                                  # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODES = {"batched": ["--max-batch", "64", "--max-wait-ms", "5"],
         "one-at-a-time": ["--max-batch", "1", "--max-wait-ms", "0"]}
DEFAULT_BODY = {"sentences": [["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "."]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux ``/proc/PID/status``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(run: str, flags: list[str], threads: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(common.REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", run, "--port", str(port), *flags,
                             "--max-queue", "1024"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rnnkit serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("rnnkit serve did not answer /health within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs the same JSON body again and again.

    A minimal client on asyncio streams (a request line, three headers; the answer's status and
    Content-Length body): the load generator shares the 2 cores with the server, and a full client library's
    per-request work would be measured as the server's. Every answer of ``rnnkit serve`` (uvicorn) carries a
    Content-Length."""

    def __init__(self, host: str, port: int, endpoint: str, body: bytes) -> None:
        self.host, self.port = host, port
        self.request = (f"POST {endpoint} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self) -> int:
        """Send the request, read the whole answer; its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        status = await self.reader.readline()
        if not status:
            raise ConnectionError("the server closed the connection")
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.close()
        return int(status.split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(base: str, endpoint: str, body: dict, concurrency: int, seconds: float, pid: int,
               rss_every: float) -> dict[str, Any]:
    """``concurrency`` clients (one connection each) sending back to back for ``seconds``; latencies, errors
    (by status code or exception name), RSS samples."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    stop = t0 + seconds

    async def client() -> None:
        conn = Connection(host, int(port), endpoint, payload)
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    code = str(await conn.post())
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                    code = type(e).__name__
                    conn.close()
                if code == "200":
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[code] = errors.get(code, 0) + 1
        finally:
            conn.close()

    async def sample_rss() -> None:
        while time.perf_counter() < stop:
            rss.append((time.perf_counter() - t0, rss_mib(pid)))
            await asyncio.sleep(rss_every)

    await asyncio.gather(sample_rss(), *(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"latencies": latencies, "errors": errors, "rss": rss, "elapsed": elapsed}


def summarize(raw: dict[str, Any], seconds: float, window: float) -> dict[str, Any]:
    lat = raw["latencies"]
    first = [m for t, m in raw["rss"] if t <= window]
    last = [m for t, m in raw["rss"] if t >= seconds - window]
    rss_first = statistics.mean(first) if first else float("nan")
    rss_last = statistics.mean(last) if last else float("nan")
    return {"requests": len(lat), "requests_per_s": len(lat) / raw["elapsed"],
            "p50_ms": 1e3 * float(np.percentile(lat, 50)) if lat else None,
            "p99_ms": 1e3 * float(np.percentile(lat, 99)) if lat else None, "errors": raw["errors"],
            "rss_first_mib": rss_first, "rss_last_mib": rss_last, "rss_ratio": rss_last / rss_first}


def tiny_tagger(folder: Path) -> str:
    """A tagger trained for a few steps on generated sentences (for ``--quick``)."""
    import random

    from rnnkit.tasks import tag

    rng = random.Random(0)
    words = {"DET": ["the", "a"], "NOUN": ["cat", "dog", "fox"], "VERB": ["sat", "ran"], "PUNCT": ["."]}
    lines = []
    for _ in range(60):
        for t in ("DET", "NOUN", "VERB", "PUNCT"):
            lines.append(f"{rng.choice(words[t])} {t}")
        lines.append("")
    data = folder / "train.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = tag.train(out=str(folder / "tagger"), train=str(data), max_steps=2, progress=False, emb=8, char_emb=4,
                    char_hidden=4, hidden=8, batch_size=8, threads=1, time_budget=None, eval_every=0)
    return str(run.path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run folder to serve (required unless --quick)")
    p.add_argument("--endpoint", default="/v1/tag", help="POST endpoint (default /v1/tag)")
    p.add_argument("--body", help="JSON request body (default: one 10-word sentence to tag)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64], help="clients (default 1 8 64)")
    p.add_argument("--seconds", type=float, default=60.0, help="per level and mode (default 60)")
    p.add_argument("--rss-every", type=float, default=1.0, help="memory sampling period, s (default 1)")
    p.add_argument("--rss-window", type=float, default=10.0, help="first/last seconds compared (default 10)")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: a tiny tagger, 1 s per level")
    args = p.parse_args(argv)
    if not args.run and not args.quick:
        p.error("--run is required (or --quick)")
    if min(args.concurrency) < 1 or args.seconds <= 0:
        p.error("--concurrency must be >= 1 and --seconds > 0")
    body = json.loads(args.body) if args.body else DEFAULT_BODY
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.run = tiny_tagger(Path(tmp))
            args.concurrency, args.seconds, args.rss_every, args.rss_window = [1, 4], 1.0, 0.2, 0.4
        info = common.machine_info("cpu", args.threads)
        print(f"rnnkit serve {args.run} {args.endpoint}, {args.seconds:g} s per level, {info['date']}")
        results = []
        for mode in args.modes:
            proc, base = start_server(args.run, MODES[mode], args.threads)
            try:
                for c in args.concurrency:
                    raw = asyncio.run(load(base, args.endpoint, body, c, args.seconds, proc.pid, args.rss_every))
                    results.append({"mode": mode, "concurrency": c, **summarize(raw, args.seconds, args.rss_window)})
            finally:
                stop_server(proc)
    rows = [{"mode": r["mode"], "clients": r["concurrency"], "req/s": round(r["requests_per_s"], 1),
             "p50 ms": r["p50_ms"] and round(r["p50_ms"], 1), "p99 ms": r["p99_ms"] and round(r["p99_ms"], 1),
             "errors": sum(r["errors"].values()), "rss first": round(r["rss_first_mib"], 1),
             "rss last": round(r["rss_last_mib"], 1)} for r in results]
    print()
    common.print_table(rows, list(rows[0]))
    out = {"benchmark": "serve load", "machine": info, "quick": args.quick, "endpoint": args.endpoint,
           "seconds": args.seconds, "results": results}
    common.print_json(out)
    return out


if __name__ == "__main__":
    main()
