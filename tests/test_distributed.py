"""Training under torch.distributed (gloo on CPU, 2 processes): same result as one process, disjoint shards,
exact resume, and padded batches with unequal real-token counts per rank."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rnnkit.errors import TrainingInterrupted
from rnnkit.tasks import lm
from rnnkit.train import checkpoint as ck
from rnnkit.train import distributed as dist
from rnnkit.train.config import TrainConfig
from rnnkit.train.engine import StepResult, Task, Trainer
from tests.test_lm_task import make_text

WORLD = 2
_original_train_loss = lm.LMTask.train_loss


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, fn_name: str, kwargs: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        globals()[fn_name](rank=rank, **kwargs)
    finally:
        dist.cleanup()


def spawn(fn_name: str, **kwargs) -> None:
    mp.spawn(_worker, args=(free_port(), fn_name, kwargs), nprocs=WORLD, join=True)


# --- language model -----------------------------------------------------------------------------------

def lm_settings(tmp: Path, **kw) -> dict:
    base = dict(train=str(tmp / "train.txt"), level="word", hidden=16, emb=8, layers=2, batch_size=4, bptt=6,
                dropout=0.0, optimizer="sgd", lr=0.5, log_every=2, time_budget=None, threads=1, seed=7,
                epochs=20, device="cpu")
    base.update(kw)
    return base


def record_batches(task_cls: type, path: Path, content) -> None:  # noqa: ANN001
    """Make ``task_cls.train_loss`` save what each step trains on, ``content(task, batch)``, to ``path``
    (a list with one entry per step), for the rest of this process."""
    seen: list = []
    original = task_cls.train_loss

    def recording(self, model, batch, carry):
        seen.append(content(self, batch))
        torch.save(seen, path)
        return original(self, model, batch, carry)

    task_cls.train_loss = recording


@contextmanager
def recording_batches(task_cls: type, path: Path, content):  # noqa: ANN001, ANN201
    """:func:`record_batches` inside a ``with`` block; ``task_cls.train_loss`` is restored after it."""
    original = task_cls.train_loss
    record_batches(task_cls, path, content)
    try:
        yield
    finally:
        task_cls.train_loss = original


def assert_shards_cover_batches(folder: Path, steps: int) -> None:
    """Check ``seen_single.pt`` (one process) against ``seen0.pt`` and ``seen1.pt`` (two ranks), each a list per
    step of the sequences trained on (hashable items): per step the ranks hold two halves of the one-process
    batch, together every sequence of it exactly once (a rank training on the whole batch counts it twice)."""
    single, rank0, rank1 = (torch.load(folder / name) for name in ("seen_single.pt", "seen0.pt", "seen1.pt"))
    assert len(single) == len(rank0) == len(rank1) == steps
    for full, a, b in zip(single, rank0, rank1):
        assert len(a) == len(b) == len(full) // WORLD > 0
        assert Counter(a) + Counter(b) == Counter(full)


def _record_tokens(path: Path) -> None:
    """Make LMTask.train_loss append every batch's inputs to ``path`` (one tensor per step)."""
    record_batches(lm.LMTask, path, lambda task, batch: batch.x.clone())


def lm_train(rank: int, tmp: str, out: str, steps: int, record: bool = False, **kw) -> None:
    tmp_path = Path(tmp)
    if record:
        _record_tokens(tmp_path / f"tokens{rank}.pt")
    lm.train(out=str(tmp_path / out), max_steps=steps, progress=False, **lm_settings(tmp_path, **kw))


def lm_resume(rank: int, tmp: str, out: str, steps: int) -> None:
    _record_tokens(Path(tmp) / f"resumed{rank}.pt")
    lm.resume(Path(tmp) / out, max_steps=steps, progress=False)


def model_tensors(run: Path) -> dict[str, torch.Tensor]:
    return ck.load_checkpoint(run / "last.safetensors", task="lm").group("model")


@pytest.fixture
def text(tmp_path):
    (tmp_path / "train.txt").write_text(make_text(200, 1))
    (tmp_path / "valid.txt").write_text(make_text(30, 2))
    return tmp_path


def test_two_processes_equal_one_process_and_shards_are_disjoint(text):
    steps = 6
    _record_tokens(text / "tokens_single.pt")
    try:
        lm.train(out=str(text / "single"), max_steps=steps, progress=False, **lm_settings(text))
    finally:
        lm.LMTask.train_loss = _original_train_loss
    spawn("lm_train", tmp=str(text), out="ddp", steps=steps, record=True)
    single, ddp = model_tensors(text / "single"), model_tensors(text / "ddp")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], atol=1e-5, rtol=0, msg=k)
    # (2) the token ids each rank trained on are disjoint shards that together make the one-process batch
    one = torch.load(text / "tokens_single.pt")
    r0, r1 = torch.load(text / "tokens0.pt"), torch.load(text / "tokens1.pt")
    assert len(one) == len(r0) == len(r1) == steps
    for full, a, b in zip(one, r0, r1):
        assert a.shape[0] == b.shape[0] == full.shape[0] // WORLD
        assert torch.equal(torch.cat([a, b]), full)
        assert not torch.equal(a, b)


def test_distributed_resume_is_exact(text):
    kw = dict(dropout=0.3, valid=str(text / "valid.txt"), eval_every=3, optimizer="adam", lr=0.01)
    spawn("lm_train", tmp=str(text), out="straight", steps=8, record=True, **kw)
    spawn("lm_train", tmp=str(text), out="split", steps=4, **kw)
    spawn("lm_resume", tmp=str(text), out="split", steps=8)
    a, b = model_tensors(text / "straight"), model_tensors(text / "split")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = ck.load_checkpoint(text / "split" / "last.safetensors", task="lm").meta
    assert meta["world_size"] == WORLD and meta["state"]["step"] == 8
    # the resumed processes ran steps 5..8 only, on the batches the straight run used at those steps
    for rank in range(WORLD):
        straight, resumed = torch.load(text / f"tokens{rank}.pt"), torch.load(text / f"resumed{rank}.pt")
        assert len(straight) == 8 and len(resumed) == 4
        for x, y in zip(straight[4:], resumed):
            assert torch.equal(x, y)
    with pytest.raises(Exception, match="written by 2 process"):
        lm.resume(text / "split", max_steps=10, progress=False)


def lm_sigterm(rank: int, tmp: str) -> None:
    """Rank 1 alone gets SIGTERM during step 3; record what each rank's train raises."""
    if rank == 1:
        calls = []

        def train_loss(self, model, batch, carry):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return _original_train_loss(self, model, batch, carry)

        lm.LMTask.train_loss = train_loss
    try:
        lm.train(out=str(Path(tmp) / "run"), max_steps=50, progress=False, save_every="0", **lm_settings(Path(tmp)))
    except TrainingInterrupted as e:
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps({"exit_code": e.exit_code, "message": str(e)}))


def test_sigterm_under_torchrun_stops_every_rank_after_saving(text):
    spawn("lm_sigterm", tmp=str(text))
    codes = [json.loads((text / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert codes[0] == {"exit_code": 143, "message": f"interrupted; resume with: rnnkit lm train --resume "
                                                     f"{text / 'run'}"}
    assert codes[1] == {"exit_code": 143, "message": ""}  # only rank 0 speaks
    meta = ck.load_checkpoint(text / "run" / "last.safetensors", task="lm").meta
    assert meta["state"]["step"] == 3 and meta["world_size"] == WORLD


# --- a padded task with unequal real-token counts per rank ---------------------------------------------

@dataclass(frozen=True)
class ToyConfig(TrainConfig):
    pass


class ToyPaddedTask(Task):
    """Fixed padded batches of 4 sequences; rank r gets sequences 2r, 2r+1 (their lengths differ a lot)."""

    name = "toy"
    has_valid = False
    selects_on = ("loss", "min")
    ddp_find_unused_parameters = False

    def __init__(self, info: dist.DistInfo) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(5, 4, 7, 3, generator=g)  # (steps, B, T, F)
        self.y = torch.randn(5, 4, 7, 2, generator=g)
        self.lengths = torch.tensor([7, 6, 1, 2])  # rank 0: 13 real tokens, rank 1: 3
        self.rows = dist.shard(4, info, "batch_size")

    def batches_per_epoch(self) -> int:
        return 5

    def train_batches(self, epoch: int, start: int):
        yield from range(start, 5)

    def train_loss(self, model, batch, carry):
        x, y, n = self.x[batch, self.rows], self.y[batch, self.rows], self.lengths[self.rows]
        out, _ = model(x, lengths=n)
        mask = torch.arange(7)[None, :] < n[:, None]  # (B, T)
        loss_sum = ((out - y) ** 2).sum(-1)[mask].sum()
        return StepResult(loss_sum, int(n.sum()))


def toy_model() -> torch.nn.Module:
    from rnnkit.nn import GRU

    torch.manual_seed(3)
    return GRU(3, 2, batch_first=True)


def toy_train(rank: int, out: str) -> None:
    info, device = dist.setup("cpu")
    model = toy_model()
    cfg = ToyConfig(optimizer="sgd", lr=0.3, epochs=1, clip=0.0, log_every=1, time_budget=None)
    Path(out).mkdir(exist_ok=True)
    Trainer(model, ToyPaddedTask(info), cfg, Path(out), {"task": "toy"}, device, progress=False,
            dist_info=info).fit()


def test_padded_task_with_unequal_tokens_matches_one_process(tmp_path):
    toy_train(0, str(tmp_path / "single"))
    spawn("toy_train", out=str(tmp_path / "ddp"))
    a = ck.load_checkpoint(tmp_path / "single" / "last.safetensors").group("model")
    b = ck.load_checkpoint(tmp_path / "ddp" / "last.safetensors").group("model")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
