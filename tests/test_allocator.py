"""Training makes glibc reuse freed large blocks (rnnkit.train.driver.keep_freed_blocks): page faults counted."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

from rnnkit.tasks import tag
from rnnkit.train import driver
from tests.test_tag_task import pos_sentences, small, write_conllu

# In a fresh process: the minor page faults of allocating, filling and freeing a 64 MiB tensor 8 times, with
# glibc's defaults and then after keep_freed_blocks().
SCRIPT = """
import json, resource, torch
from rnnkit.train.driver import keep_freed_blocks

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        block = torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
applied = keep_freed_blocks()
print(json.dumps({"default": default, "applied": applied, "kept": faults()}))
"""


def test_keep_freed_blocks_stops_refaulting_a_freed_block():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    got = json.loads(result.stdout)
    pages = 8 * 16 * 2**20 * 4 // 4096  # 8 fills of 16,384 pages of 4 KiB
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert got["applied"] is glibc
    if glibc:
        assert got["default"] > 0.9 * pages  # every fill faults its block in afresh
        assert got["kept"] < 0.5 * pages  # faulted in once or twice (measured: 2), then reused


def test_training_and_resuming_keep_freed_blocks(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "keep_freed_blocks", lambda: calls.append(1) or True)
    train = tmp_path / "train.conllu"
    write_conllu(train, pos_sentences(40, seed=0))
    run = tag.train(out=str(tmp_path / "run"), train=str(train), max_steps=2, progress=False, **small())
    assert len(calls) == 1
    tag.resume(run.path, max_steps=3, progress=False)
    assert len(calls) == 2
