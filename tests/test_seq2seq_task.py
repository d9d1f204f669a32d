"""Seq2seq task: train -> translate -> evaluate -> attention, input order, n-best, exact resume, batching,
validation statistics, bad inputs, other tasks' runs refused, two processes equal one."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from rnnkit.data.batching import padding_fraction
from rnnkit.errors import CheckpointError, ConfigError, DataError
from rnnkit.metrics.translation import bleu_from_stats, bleu_stats, corpus_scores
from rnnkit.tasks import seq2seq as s2s
from rnnkit.train import checkpoint as ck

WORDS = "ant bee cat dog eel fox gnu hen ibis jay".split()


def reverse_pairs(n: int, seed: int, max_len: int = 5) -> list[tuple[str, str]]:
    """A toy translation: the target is the source's words reversed and upper-cased."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, max_len))]
        out.append((" ".join(words), " ".join(w.upper() for w in reversed(words))))
    return out


def write_tsv(path, pairs) -> None:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    train, valid = folder / "train.tsv", folder / "valid.tsv"
    write_tsv(train, reverse_pairs(300, 1))
    write_tsv(valid, reverse_pairs(30, 2))
    return train, valid


def small(**kw) -> dict:
    base = dict(emb=16, enc_hidden=16, hidden=32, batch_size=16, lr=0.01, log_every=5, time_budget=None, threads=1,
                dropout=0.1, seed=3, epochs=50)
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    train, valid = data
    out = tmp_path_factory.mktemp("runs") / "mt"
    return s2s.train(out=str(out), train=str(train), valid=str(valid), max_steps=150, eval_every=50,
                     progress=False, **small(dropout=0.0))


def params_and_optim(run_dir):
    c = ck.load_checkpoint(run_dir / "last.safetensors", task="seq2seq")
    return c.group("model"), c.group("optim"), c.meta


# --- end to end --------------------------------------------------------------------------------------------

def test_train_translate_evaluate_attention(trained, data, tmp_path):
    run, (_, valid) = trained, data
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "best.safetensors", "last.safetensors"):
        assert (run.path / name).is_file(), name
    records = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in evals] == [50, 100, 150]
    assert set(evals[0]) >= {"loss", "perplexity", "bleu", "exact_match"}
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert math.isclose(evals[-1]["perplexity"], math.exp(evals[-1]["loss"]), rel_tol=1e-9)

    # the toy task is learnt: most validation sentences come out exactly reversed
    m = run.evaluate(valid, beam=3)
    assert set(m) == {"bleu", "chrf", "exact_match", "sentences"} and m["sentences"] == 30
    assert m["exact_match"] >= 0.5 and m["bleu"] > 50
    assert run.evaluate(beam=3) == m  # no path: the run's validation pairs
    assert run.translate(["ant bee cat"], beam=3) == ["CAT BEE ANT"]

    src, out, weights = run.attention("ant bee cat")
    assert src == ["ant", "bee", "cat"] and out == ["CAT", "BEE", "ANT", "<eos>"]
    assert weights.shape == (4, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    assert weights[:3].argmax(dim=1).tolist() == [2, 1, 0]  # reversal: attention runs down the anti-diagonal

    from rnnkit.plot import plot_attention

    png = plot_attention(weights.tolist(), src, out, tmp_path / "a.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_group_references_scores_each_source_against_all_its_targets(trained, tmp_path, capsys):
    import sacrebleu

    from rnnkit.cli.main import main

    run = trained
    sources = ["ant bee cat", "dog eel", "fox gnu hen", "jay ibis"]
    hyps = run.translate(sources, beam=2)
    # two references each: a repeated source line, or a second target column (one line)
    lines = [f"{sources[0]}\tCAT BEE ANT\n", f"{sources[1]}\tEEL DOG\tthe eel and the dog\n",
             f"{sources[2]}\tHEN GNU FOX\n", f"{sources[3]}\tIBIS JAY\tJAY IBIS\n",
             f"{sources[0]}\tthe cat the bee the ant\n", f"{sources[2]}\tFOX GNU HEN\n"]
    test = tmp_path / "multi.tsv"
    test.write_text("".join(lines), encoding="utf-8")
    first = ["CAT BEE ANT", "EEL DOG", "HEN GNU FOX", "IBIS JAY"]
    second = ["the cat the bee the ant", "the eel and the dog", "FOX GNU HEN", "JAY IBIS"]

    m = run.evaluate(test, beam=2, group_references=True)
    assert m["sentences"] == 4
    assert math.isclose(m["bleu"], sacrebleu.corpus_bleu(hyps, [first, second]).score, rel_tol=1e-12)
    assert math.isclose(m["chrf"], sacrebleu.corpus_chrf(hyps, [first, second]).score, rel_tol=1e-12)
    assert m["exact_match"] == sum(h in refs for h, refs in zip(hyps, zip(first, second))) / 4
    # without grouping, several target columns are a format error, and repeated lines count separately
    with pytest.raises(DataError, match=r"multi.tsv:2: expected one tab \(source<TAB>target\), found 2"):
        run.evaluate(test, beam=2)
    single = tmp_path / "repeated.tsv"
    single.write_text("".join(x for x in lines if x.count("\t") == 1), encoding="utf-8")
    assert run.evaluate(single, beam=2)["sentences"] == 4
    assert run.evaluate(single, beam=2, group_references=True)["sentences"] == 2

    # the CLI flag gives the same figures
    assert main(["seq2seq", "evaluate", str(run.path), "--test", str(test), "--beam", "2", "--group-references",
                 "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == m


def test_translations_come_back_in_input_order(trained):
    sentences = ["ant", "", "cat dog eel fox gnu", "  ", "bee cat", "jay ibis hen", "ant"]
    for beam in (1, 3):
        alone = [trained.translate([s], beam=beam)[0] for s in sentences]
        assert trained.translate(sentences, beam=beam, batch_size=2) == alone
        assert alone[1] == alone[3] == "" and alone[0] == alone[6]


def test_nbest_is_sorted_and_starts_with_the_best(trained):
    sentences = ["ant bee", "", "cat dog eel"]
    nbest = trained.translate_nbest(sentences, 3, beam=4, length_penalty=0.6)
    assert nbest[1] == []
    best = trained.translate(sentences, beam=4, length_penalty=0.6)
    for hyps, top in zip([nbest[0], nbest[2]], [best[0], best[2]]):
        assert len(hyps) == 3 and hyps[0].text == top
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True) and len({h.text for h in hyps}) == 3
    with pytest.raises(ConfigError, match="nbest"):
        trained.translate_nbest(["ant"], 5, beam=3)


def test_attention_of_a_run_without_attention_is_refused(data, tmp_path):
    train, _ = data
    run = s2s.train(out=str(tmp_path / "r"), train=str(train), attention="none", max_steps=2, progress=False,
                    **small())
    assert run.model.attention is None
    assert len(run.translate(["ant bee"], beam=2)) == 1
    with pytest.raises(ConfigError, match="attention none"):
        run.attention("ant bee")


@pytest.mark.parametrize("level", ["char", "subword"])
def test_other_levels_and_shared_embeddings(data, tmp_path, level):
    train, valid = data
    run = s2s.train(out=str(tmp_path / "r"), train=str(train), valid=str(valid), level=level, share_embeddings=True,
                    subword_vocab=60, max_steps=3, progress=False, **small())
    assert run.tokenizers.source is run.tokenizers.target  # one vocabulary for both sides
    assert run.model.src_embedding is run.model.tgt_embedding
    loaded = s2s.load(run.path)
    assert loaded.tokenizers.source is loaded.tokenizers.target
    assert loaded.tokenizers.source.vocab.itos == run.tokenizers.source.vocab.itos
    out = loaded.translate(["ant bee", "cat"], beam=2)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_tied_weights_and_gru(data, tmp_path):
    train, _ = data
    run = s2s.train(out=str(tmp_path / "r"), train=str(train), tie_weights=True, cell="gru", attention="general",
                    max_steps=2, progress=False, **small(emb=32))
    assert run.model.output.weight is run.model.tgt_embedding.weight
    with pytest.raises(ConfigError, match="tie_weights needs emb == hidden"):
        s2s.make_config(tie_weights=True, emb=16, hidden=32)
    with pytest.raises(ConfigError, match="attention=dot needs hidden == 2 \\* enc_hidden"):
        s2s.make_config(attention="dot", enc_hidden=16, hidden=40)


# --- resume --------------------------------------------------------------------------------------------------

def test_resume_is_exact(tmp_path, data):
    train, valid = data
    common = small(train=str(train), valid=str(valid), eval_every=7, dropout=0.3, label_smoothing=0.1,
                   scheduler="plateau", valid_beam=2)
    steps = 2 * 13  # 300 pairs / 16 = 19 batches per epoch: the resumed half crosses an epoch boundary
    straight = s2s.train(out=str(tmp_path / "straight"), max_steps=steps, progress=False, **common)
    s2s.train(out=str(tmp_path / "split"), max_steps=steps // 2, progress=False, **common)
    resumed = s2s.resume(tmp_path / "split", max_steps=steps, progress=False)
    a_model, a_opt, a_meta = params_and_optim(straight.path)
    b_model, b_opt, b_meta = params_and_optim(resumed.path)
    assert a_model.keys() == b_model.keys() and a_opt.keys() == b_opt.keys()
    for k in a_model:
        assert torch.equal(a_model[k], b_model[k]), k
    for k in a_opt:
        assert torch.equal(a_opt[k], b_opt[k]), k
    a_state, b_state = dict(a_meta["state"]), dict(b_meta["state"])
    a_state.pop("elapsed_s"), b_state.pop("elapsed_s")
    assert a_state == b_state and b_state["step"] == steps and b_state["epoch"] == 1
    records = [json.loads(x) for x in (resumed.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(5, steps + 1, 5))
    # every scheduled evaluation is the same (the split run has one more: its final one at step 13)

    def scheduled(rs):
        evals = [r for r in rs if r["split"] == "valid" and "final" not in r]
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in evals]

    straight_records = [json.loads(x) for x in (straight.path / "metrics.jsonl").read_text().splitlines()]
    assert scheduled(straight_records) == scheduled(records)


def test_resume_runs_only_remaining_steps_and_refuses_other_fields(tmp_path, data):
    train, _ = data
    s2s.train(out=str(tmp_path / "r"), train=str(train), max_steps=3, progress=False, **small())
    from rnnkit.train.engine import Trainer

    counted = []
    original = Trainer.fit

    def fit(self):
        state = original(self)
        counted.append(self.steps_this_run)
        return state

    Trainer.fit = fit
    try:
        s2s.resume(tmp_path / "r", max_steps=5, progress=False)
    finally:
        Trainer.fit = original
    assert counted == [2]
    with pytest.raises(ConfigError, match="--resume takes only"):
        s2s.resume(tmp_path / "r", attention="dot")


# --- batches, loss and validation statistics -----------------------------------------------------------------

def make_task(data, **kw):
    train, valid = data
    cfg = s2s.make_config(**small(train=str(train), valid=str(valid), **kw))
    tokenizers, train_ex, valid_ex, refs = s2s.prepare(cfg)
    return s2s.Seq2SeqTask(cfg, tokenizers, train_ex, valid_ex, refs, torch.device("cpu")), cfg, tokenizers


def test_training_batches_are_a_function_of_seed_and_epoch_and_cover_every_pair(data):
    task, _, _ = make_task(data)
    again, _, _ = make_task(data)
    other_seed, _, _ = make_task(data, seed=4)
    e0, e1 = task.batches.epoch(0), task.batches.epoch(1)
    assert e0 == again.batches.epoch(0) and e0 != e1 and e0 != other_seed.batches.epoch(0)
    for batches in (e0, e1):
        assert sorted(i for b in batches for i in b) == list(range(len(task.train)))
    assert task.batches_per_epoch() == len(e0) == math.ceil(300 / 16)
    # starting inside an epoch yields the same batches as skipping them
    full = [b.tgt_out for b in task.train_batches(1, 0)]
    late = [b.tgt_out for b in task.train_batches(1, 4)]
    assert len(late) == len(full) - 4 and all(torch.equal(a, b) for a, b in zip(full[4:], late))
    # bucketing by (target, source) length cuts padding
    unbucketed, _, _ = make_task(data, bucket=False)
    tgt_lengths = [len(e.tgt) for e in task.train]
    assert padding_fraction(e0, tgt_lengths) < padding_fraction(unbucketed.batches.epoch(0), tgt_lengths)


def test_training_loss_is_smoothed_and_validation_nll_is_per_pair_sum(data):
    task, cfg, tokenizers = make_task(data, label_smoothing=0.2, dropout=0.0, valid_beam=0)
    torch.manual_seed(0)
    model = s2s.Seq2Seq(tokenizers.model_config(cfg)).eval()
    batch = next(task.train_batches(0, 0))
    step = task.train_loss(model, batch, None)
    smoothed, n = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, label_smoothing=0.2)
    plain, _ = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
    assert torch.equal(step.loss_sum, smoothed) and step.tokens == int(n) and not torch.equal(smoothed, plain)
    stats = task.evaluate_stats(model)
    assert stats["tokens"] == sum(len(e.tgt) + 1 for e in task.valid)  # every target token and its <eos>
    alone = sum(s2s.nll_stats(model, [e], tokenizers.target, torch.device("cpu"))[0] for e in task.valid)
    assert stats["nll"] == pytest.approx(alone, rel=1e-5)  # batching and padding change nothing
    assert set(task.summarize(stats)) == {"loss", "perplexity"}


def test_bleu_statistics_sum_over_shards():
    hyps = ["the cat sat on the mat", "a dog", "hello there world", "x y z w", ""]
    refs = ["the cat sat on a mat", "a dog barked", "hello world", "x y z w", "something"]
    total = {k: 0.0 for k in bleu_stats([""], [""])}
    for part in ([0, 3], [1, 2, 4]):
        for k, v in bleu_stats([hyps[i] for i in part], [refs[i] for i in part]).items():
            total[k] += v
    assert bleu_from_stats(total) == pytest.approx(corpus_scores(hyps, refs)["bleu"], abs=1e-9)


def test_validation_metrics_match_the_api(trained, data):
    _, valid = data
    pairs, _ = s2s.read_pairs(valid)
    task = s2s.Seq2SeqTask(trained.config, trained.tokenizers, [], trained.tokenizers.encode_pairs(pairs, "valid"),
                           [t for _, t in pairs], torch.device("cpu"))
    metrics = task.evaluate(trained.model)
    api = trained.evaluate(valid, beam=1)
    assert trained.config.valid_beam == 1
    assert metrics["bleu"] == pytest.approx(api["bleu"], abs=1e-9)
    assert metrics["exact_match"] == api["exact_match"]


# --- bad inputs and other runs ---------------------------------------------------------------------------------

def test_bad_inputs(tmp_path, data):
    train, _ = data
    cases = {
        "tab.tsv": (b"ant\tANT\nbee BEE\n", "tab.tsv:2: expected one tab (source<TAB>target), found none"),
        "tabs.tsv": (b"ant\tANT\tX\n", "tabs.tsv:1: expected one tab (source<TAB>target), found 2"),
        "empty_src.tsv": (b"ant\tANT\n \tBEE\n", "empty_src.tsv:2: empty source side"),
        "empty_tgt.tsv": (b"ant\t \n", "empty_tgt.tsv:1: empty target side"),
        "latin.tsv": (b"ant\tANT\ncaf\xe9\tCAFE\n", "latin.tsv:2: not valid UTF-8"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            s2s.train(out=str(tmp_path / "r"), train=str(path), progress=False, **small())
        assert not (tmp_path / "r").exists()
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("ant\nbee\ncat\n")
    tgt.write_text("ANT\nBEE\n")
    with pytest.raises(DataError, match="src.txt: 3 lines but .*tgt.txt has 2"):
        s2s.train(out=str(tmp_path / "r"), src_train=str(src), tgt_train=str(tgt), progress=False, **small())
    with pytest.raises(ConfigError, match="--train \\(TSV\\) or --src-train/--tgt-train, not both"):
        s2s.make_config(train=str(train), src_train=str(src), tgt_train=str(tgt))
    with pytest.raises(ConfigError, match="field 'tgt_valid': --src-valid needs --tgt-valid"):
        s2s.make_config(train=str(train), src_valid=str(src))
    with pytest.raises(ConfigError, match="field 'valid': give training pairs too"):
        s2s.make_config(valid=str(train))
    with pytest.raises(ConfigError, match="field 'level'"):
        s2s.train(out=str(tmp_path / "r"), train=str(train), level="subword", max_vocab=10, progress=False)


def test_parallel_files_and_over_long_pairs_skipped_with_one_warning(tmp_path, capsys):
    pairs = reverse_pairs(40, 5)
    long_src = " ".join(["ant"] * 30)
    pairs[3] = (long_src, "ANT")
    pairs[7] = ("bee", " ".join(["BEE"] * 30))
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs))
    tgt.write_text("".join(t + "\n" for _, t in pairs))
    run = s2s.train(out=str(tmp_path / "r"), src_train=str(src), tgt_train=str(tgt), src_valid=str(src),
                    tgt_valid=str(tgt), max_chars=50, max_steps=2, progress=False, **small())
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 2  # once for the training files, once for the validation files
    assert "skipped 2 of 40 pairs with a side longer than 50 characters (lines 4, 8;" in warnings[0]
    assert f"{src} and {tgt}: skipped" in warnings[0]
    assert "ant" in run.tokenizers.source.vocab.stoi


def test_lm_runs_are_refused(tmp_path):
    from rnnkit.tasks import lm

    text = tmp_path / "t.txt"
    text.write_text("".join(" ".join(random.Random(i).choices(WORDS, k=6)) + "\n" for i in range(60)))
    lm_run = lm.train(out=str(tmp_path / "lm"), train=str(text), max_steps=1, hidden=8, emb=8, layers=1,
                      batch_size=2, bptt=4, time_budget=None, threads=1, progress=False)
    with pytest.raises(CheckpointError, match="this is a run of task 'lm', not 'seq2seq'"):
        s2s.load(lm_run.path)
    with pytest.raises(CheckpointError, match="this is a run of task 'lm', not 'seq2seq'"):
        s2s.resume(lm_run.path, max_steps=3)
    with pytest.raises(CheckpointError, match="no such run folder"):
        s2s.load(tmp_path / "nowhere")


# --- two processes (torch.distributed, gloo on CPU) ------------------------------------------------------

def _trained_sequences(task, batch) -> list:  # noqa: ANN001
    """What one training step of this rank sees: each pair's source and target ids."""
    pad = task.tokenizers.target.vocab.pad_id
    return [(tuple(s[:n].tolist()), tuple(t for t in out.tolist() if t != pad))
            for s, n, out in zip(batch.src, batch.src_lengths, batch.tgt_out)]


def _ddp_worker(rank: int, port: int, kwargs: dict) -> None:
    import os

    from rnnkit.train import distributed as dist
    from tests.test_distributed import record_batches

    record_batches(s2s.Seq2SeqTask, Path(kwargs["out"]).parent / f"seen{rank}.pt", _trained_sequences)

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        s2s.train(progress=False, **kwargs)
    finally:
        dist.cleanup()


def test_two_processes_equal_one_process(tmp_path, data):
    import torch.multiprocessing as mp

    from tests.test_distributed import assert_shards_cover_batches, free_port, recording_batches

    train, valid = data
    kw = small(train=str(train), valid=str(valid), max_steps=6, eval_every=3, dropout=0.0, optimizer="sgd", lr=0.5,
               device="cpu", label_smoothing=0.1)
    with recording_batches(s2s.Seq2SeqTask, tmp_path / "seen_single.pt", _trained_sequences):
        s2s.train(out=str(tmp_path / "single"), progress=False, **kw)
    mp.spawn(_ddp_worker, args=(free_port(), {**kw, "out": str(tmp_path / "ddp")}), nprocs=2, join=True)
    a, _, _ = params_and_optim(tmp_path / "single")
    b, _, meta = params_and_optim(tmp_path / "ddp")
    assert meta["world_size"] == 2
    # each rank trained on its own half of every batch (the loss is normalised by the global token count, so
    # equal parameters alone cannot tell a split batch from each rank training on all of it)
    assert_shards_cover_batches(tmp_path, steps=6)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)

    def valid_records(run):
        return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "valid"]

    one, two = valid_records(tmp_path / "single"), valid_records(tmp_path / "ddp")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [3, 6]
    for r, s in zip(one, two):  # validation pairs split over the ranks, statistics summed
        assert r["loss"] == pytest.approx(s["loss"], abs=1e-5)
        assert r["bleu"] == pytest.approx(s["bleu"], abs=1e-9) and r["exact_match"] == s["exact_match"]


# --- the quality benchmark's smoke path ----------------------------------------------------------------------

def test_quality_benchmark_quick(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    import seq2seq_quality

    folder = tmp_path / "data" / "multi30k"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 200, 1), ("val", 20, 2), ("test_2016_flickr", 20, 3)):
        pairs = reverse_pairs(n, seed)
        (folder / f"{split}.de").write_text("".join(s + "\n" for s, _ in pairs))
        (folder / f"{split}.en").write_text("".join(t + "\n" for _, t in pairs))
    out = seq2seq_quality.main(["--quick", "--threads", "1", "--data-dir", str(tmp_path / "data")])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["benchmark"] == "seq2seq quality" and printed["quick"] is True
    multi30k, tatoeba = out["results"]
    assert multi30k["attention"]["settings"]["attention"] == "additive"
    assert multi30k["no_attention"]["settings"]["attention"] == "none"
    for r in (multi30k["attention"], multi30k["no_attention"], tatoeba["model"]):
        assert set(r["test"]) >= {"bleu", "bleu_lc_tok", "chrf", "exact_match"} and r["steps"] >= 1
    assert set(printed["targets_met"]) == {"multi30k"}
