"""Never losing work (issue 18): periodic saves, signals and exit codes, --overwrite that keeps the old run
until the new one has a checkpoint, the run-folder lock, data hashes, absolute data paths, 'best' unchanged
by stopping and resuming, full disks, impossible --out, out of memory, non-finite validation, checksums."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import rnnkit.tasks.lm as lm
from rnnkit.cli.main import build_parser, main
from rnnkit.errors import CheckpointError
from rnnkit.train import checkpoint as ck
from rnnkit.train.config import TrainConfig, build_config
from rnnkit.train.engine import StepResult, Task, Trainer
from tests import test_cli_lm
from tests.test_cli_lm import run_cli as cli
from tests.test_lm_task import make_text
from tests.test_tag_task import pos_sentences, write_conllu

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "16", "--emb", "8", "--layers", "1", "--batch-size", "4", "--bptt", "8", "--threads", "1",
        "--no-progress", "--time-budget", "none", "--sample-length", "0"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
files = test_cli_lm.files  # the fixture: a small training and validation text


def one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in err, err
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def step_of(path: Path) -> int:
    return ck.load_checkpoint(path).meta["state"]["step"]


def run_files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != ".lock"}


def start_training(train: Path, run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rnnkit", "lm", "train", "--train", str(train), "--out", str(run),
                             "--epochs", "100000", *TINY, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=ROOT)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# --- periodic saves ---------------------------------------------------------------------------------------

def test_save_every_is_a_documented_setting_with_a_default():
    assert lm.make_config().save_every == "10m"
    help_text = build_parser()._subparsers._group_actions[0].choices["lm"]._subparsers._group_actions[0] \
        .choices["train"].format_help()
    assert "--save-every" in " ".join(help_text.split()) and "(default: 10m)" in " ".join(help_text.split())
    assert build_config(lm.LMConfig, {"save_every": 500}).save_every == "500"  # an integer in a config file
    for bad in ("-3", "ten", "5x", "0m"):
        with pytest.raises(Exception, match="field 'save_every'"):
            build_config(lm.LMConfig, {"save_every": bad})


def test_run_without_validation_killed_by_sigkill_resumes_from_its_periodic_checkpoint(tmp_path, files):
    train, _ = files
    run = tmp_path / "run"
    proc = start_training(train, run, "--save-every", "5", "--log-every", "1")
    wait_for(run / "last.safetensors", proc)
    time.sleep(0.3)
    proc.kill()  # kill -9: no handler runs
    proc.communicate()
    step = step_of(run / "last.safetensors")
    assert step > 0 and step % 5 == 0
    assert main(["lm", "train", "--resume", str(run), "--max-steps", str(step + 3), "--sample-length", "0",
                 "--no-progress"]) == 0
    assert step_of(run / "last.safetensors") == step + 3


def test_save_every_duration_saves_by_time(tmp_path, files, monkeypatch):
    train, _ = files
    clock = iter(range(0, 10**6, 7))  # every reading of the clock is 7 s later
    monkeypatch.setattr("rnnkit.train.engine.time.perf_counter", lambda: float(next(clock)))
    saved = []
    original = Trainer.save

    def save(self, name, *a, **k):
        saved.append((name, self.state.step))
        return original(self, name, *a, **k)

    monkeypatch.setattr(Trainer, "save", save)
    lm.train(train=str(train), out=str(tmp_path / "r"), max_steps=6, save_every="10s", progress=False, hidden=16,
             emb=8, layers=1, batch_size=4, bptt=8, time_budget=None)
    # the clock passes 10 s between two steps at every other step: 'last' saved before steps 2, 4, ...
    periodic = [step for name, step in saved[:-1] if name == "last"]
    assert periodic and all(b - a <= 2 for a, b in zip([0, *periodic], periodic)), saved
    assert saved[-1] == ("last", 6)


# --- --overwrite keeps the old run until the new one has a checkpoint ----------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--init-range", "-1"], "field 'init_range': must be > 0, got -1.0"),
    (["--optimizer", "sgd", "--momentum", "-1"], "field 'momentum': must be >= 0, got -1.0"),
    (["--weight-decay", "-1"], "field 'weight_decay': must be >= 0, got -1.0"),
    (["--hidden", "3000000"], "the model does not fit in memory on cpu"),
])
def test_failed_overwrite_keeps_the_old_run(tmp_path, files, capsys, flags, message):
    train, _ = files
    run = tmp_path / "run"
    assert cli(capsys, "lm", "train", "--train", train, "--out", run, "--max-steps", "3", *TINY)[0] == 0
    before = run_files(run)
    code, _, err = cli(capsys, "lm", "train", "--train", train, "--out", run, "--max-steps", "3", "--overwrite",
                       *TINY, *flags)
    one_line_error(code, err, message)
    assert run_files(run) == before and not (run / ".rnnkit-new").exists()


def test_overwrite_with_nan_word_vectors_keeps_the_old_run(tmp_path, capsys):
    train = tmp_path / "train.conllu"
    write_conllu(train, pos_sentences(40, 1))
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("the nan 0.1 0.2 0.3\ncat 0.1 0.2 0.3 0.4\n")
    run = tmp_path / "run"
    tiny = ["--emb", "4", "--char-emb", "4", "--char-hidden", "4", "--hidden", "8", "--batch-size", "8",
            "--threads", "1", "--no-progress", "--time-budget", "none", "--max-steps", "2"]
    assert cli(capsys, "tag", "train", "--train", train, "--out", run, *tiny)[0] == 0
    before = run_files(run)
    code, _, err = cli(capsys, "tag", "train", "--train", train, "--out", run, "--overwrite", "--word-vectors",
                       vectors, *tiny)
    # (the message is another test's: the word-vector reader's, or the non-finite first step's)
    assert code == 2 and err.splitlines()[-1].startswith("rnnkit: error: ") and "Traceback" not in err, err
    assert run_files(run) == before and not (run / ".rnnkit-new").exists()


def test_overwrite_replaces_the_old_run_only_once_the_new_one_has_a_checkpoint(tmp_path, files, monkeypatch):
    train, valid = files
    run = tmp_path / "run"
    lm.train(train=str(train), valid=str(valid), out=str(run), max_steps=4, eval_every=2, progress=False, hidden=16,
             emb=8, layers=1, batch_size=4, bptt=8, time_budget=None)
    before = run_files(run)
    seen = []
    original = Trainer.save

    def save(self, name, *a, **k):  # what the run folder holds when the new run writes its checkpoints
        seen.append((name, run_files(run) == before, self.run_dir == run))
        return original(self, name, *a, **k)

    monkeypatch.setattr(Trainer, "save", save)
    lm.train(train=str(train), out=str(run), max_steps=5, save_every="2", overwrite=True, progress=False,
             hidden=16, emb=8, layers=1, batch_size=4, bptt=8, time_budget=None)
    assert seen[0] == ("last", True, False)  # the first checkpoint goes to the staging folder: old run whole
    assert all(not old and final for _, old, final in seen[1:])  # then the new run is in place
    after = run_files(run)
    assert "best.safetensors" in after and after["best.safetensors"] != before["best.safetensors"]
    assert step_of(run / "last.safetensors") == 5 and not (run / ".rnnkit-new").exists()
    assert json.loads(after["config.json"])["valid"] is None


# --- the run-folder lock ----------------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import fcntl, sys, time
    f = open(sys.argv[1], "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    f.seek(0); f.truncate(); f.write("process 4242 on otherhost (rnnkit lm train)"); f.flush()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_writer_is_refused_while_readers_keep_working(tmp_path, files, capsys):
    train, valid = files
    run = tmp_path / "run"
    assert cli(capsys, "lm", "train", "--train", train, "--valid", valid, "--out", run, "--max-steps", "3",
               *TINY)[0] == 0
    before = run_files(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = "in use by process 4242 on otherhost (rnnkit lm train); wait for it to finish or stop it"
        code, _, err = cli(capsys, "lm", "train", "--resume", run, "--max-steps", "5", "--sample-length", "0",
                           "--no-progress")
        one_line_error(code, err, message)
        code, _, err = cli(capsys, "lm", "train", "--train", train, "--out", run, "--overwrite", "--max-steps", "2",
                           *TINY)
        one_line_error(code, err, message)
        assert run_files(run) == before
        # readers take no lock
        assert cli(capsys, "lm", "evaluate", run, "--json")[0] == 0
        code, out, _ = cli(capsys, "lm", "generate", run, "--length", "5", "--seed", "1")
        assert code == 0 and out
        assert lm.load(run).checkpoint == "best"
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed: no clean-up ran): its lock does not block
    code, _, err = cli(capsys, "lm", "train", "--resume", run, "--max-steps", "5", "--sample-length", "0",
                       "--no-progress")
    assert code == 0, err


# --- resuming: data hashes, paths from another working directory ------------------------------------------

def test_resume_refuses_changed_training_data(tmp_path, files, capsys):
    train, valid = files
    run = tmp_path / "run"
    assert cli(capsys, "lm", "train", "--train", train, "--valid", valid, "--out", run, "--max-steps", "3",
               *TINY)[0] == 0
    saved = json.loads((run / "config.json").read_text())["data_sha256"]
    assert set(saved) == {"train", "valid"}
    train.write_text(make_text(200, 5))
    code, _, err = cli(capsys, "lm", "train", "--resume", run, "--max-steps", "5")
    one_line_error(code, err, f"cannot resume: field 'train': {train} changed since the run started")
    train.write_text(make_text(200, 1))  # the same content again: resumes
    assert cli(capsys, "lm", "train", "--resume", run, "--max-steps", "5", "--sample-length", "0")[0] == 0


def test_bundled_data_is_hashed_too(tmp_path):
    cfg = lm.make_config(out=str(tmp_path / "r"))
    from rnnkit.train import driver

    hashes = driver.data_hashes(cfg)
    assert set(hashes) == {driver.BUNDLED} and len(hashes[driver.BUNDLED]) == 64


def test_resume_and_evaluate_work_from_another_working_directory(tmp_path, files, capsys, monkeypatch):
    train, valid = files
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "lm", "train", "--train", "train.txt", "--valid", "valid.txt", "--out", "run",
               "--max-steps", "3", *TINY)[0] == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"] == str(train) and saved["valid"] == str(valid)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli(capsys, "lm", "evaluate", "../run")[0] == 0
    code, _, err = cli(capsys, "lm", "train", "--resume", "../run", "--max-steps", "5", "--sample-length", "0")
    assert code == 0, err


# --- 'best' does not depend on where a run was stopped -----------------------------------------------------

@dataclass(frozen=True)
class ToyConfig(TrainConfig):
    pass


class DescendingTask(Task):
    """One weight w, training loss w (SGD with lr 1 lowers it by exactly 1 per step: w = -step); the
    validation loss (w + 7)^2 is lowest at step 7, which is not on the evaluation schedule (every 3)."""

    name = "toy"
    has_valid = True
    selects_on = ("loss", "min")
    ddp_find_unused_parameters = False

    def batches_per_epoch(self) -> int:
        return 100

    def train_batches(self, epoch: int, start: int):
        yield from range(start, 100)

    def train_loss(self, model, batch, carry):
        return StepResult(loss_sum=model.w.sum(), tokens=1)

    def evaluate_stats(self, model):
        return {"loss": float((model.w + 7) ** 2)}

    def summarize(self, stats):
        return stats


def toy_trainer(run: Path, max_steps: int) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(()))
    cfg = ToyConfig(optimizer="sgd", lr=1.0, clip=0.0, eval_every=3, max_steps=max_steps, patience=0,
                    time_budget=None, save_every="0")
    return Trainer(model, DescendingTask(), cfg, run, {"task": "toy"}, torch.device("cpu"), progress=False)


def test_stopping_and_resuming_picks_the_same_best_as_an_uninterrupted_run(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    straight.mkdir(), split.mkdir()
    toy_trainer(straight, 10).fit()  # evaluations at 3, 6, 9 and (end of run) 10: best = 6
    assert step_of(straight / "best.safetensors") == 6
    toy_trainer(split, 7).fit()  # stopped at 7: its end-of-run evaluation is the best so far
    assert step_of(split / "best.safetensors") == 7  # the run as it stands: its best model
    resumed = toy_trainer(split, 10)
    resumed.restore(ck.load_checkpoint(split / "last.safetensors"))
    resumed.fit()
    assert step_of(split / "best.safetensors") == 6
    for run in (straight, split):
        assert torch.equal(ck.load_checkpoint(run / "best.safetensors").tensors["model.w"], torch.tensor(-6.0))


# --- no tracebacks --------------------------------------------------------------------------------------------

def test_full_disk_while_saving_keeps_previous_checkpoints_and_removes_temporary_files(tmp_path, files, capsys,
                                                                                        monkeypatch):
    train, valid = files
    run = tmp_path / "run"
    assert cli(capsys, "lm", "train", "--train", train, "--valid", valid, "--out", run, "--max-steps", "3",
               *TINY)[0] == 0
    before = run_files(run)

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full_disk)
    code, _, err = cli(capsys, "lm", "train", "--resume", run, "--max-steps", "6", "--sample-length", "0",
                       "--no-progress")  # the evaluation at step 6 writes 'best' first
    one_line_error(code, err, f"{run / 'best.safetensors'}: cannot write (no space left on device); the previous "
                              f"version is kept")
    after = run_files(run)
    assert {k: v for k, v in after.items() if k.endswith(".safetensors")} == \
        {k: v for k, v in before.items() if k.endswith(".safetensors")}
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_impossible_out_is_a_one_line_error(tmp_path, files, capsys):
    train, _ = files
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, _, err = cli(capsys, "lm", "train", "--train", train, "--out", a_file / "run", *TINY)
    one_line_error(code, err, f"field 'out': cannot create {a_file / 'run'}: {a_file} is a file, not a folder")


def test_read_only_out_is_a_one_line_error(tmp_path, files, capsys, monkeypatch):
    train, _ = files
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    # a read-only folder (as root, chmod cannot make one: this stands for a read-only file system)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    code, _, err = cli(capsys, "lm", "train", "--train", train, "--out", folder / "a" / "run", *TINY)
    one_line_error(code, err, f"field 'out': cannot write in {folder} (read-only or permission denied)")
    assert list(folder.iterdir()) == []


def test_a_failing_system_call_is_one_line_without_traceback(tmp_path, files, capsys, monkeypatch):
    train, _ = files

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "run" / "metrics.jsonl"))

    monkeypatch.setattr(Trainer, "log", denied)
    code, _, err = cli(capsys, "lm", "train", "--train", train, "--out", tmp_path / "run", "--max-steps", "3",
                       "--log-every", "1", *TINY)
    assert code == 1 and err == f"rnnkit: error: {tmp_path / 'run' / 'metrics.jsonl'}: Permission denied\n"


INTERRUPT_IMPORT = textwrap.dedent("""
    import sys

    class Interrupt:  # Ctrl-C while torch is being imported
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, Interrupt())
    sys.argv = ["rnnkit", "lm", "train"]
    {run}
""")


@pytest.mark.parametrize("run", [
    'import runpy; runpy.run_module("rnnkit", run_name="__main__")',  # python -m rnnkit
    "from rnnkit.__main__ import run; sys.exit(run())",  # the console command (pyproject's entry point)
])
def test_ctrl_c_during_start_up_imports(run):
    assert 'rnnkit = "rnnkit.__main__:run"' in (ROOT / "pyproject.toml").read_text()
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_IMPORT.format(run=run)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=120)
    assert proc.returncode == 130 and proc.stderr == "rnnkit: interrupted\n", proc.stderr


def test_non_finite_validation_loss_stops_and_is_never_best(tmp_path, files, capsys, monkeypatch):
    train, valid = files
    run = tmp_path / "run"
    evaluations = []
    original = lm.LMTask.summarize

    def summarize(self, stats):
        metrics = original(self, stats)
        evaluations.append(metrics["loss"])
        return {**metrics, "loss": math.nan} if len(evaluations) == 2 else metrics

    monkeypatch.setattr(lm.LMTask, "summarize", summarize)
    code, _, err = cli(capsys, "lm", "train", "--train", train, "--valid", valid, "--out", run, "--max-steps", "9",
                       "--eval-every", "3", *TINY)
    one_line_error(code, err, f"non-finite validation loss (nan) at step 6; training stopped and the last good "
                              f"checkpoint is {run / 'last.safetensors'}, not this model")
    assert step_of(run / "best.safetensors") == 3 and step_of(run / "last.safetensors") == 3


def test_out_of_memory_during_training_stops_with_one_line(tmp_path, files, capsys, monkeypatch):
    train, _ = files
    original, calls = lm.LMTask.train_loss, []

    def train_loss(self, *args):
        calls.append(1)
        if len(calls) == 4:  # a bigger batch than any before: the allocator fails
            torch.empty(3_000_000, 3_000_000, 4)
        return original(self, *args)

    monkeypatch.setattr(lm.LMTask, "train_loss", train_loss)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "lm", "train", "--train", train, "--out", run, "--max-steps", "9", "--save-every", "2",
                       *TINY)
    one_line_error(code, err, f"out of memory at step 4 on cpu; training stopped and the last good checkpoint is "
                              f"{run / 'last.safetensors'} (lower --batch-size or the model's size)")
    assert step_of(run / "last.safetensors") == 2


def test_bit_damage_in_a_checkpoint_is_reported_not_used(tmp_path, files, capsys):
    train, _ = files
    run = tmp_path / "run"
    assert cli(capsys, "lm", "train", "--train", train, "--out", run, "--max-steps", "2", *TINY)[0] == 0
    path = run / "best.safetensors"
    assert len(ck.load_checkpoint(path).meta["tensor_sha256"]) == 64
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # one bit of the last tensor's data
    path.write_bytes(bytes(data))
    code, _, err = cli(capsys, "lm", "evaluate", run, "--test", train)
    one_line_error(code, err, f"{path}: damaged checkpoint (its tensor data does not match the checksum")
    with pytest.raises(CheckpointError, match="checksum"):
        lm.load(run)


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    path = tmp_path / "old.safetensors"
    tensors = {"model.w": torch.arange(3.0)}
    ck.save_checkpoint(path, tensors, {"task": "toy"})
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["rnnkit"])
    del meta["tensor_sha256"]
    save_file(tensors, str(path), metadata={"rnnkit": json.dumps(meta)})
    assert torch.equal(ck.load_checkpoint(path).tensors["model.w"], torch.arange(3.0))


def test_resume_counters_of_older_checkpoints_get_their_added_values():
    counters = dataclasses.asdict(ck.LoopCounters())
    del counters["best_before_final"]
    assert ck.LoopCounters.saved({"state": counters})["best_before_final"] is None



def test_sigterm_outside_training_is_one_line_and_exit_143():
    run = ROOT / "tests" / "fixtures" / "runs_v0_1" / "tag"
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", "tag", "predict", str(run)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    time.sleep(4)  # started, and waiting for sentences on stdin
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err == "rnnkit: interrupted\n", err


def test_every_task_declares_its_data_files():
    """The data hash check and absolute paths rely on ``data_file=True``: every task module's training and
    validation fields carry it (the task modules are found, so a new one is checked too)."""
    import importlib
    import pkgutil

    import rnnkit.tasks
    from rnnkit.train.config import data_file_fields

    tasks = [importlib.import_module(f"rnnkit.tasks.{m.name}") for m in pkgutil.iter_modules(rnnkit.tasks.__path__)]
    drivers = [t.DRIVER for t in tasks if hasattr(t, "DRIVER")]
    assert len(drivers) >= 3
    for driver in drivers:
        cfg = driver.spec.config_class()
        assert {"train", "valid"} <= set(data_file_fields(cfg)), driver.spec.name


def test_resume_with_a_missing_data_file_names_it(tmp_path, files, capsys):
    train, _ = files
    run = tmp_path / "run"
    assert cli(capsys, "lm", "train", "--train", train, "--out", run, "--max-steps", "2", *TINY)[0] == 0
    train.unlink()
    code, _, err = cli(capsys, "lm", "train", "--resume", run, "--max-steps", "4")
    one_line_error(code, err, f"{train}: no such file")
