"""Text classification task: train/load/predict/evaluate round trip, exact resume, multi-label threshold,
class weights, LM transfer (--init-from, gradual unfreezing, discriminative learning rates)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rnnkit.tasks.classify as classify
import rnnkit.tasks.lm as lm
from rnnkit.data.classify import Example
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import choose_threshold
from rnnkit.models.transfer import layer_groups
from rnnkit.train import checkpoint as ck
from rnnkit.train.distributed import DistInfo

FILLER = ["the", "film", "was", "a", "very", "really", "plot", "it"]
CUES = {"pos": "good", "neg": "bad", "neu": "fine"}
TINY = dict(emb=8, hidden=8, batch_size=8, threads=1, progress=False, time_budget=None, lr=0.02)


def texts(rng: random.Random, n: int, labels=("pos", "neg", "neu"), weights=None) -> list[tuple[str, str]]:
    """``n`` (text, label) pairs; the label's cue word is somewhere in the text."""
    out = []
    for _ in range(n):
        label = rng.choices(labels, weights)[0]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), CUES[label])
        out.append((" ".join(words), label))
    return out


def write_tsv(path: Path, pairs) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cls")
    rng = random.Random(0)
    return write_tsv(folder / "train.tsv", texts(rng, 160)), write_tsv(folder / "dev.tsv", texts(rng, 40))


def columns(train, valid=None) -> dict:
    return dict(train=str(train), valid=None if valid is None else str(valid), text_column="text",
                label_column="label")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    run = classify.train(out=str(out), epochs=6, pooling="attention", **columns(*data), **TINY)
    return out, run


def test_train_load_predict_evaluate_round_trip(trained, data):
    out, run = trained
    again = classify.load(out)
    sample = ["it was good", "bad plot", "a fine film", "good"]
    assert run.predict(sample) == again.predict(sample) == ["pos", "neg", "neu", "pos"]
    report = again.evaluate(data[1])
    assert report["accuracy"] >= 0.9 and report["examples"] == 40
    assert set(report["per_class"]) == {"pos", "neg", "neu"}
    assert sum(c["support"] for c in report["per_class"].values()) == 40
    assert report["unseen_label_examples"] == 0
    # the same report from examples, and from the run's validation data
    rows = [line.split("\t") for line in data[1].read_text().splitlines()[1:]]
    assert again.evaluate([Example(t, (lab,), 0) for t, lab in rows]) == report == again.evaluate()
    # the best checkpoint is the one with the best validation accuracy logged
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(r["accuracy"] for r in logged if r["split"] == "valid")
    assert ck.load_checkpoint(out / "best.safetensors").meta["eval_loss"] is not None
    from rnnkit.metrics.classification import accuracy

    assert accuracy([r[1] for r in rows], again.predict([r[0] for r in rows])) == pytest.approx(best)


def test_predict_top_k_and_probabilities(trained):
    _, run = trained
    probs = run.probabilities(["good", "bad film"])
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    top = run.predict(["good", "bad film"], top_k=3)
    for row, p in zip(top, probs):
        assert [lab for lab, _ in row] == [run.labels[i] for i in p.argsort(descending=True).tolist()]
        assert [x for _, x in row] == pytest.approx(sorted(p.tolist(), reverse=True))
    assert run.predict(["good"], probs=True) == [[top[0][0]]]
    with pytest.raises(ConfigError, match=r"field 'top_k': must be in 1..3"):
        run.predict(["good"], top_k=4)


def test_explain_returns_one_weight_per_token_summing_to_one(trained):
    _, run = trained
    tokens, weights = run.explain("the film was good")
    assert tokens == ["the", "film", "was", "good"]
    assert len(weights) == 1 and len(weights[0]) == 4 and sum(weights[0]) == pytest.approx(1.0)


def test_explain_needs_attention_pooling(data, tmp_path):
    run = classify.train(out=str(tmp_path / "r"), max_steps=1, **columns(data[0]), **TINY)
    with pytest.raises(ConfigError, match="explain shows attention-pooling weights; this run pools with max"):
        run.explain("good")


def test_unseen_test_labels_count_as_errors(trained, tmp_path):
    _, run = trained
    test = write_tsv(tmp_path / "t.tsv", [("good film", "pos"), ("it was great", "wow"), ("bad", "neg")])
    report = run.evaluate(test)
    assert report["unseen_label_examples"] == 1 and report["unseen_labels"] == ["wow"]
    assert report["accuracy"] == pytest.approx(2 / 3)
    matrix, labels = run.confusion(test)
    assert labels[-1] == "wow" and sum(matrix[-1]) == 1 and matrix[-1][-1] == 0


def test_resume_equals_an_uninterrupted_run(data, tmp_path):
    settings = dict(eval_every=5, log_every=1, **columns(*data), **TINY)
    classify.train(out=str(tmp_path / "straight"), max_steps=10, **settings)
    classify.train(out=str(tmp_path / "half"), max_steps=5, **settings)
    classify.resume(tmp_path / "half", max_steps=10, progress=False)
    a = ck.load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b = ck.load_checkpoint(tmp_path / "half" / "last.safetensors")
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert torch.equal(a.tensors[name], b.tensors[name]), name


def write_fasttext(path: Path, rng: random.Random, n: int) -> Path:
    """Multi-label data: each cue word present gives its label (none, one or two labels per text)."""
    lines = []
    for _ in range(n):
        chosen = [lab for lab in ("pos", "neg") if rng.random() < 0.5] or ["neu"]
        words = [rng.choice(FILLER) for _ in range(3)] + [CUES[lab] for lab in chosen]
        rng.shuffle(words)
        lines.append(" ".join(f"__label__{lab}" for lab in chosen) + " " + " ".join(words))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_multi_label_threshold_is_chosen_on_validation_and_survives_load(tmp_path):
    rng = random.Random(1)
    train, dev = write_fasttext(tmp_path / "train.txt", rng, 120), write_fasttext(tmp_path / "dev.txt", rng, 30)
    run = classify.train(out=str(tmp_path / "ml"), train=str(train), valid=str(dev), multi_label=True, epochs=4,
                         **TINY)
    saved = json.loads((tmp_path / "ml" / "threshold.json").read_text())
    examples = classify.read_examples(run.config, dev, "dev")
    probs = run.probabilities([ex.text for ex in examples])
    gold = torch.tensor([[float(lab in ex.labels) for lab in run.labels] for ex in examples])
    assert saved["threshold"] == run.threshold == choose_threshold(probs, gold)
    again = classify.load(tmp_path / "ml")
    assert again.threshold == run.threshold
    pred = again.predict([ex.text for ex in examples])
    assert pred == [[run.labels[c] for c in p.argsort(descending=True).tolist() if p[c] > run.threshold]
                    for p in probs]
    report = again.evaluate(dev)
    assert report["threshold"] == run.threshold and report["micro_f1"] > 0.8


def test_balanced_class_weights_weight_the_loss(tmp_path):
    rng = random.Random(2)
    train = write_tsv(tmp_path / "t.tsv", texts(rng, 40, ("pos", "neg"), weights=(3, 1)))
    cfg = classify.make_config(class_weights="balanced", **columns(train), **{k: v for k, v in TINY.items()
                                                                                if k != "progress"})
    spec = classify.DRIVER.spec
    vocabs, prepared = spec.prepare(cfg)
    task = spec.engine_task(cfg, vocabs, prepared, torch.device("cpu"), DistInfo())
    counts = [sum(1 for it in prepared.train if it.labels == [c]) for c in range(2)]
    assert task.class_weights.tolist() == pytest.approx([40 / (2 * n) for n in counts])
    model = spec.build_model(cfg, vocabs, {}).eval()
    batch = next(task.train_batches(0, 0))
    logits = model(batch.words, None, batch.lengths, None).logits
    expected = F.cross_entropy(logits, batch.targets, weight=task.class_weights, reduction="sum")
    assert task.train_loss(model, batch, None).loss_sum.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.fixture(scope="module")
def lm_run(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    lines = [line.split("\t")[0] for line in data[0].read_text().splitlines()[1:]]
    (folder / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lm.train(out=str(folder / "run"), train=str(folder / "text.txt"), level="word", model="lstm", emb=8,
                    hidden=8, layers=1, batch_size=4, bptt=8, max_steps=5, threads=1, progress=False,
                    time_budget=None)


def test_init_from_gives_the_lm_hidden_states(data, lm_run, tmp_path):
    run = classify.train(out=str(tmp_path / "c"), init_from=str(lm_run.path), max_steps=0, bidirectional=False,
                         **columns(*data), **TINY)
    assert json.loads((tmp_path / "c" / "config.json").read_text())["init_from"] == str(lm_run.path)
    tokens = "the film was good".split()
    clf_ids = torch.tensor([run.vocabs.tokenizer.vocab.encode(tokens)])
    lm_ids = torch.tensor([lm_run.tokenizer.vocab.encode(tokens)])
    h, _ = run.model.encode(clf_ids, None, torch.tensor([4]), None)
    expected, _ = lm_run.model.eval().hidden_states(lm_ids)
    assert torch.allclose(h, expected, atol=1e-6)


def test_init_from_mismatch_is_a_one_line_error_and_writes_nothing(data, lm_run, tmp_path):
    with pytest.raises(ConfigError, match=r"^init_from: hidden: the language model has 8, the classifier 6 "
                       r"\(they must match\)$"):
        classify.train(out=str(tmp_path / "c"), init_from=str(lm_run.path), **columns(*data),
                       **{**TINY, "hidden": 6})
    with pytest.raises(ConfigError, match="^init_from: level: the language model .* reads word tokens, the "
                       "classifier char"):
        classify.train(out=str(tmp_path / "c"), init_from=str(lm_run.path), level="char", **columns(*data),
                       **TINY)
    assert not (tmp_path / "c").exists()


def test_gradual_unfreezing_trains_only_the_head_in_the_first_epoch(data, lm_run, tmp_path):
    # 160 texts in batches of 8: 20 steps per epoch; validation keeps the 'best' weights apart, so use 'last'
    classify.train(out=str(tmp_path / "c"), init_from=str(lm_run.path), unfreeze=1, max_steps=20,
                   bidirectional=False, **columns(data[0]), **TINY)
    run = classify.load(tmp_path / "c", checkpoint="last")
    groups = dict(layer_groups(run.model))
    vocab = run.vocabs.tokenizer.vocab
    shared = [i for i, t in enumerate(vocab.itos) if t in lm_run.tokenizer.vocab.stoi and i != vocab.pad_id]
    lm_rows = [lm_run.tokenizer.vocab.stoi[vocab.itos[i]] for i in shared]
    assert torch.equal(groups["embedding"][0][shared], lm_run.model.embedding.weight[lm_rows])
    assert torch.equal(run.model.rnn.weight_hh_l0, lm_run.model.rnn.weight_hh_l0)
    start = classify.train(out=str(tmp_path / "start"), init_from=str(lm_run.path), max_steps=0, bidirectional=False,
                           **columns(data[0]), **TINY)  # the same initialisation, untrained
    assert torch.equal(start.model.rnn.weight_hh_l0, run.model.rnn.weight_hh_l0)
    assert not torch.equal(start.model.output.weight, run.model.output.weight)  # the head trained


def test_gradual_unfreezing_is_refused_under_torchrun_before_anything_is_written(data, lm_run, tmp_path,
                                                                                 monkeypatch):
    out = tmp_path / "c"
    out.mkdir()
    (out / "config.json").write_text("an earlier run")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # as under torchrun with 2 processes
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match="^field 'unfreeze': gradual unfreezing .* DistributedDataParallel"):
        classify.train(out=str(out), init_from=str(lm_run.path), unfreeze=1, overwrite=True, **columns(data[0]),
                       **TINY)
    assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == "an earlier run"


def test_discriminative_learning_rates_reach_the_optimizer(data, lm_run, tmp_path):
    classify.train(out=str(tmp_path / "c"), init_from=str(lm_run.path), pretrained_lr_decay=2.0, max_steps=1,
                   **columns(data[0]), **TINY)
    groups = ck.load_checkpoint(tmp_path / "c" / "last.safetensors").meta["optimizer"]["param_groups"]
    lr = TINY["lr"]  # no schedule: every step at --lr, times the group's scale (embedding, rnn.0, head)
    assert [(g["lr_scale"], g["lr"]) for g in groups] == [(0.25, lr / 4), (0.5, lr / 2), (1.0, lr)]


def test_validation_counts_and_batches_sum_over_ranks(data, trained, tmp_path):
    """Two ranks' evaluation statistics add up to one process's, and their batches split each batch."""
    _, run = trained
    spec = classify.DRIVER.spec
    prepared = spec.datasets(run.config, run.vocabs)
    test = write_tsv(tmp_path / "v.tsv", [("good film", "pos"), ("great", "wow"), ("bad", "neg")])
    valid = prepared.valid + classify.encode_examples(run.vocabs, classify.read_examples(run.config, test, "v"), "v")
    tasks = [classify.ClassifyTask(run.config, run.vocabs, prepared.train, valid, torch.device("cpu"), DistInfo(r, w))
             for r, w in ((0, 1), (0, 2), (1, 2))]
    one, *ranks = [t.evaluate_stats(run.model) for t in tasks]
    summed = {k: ranks[0][k] + ranks[1][k] for k in one}
    assert summed == pytest.approx(one)
    metrics = tasks[0].summarize(one)
    assert metrics["accuracy"] == pytest.approx(run.evaluate(valid_examples(run, test))["accuracy"])
    assert metrics["micro_f1"] == pytest.approx(metrics["accuracy"])  # multi-class: every error is one fp + one fn
    whole = [b.words.size(0) for b in tasks[0].train_batches(1, 0)]
    halves = [[b.words.size(0) for b in t.train_batches(1, 0)] for t in tasks[1:]]
    assert len(whole) == tasks[0].batches_per_epoch() == len(halves[0]) == tasks[1].batches_per_epoch()
    assert [a + b for a, b in zip(*halves)] == whole


def valid_examples(run, extra: Path) -> list[Example]:
    """The run's validation examples followed by those of ``extra``."""
    _, valid, _ = classify.load_examples(run.config)
    return valid + classify.read_examples(run.config, extra, "v")
