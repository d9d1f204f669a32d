"""Language-model task and training engine: exact resume, masked NLL, generation, schedules."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.tasks import lm
from rnnkit.train import checkpoint as ck
from rnnkit.train.engine import TrainingStopped
from rnnkit.train.schedule import Schedule

WORDS = "the cat dog sat on a mat and ran to house with red blue small big".split()


def make_text(lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + "\n" for _ in range(lines))


@pytest.fixture
def corpus(tmp_path):
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text(make_text(300, 1))
    valid.write_text(make_text(40, 2))
    return train, valid


def small(**kw):
    base = dict(hidden=24, emb=16, layers=2, batch_size=4, bptt=12, log_every=3, time_budget=None,
                threads=1, dropout=0.2, dropout_emb=0.1, seed=3)
    base.update(kw)
    return base


def params_and_optim(run_dir):
    c = ck.load_checkpoint(run_dir / "last.safetensors", task="lm")
    return c.group("model"), c.group("optim"), c.meta


@pytest.mark.parametrize("variable_bptt", [False, True])
def test_resume_is_exact(tmp_path, corpus, variable_bptt):
    train, valid = corpus
    common = small(train=str(train), valid=str(valid), level="word", eval_every=5, variable_bptt=variable_bptt,
                   scheduler="plateau", epochs=50)
    steps = 2 * 17  # crosses an epoch boundary (batches per epoch ~ 20) and several evaluations
    straight = lm.train(out=str(tmp_path / "straight"), max_steps=steps, progress=False, **common)
    lm.train(out=str(tmp_path / "split"), max_steps=steps // 2, progress=False, **common)
    resumed_run = lm.resume(tmp_path / "split", max_steps=steps, progress=False)
    a_model, a_opt, a_meta = params_and_optim(straight.path)
    b_model, b_opt, b_meta = params_and_optim(resumed_run.path)
    assert a_model.keys() == b_model.keys() and a_opt.keys() == b_opt.keys()
    for k in a_model:
        assert torch.equal(a_model[k], b_model[k]), k
    for k in a_opt:
        assert torch.equal(a_opt[k], b_opt[k]), k
    a_state, b_state = dict(a_meta["state"]), dict(b_meta["state"])
    a_state.pop("elapsed_s"), b_state.pop("elapsed_s")  # wall time differs, everything else may not
    assert a_state == b_state
    assert a_meta["schedule_scale"] == b_meta["schedule_scale"]
    # the resumed invocation ran exactly the remaining steps, not a restart from 0
    records = [json.loads(x) for x in (resumed_run.path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(3, steps + 1, 3))
    assert b_meta["state"]["step"] == steps


def test_resume_runs_only_remaining_steps(tmp_path, corpus):
    train, _ = corpus
    common = small(train=str(train), level="char", epochs=5)
    lm.train(out=str(tmp_path / "r"), max_steps=4, progress=False, **common)
    from rnnkit.train.engine import Trainer

    counted = []
    original = Trainer.fit

    def fit(self):
        state = original(self)
        counted.append(self.steps_this_run)
        return state

    Trainer.fit = fit
    try:
        lm.resume(tmp_path / "r", max_steps=9, progress=False)
    finally:
        Trainer.fit = original
    assert counted == [5]


def test_resume_refuses_other_fields(tmp_path, corpus):
    train, _ = corpus
    lm.train(out=str(tmp_path / "r"), max_steps=2, progress=False, **small(train=str(train)))
    with pytest.raises(ConfigError, match="--resume takes only"):
        lm.resume(tmp_path / "r", hidden=99)


def test_eval_batches_cover_every_prediction_once():
    ids = torch.arange(103)
    seen = []
    for x, y in lm.eval_batches(ids, batch_size=10, bptt=4):
        keep = y != -100
        seen += list(zip(x[keep].tolist(), y[keep].tolist()))
    assert sorted(seen) == [(i, i + 1) for i in range(102)]


def test_masked_nll_ignores_padding():
    from rnnkit.models.lm import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(lm.LMConfig(emb=8, hidden=8, layers=1).model_config(vocab_size=11)).eval()
    x = torch.randint(11, (2, 6))
    y = torch.randint(11, (2, 6))
    y_masked = y.clone()
    y_masked[1, 3:] = -100
    nll_masked, _ = model.loss(x, y_masked)
    logp, _ = model(x)
    expected = -(logp[0].gather(1, y[0, :, None]).sum() + logp[1, :3].gather(1, y[1, :3, None]).sum())
    assert torch.allclose(nll_masked, expected, atol=1e-5)


def test_evaluate_counts_every_token_and_matches_perplexity(tmp_path, corpus):
    train, valid = corpus
    run = lm.train(out=str(tmp_path / "r"), max_steps=3, progress=False, **small(train=str(train), valid=str(valid),
                                                                             level="word"))
    m = run.evaluate(valid)
    n_tokens = len(run.tokenizer.encode_stream(valid.read_text())) - 1
    assert m["tokens"] == n_tokens
    assert math.isclose(m["perplexity"], math.exp(m["loss"]), rel_tol=1e-9)
    assert math.isclose(m["bits_per_token"], m["loss"] / math.log(2), rel_tol=1e-9)


def test_generation_reads_prompt_once_then_one_step_per_token(tmp_path, corpus):
    train, _ = corpus
    run = lm.train(out=str(tmp_path / "r"), max_steps=2, progress=False, **small(train=str(train)))
    steps = []
    rnn = run.model.rnn
    original = rnn.forward

    def counting(x, state=None, *a, **k):
        steps.append(x.shape[1])  # batch_first: (B, T, E)
        return original(x, state, *a, **k)

    rnn.forward = counting
    prompt = "the cat sat"
    out = run.generate(prompt, 25, temperature=0.8, seed=5)[0]
    assert sum(steps) == len(prompt) + 25
    assert steps[0] == len(prompt)
    # seeded samples are reproducible; another seed gives another sample
    assert run.generate(prompt, 25, temperature=0.8, seed=5)[0] == out
    assert run.generate(prompt, 25, temperature=0.8, seed=6)[0] != out


def test_sampling_filters():
    from rnnkit.decode.sampling import filter_logits, sample_next

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    assert sample_next(logits, temperature=0).item() == 0
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {0, 1}


def test_unknown_prompt_symbols_map_to_unk(tmp_path, corpus):
    train, _ = corpus
    run = lm.train(out=str(tmp_path / "r"), max_steps=2, progress=False, **small(train=str(train), level="word"))
    assert run.unknown_symbols("the zebra sat") == ["zebra"]
    assert len(run.generate("the zebra sat", 5, seed=1)[0].split()) >= 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    train, valid = corpus
    from rnnkit.models.lm import LanguageModel

    calls = {"n": 0}
    original = LanguageModel.loss

    def poisoned(self, *a, **k):
        nll, state = original(self, *a, **k)
        calls["n"] += 1
        if self.training and calls["n"] > 8:
            nll = nll * float("nan")
        return nll, state

    monkeypatch.setattr(LanguageModel, "loss", poisoned)
    with pytest.raises(TrainingStopped, match="non-finite loss"):
        lm.train(out=str(tmp_path / "r"), max_steps=20, progress=False,
                 **small(train=str(train), valid=str(valid), eval_every=4))
    c = ck.load_checkpoint(tmp_path / "r" / "last.safetensors", task="lm")
    assert c.meta["state"]["step"] == 4  # the last checkpoint is the last good one, weights finite
    assert all(torch.isfinite(t).all() for t in c.group("model").values())


def test_final_evaluation_changes_no_schedule_or_early_stopping_state(tmp_path, corpus):
    train, valid = corpus
    lm.train(out=str(tmp_path / "r"), max_steps=7, progress=False,
             **small(train=str(train), valid=str(valid), eval_every=5, scheduler="plateau"))
    meta = ck.load_checkpoint(tmp_path / "r" / "last.safetensors", task="lm").meta
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    valid_records = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid_records] == [5, 7] and valid_records[1].get("final") is True
    assert meta["state"]["best_score"] == valid_records[0]["loss"]  # only the scheduled evaluation counts
    assert meta["state"]["bad_evals"] == 0


def test_early_stopping(tmp_path, corpus):
    train, valid = corpus
    # lr so small nothing improves after the first evaluation beyond noise: patience 1 must stop early
    run = lm.train(out=str(tmp_path / "r"), max_steps=400, progress=False,
                   **small(train=str(train), valid=str(valid), eval_every=2, patience=1, lr=1e-9, dropout=0.0,
                           dropout_emb=0.0))
    meta = ck.load_checkpoint(run.path / "last.safetensors", task="lm").meta
    assert meta["state"]["step"] < 400
    assert meta["state"]["bad_evals"] == 1


def test_schedules():
    s = Schedule("step", lr=1.0, decay=0.5, decay_start=4)
    assert [s.lr_at(0, e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    c = Schedule("cosine", lr=1.0, warmup_steps=10, total_steps=110)
    assert c.lr_at(0, 0) == pytest.approx(0.1) and c.lr_at(9, 0) == pytest.approx(1.0)
    assert c.lr_at(60, 0) == pytest.approx(0.5) and c.lr_at(110, 0) == pytest.approx(0.0)
    p = Schedule("plateau", lr=1.0, decay=0.25)
    p.on_evaluation(True)
    p.on_evaluation(False)
    assert p.lr_at(5, 3) == 0.25


@pytest.mark.parametrize("name,cls,kw", [("adam", torch.optim.Adam, {}), ("adamw", torch.optim.AdamW, {}),
                                         ("sgd", torch.optim.SGD, {"momentum": 0.9})])
def test_optimizers_use_fused_kernels_and_match_the_default_ones(name, cls, kw):
    from rnnkit.train.engine import make_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 5))
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    cfg = lm.make_config(optimizer=name, lr=0.01, weight_decay=0.01, **kw)
    opt = make_optimizer(model, cfg)
    ref_opt = cls(reference, lr=0.01, weight_decay=0.01, **kw)  # torch's default (for-loop) implementation
    assert opt.defaults["fused"] is True and not ref_opt.defaults.get("fused")
    for _ in range(5):
        grads = [torch.randn_like(p) for p in reference]
        for p, q, g in zip(model.parameters(), reference, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(model.parameters(), reference):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_config_checks():
    with pytest.raises(ConfigError, match="field 'hidden'"):
        lm.make_config(hidden="big")
    with pytest.raises(ConfigError, match="unknown field 'hiden'"):
        lm.make_config(hiden=3)
    with pytest.raises(ConfigError, match="tie_weights needs emb == hidden"):
        lm.make_config(tie_weights=True, emb=8, hidden=16)
    with pytest.raises(ConfigError, match="field 'time_budget'"):
        lm.make_config(time_budget="ten minutes")
    assert lm.make_config(time_budget="1.5m").time_budget == 90.0


def test_tied_and_adaptive_models_train_and_load(tmp_path, corpus):
    train, valid = corpus
    tied = lm.train(out=str(tmp_path / "t"), max_steps=3, progress=False,
                    **small(train=str(train), valid=str(valid), level="word", tie_weights=True, emb=24))
    assert tied.model.decoder.weight is tied.model.embedding.weight
    ada = lm.train(out=str(tmp_path / "a"), max_steps=3, progress=False,
                   **small(train=str(train), valid=str(valid), level="word", softmax="adaptive", cutoffs=(4, 10)))
    m = ada.evaluate(valid)
    assert m["tokens"] > 0 and math.isfinite(m["loss"])
    assert len(ada.generate("the", 4, seed=0)[0].split()) >= 1


def test_lm_regularisers_stay_on_the_fused_engine(tmp_path, corpus):
    train, valid = corpus
    run = lm.train(out=str(tmp_path / "r"), max_steps=3, progress=False,
                   **small(train=str(train), valid=str(valid), dropout=0.3, dropout_emb=0.2, dropout_hidden=0.25,
                           weight_dropout=0.4, variable_bptt=True))
    model = run.model.train()
    x = torch.randint(len(run.tokenizer.vocab), (2, 7))
    torch.manual_seed(0)
    a, _ = model(x)
    assert model.rnn.last_engine == "fused"
    torch.manual_seed(1)
    b, _ = model(x)
    assert not torch.equal(a, b)  # dropout active in training
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])  # and off in evaluation


def test_without_validation_best_is_last_and_init_range(tmp_path, corpus):
    train, _ = corpus
    run = lm.train(out=str(tmp_path / "r"), max_steps=2, progress=False, **small(train=str(train), init_range=0.05))
    best, last = tmp_path / "r" / "best.safetensors", tmp_path / "r" / "last.safetensors"
    assert best.read_bytes() == last.read_bytes()
    loaded = lm.load(tmp_path / "r")
    for (name, a), b in zip(run.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    fresh = lm.LanguageModel(lm.LMConfig(emb=8, hidden=8, init_range=0.05).model_config(vocab_size=20))
    assert all(p.abs().max() <= 0.05 for p in fresh.parameters())
