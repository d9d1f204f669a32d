"""The checkpoint module on its own: round trips, one read per file, errors naming the file, atomic writes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rnnkit.errors import CheckpointError
from rnnkit.train import checkpoint as ck


def stepped_adam() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    return model, opt


def test_tensors_and_meta_round_trip(tmp_path):
    path = tmp_path / "x.safetensors"
    tensors = {"model.w": torch.randn(3, 2), "rng.torch": torch.arange(5, dtype=torch.uint8)}
    ck.save_checkpoint(path, tensors, {"task": "toy", "nested": {"a": [1, 2.5, None]}})
    got = ck.load_checkpoint(path, task="toy")
    assert got.meta["nested"] == {"a": [1, 2.5, None]}
    assert got.meta["format_version"] == ck.FORMAT_VERSION
    assert torch.equal(got.tensors["model.w"], tensors["model.w"])
    assert got.group("rng").keys() == {"torch"}


def test_training_checkpoint_round_trip_restores_optimizer_counters_carry_and_rng(tmp_path):
    model, opt = stepped_adam()
    carry = (torch.randn(1, 2, 4), (torch.randn(1, 2, 4), torch.randn(1, 2, 4)))
    counters = ck.LoopCounters(step=7, epoch=1, batch_in_epoch=3, best_score=-0.5, bad_evals=2,
                               best_saved_score=-0.5, elapsed_s=1.25)
    torch.manual_seed(5)
    rng = {k: v[None] for k, v in ck.rng_to_flat().items()}  # (world_size = 1, n)
    expected_draw = torch.rand(3)
    path = tmp_path / "last.safetensors"
    ck.save_training_checkpoint(path, model=model, optimizer=opt, counters=counters, schedule_scale=0.25,
                                scaler={}, carry=carry, rng=rng, meta={"task": "toy", "name": "last"})

    fresh_model, fresh_opt = stepped_adam()
    for p in fresh_model.parameters():
        p.data.zero_()
    fresh_opt = torch.optim.Adam(fresh_model.parameters(), lr=0.5)
    ckpt = ck.load_checkpoint(path, task="toy")
    ck.load_model_state(fresh_model, ckpt)
    state = ck.read_training_state(ckpt, fresh_opt, torch.device("cpu"), rank=0)
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert json.dumps(loaded["param_groups"]) == json.dumps(saved["param_groups"])  # JSON: tuples come back as lists
    for i, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(loaded["state"][i][key]), torch.as_tensor(value))
    assert ck.LoopCounters(**state.counters) == counters
    assert state.schedule_scale == 0.25 and state.scaler == {}
    assert torch.equal(state.carry[0], carry[0]) and torch.equal(state.carry[1][1], carry[1][1])
    ck.rng_from_flat(state.rng)
    assert torch.equal(torch.rand(3), expected_draw)


def test_no_carry_and_infinite_scores_round_trip(tmp_path):
    model, opt = stepped_adam()
    path = tmp_path / "c.safetensors"
    ck.save_training_checkpoint(path, model=model, optimizer=opt, counters=ck.LoopCounters(), schedule_scale=1.0,
                                scaler={}, carry=None, rng={"torch": torch.get_rng_state()[None]}, meta={})
    state = ck.read_training_state(ck.load_checkpoint(path), opt, torch.device("cpu"), rank=0)
    assert state.carry is None
    assert state.counters["best_score"] == math.inf


def test_damaged_file_error_names_the_file(tmp_path):
    model, opt = stepped_adam()
    path = tmp_path / "best.safetensors"
    ck.save_checkpoint(path, {"model.w": torch.randn(50, 50)}, {"task": "toy"})
    path.write_bytes(path.read_bytes()[:200])  # cut short
    with pytest.raises(CheckpointError, match=rf"^{path}: damaged or not an rnnkit checkpoint"):
        ck.load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=rf"^{path}: damaged"):
        ck.load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'none.safetensors'}: no such checkpoint"):
        ck.load_checkpoint(tmp_path / "none.safetensors")


def test_a_checkpoint_without_training_state_cannot_resume(tmp_path):
    model, opt = stepped_adam()
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, {"task": "toy"})
    with pytest.raises(CheckpointError, match=rf"^{path}: cannot resume from this checkpoint"):
        ck.read_training_state(ck.load_checkpoint(path), opt, torch.device("cpu"), rank=0)


def test_other_task_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    ck.save_checkpoint(path, {"model.w": torch.zeros(1)}, {"task": "lm"})
    with pytest.raises(CheckpointError, match="checkpoint is for task 'lm', not 'tag'"):
        ck.load_checkpoint(path, task="tag")


def test_atomic_writes_leave_no_temporary_file(tmp_path):
    ck.save_checkpoint(tmp_path / "last.safetensors", {"model.w": torch.zeros(2)}, {})
    ck.link_checkpoint(tmp_path / "last.safetensors", tmp_path / "best.safetensors")
    ck.atomic_write_text(tmp_path / "config.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "config.json", "last.safetensors"]
    assert (tmp_path / "best.safetensors").read_bytes() == (tmp_path / "last.safetensors").read_bytes()


def test_load_reads_the_file_once(tmp_path, monkeypatch):
    path = tmp_path / "x.safetensors"
    ck.save_checkpoint(path, {"model.w": torch.ones(2)}, {"task": "toy"})
    opened = []
    real = ck.safe_open

    def counting(*args, **kw):
        opened.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(ck, "safe_open", counting)
    assert torch.equal(ck.load_checkpoint(path).tensors["model.w"], torch.ones(2))
    assert opened == [str(path)]
