"""Fault injection: kill -9 a tiny training run at random moments (seeded), most of them inside a checkpoint
write (``--save-every 1`` saves after every step), and resume it each time. Every resume must find a whole
``last`` checkpoint (its checksum verified) at or after the previous one's step, and the run must end."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from rnnkit.cli.main import main
from rnnkit.train import checkpoint as ck
from tests.test_lm_task import make_text
from tests.test_reliability import ENV, ROOT, TINY

KILLS = 4


def logged_steps(run: Path) -> int:
    """The highest training step in metrics.jsonl (0 when none yet)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return max(steps, default=0)


def test_kill_9_at_random_moments_then_resume(tmp_path):
    rng = random.Random(18)
    train = tmp_path / "train.txt"
    train.write_text(make_text(200, 1))
    run = tmp_path / "run"
    flags = ["--epochs", "100000", "--save-every", "1", "--log-every", "1"]
    command = ["lm", "train", "--train", str(train), "--out", str(run), *TINY, *flags]
    previous = 0
    for i in range(KILLS):
        argv = command if i == 0 else ["lm", "train", "--resume", str(run), "--no-progress", "--sample-length", "0"]
        proc = subprocess.Popen([sys.executable, "-m", "rnnkit", *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
        deadline = time.time() + 60
        while logged_steps(run) <= previous + 2:  # this process has trained (and saved) a few steps
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "training made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        ckpt = ck.load_checkpoint(run / "last.safetensors", task="lm")  # whole: its checksum verified
        step = ckpt.meta["state"]["step"]
        assert step >= previous + 2, (step, previous)
        previous = step
    assert main(["lm", "train", "--resume", str(run), "--max-steps", str(previous + 3), "--no-progress",
                 "--sample-length", "0"]) == 0
    assert ck.load_checkpoint(run / "last.safetensors").meta["state"]["step"] == previous + 3
