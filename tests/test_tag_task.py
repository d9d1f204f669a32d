"""Tagging task: train -> predict -> evaluate, input order, exact resume, heads, constraints, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rnnkit.data.conll import read_tagged
from rnnkit.errors import CheckpointError, ConfigError, DataError
from rnnkit.metrics.tagging import get_chunks, tagging_report
from rnnkit.tasks import tag
from rnnkit.train import checkpoint as ck

LEXICON = {
    "DET": ["the", "a", "this"],
    "ADJ": ["red", "big", "small", "old"],
    "NOUN": ["cat", "dog", "mat", "house", "tree", "car"],
    "VERB": ["sat", "ran", "saw", "liked"],
    "ADP": ["on", "to", "with", "near"],
    "PUNCT": [".", "!"],
}


def pos_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Short generated sentences, DET (ADJ) NOUN VERB (ADP DET NOUN) PUNCT, with their UPOS tags."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pattern = ["DET"] + (["ADJ"] if rng.random() < 0.5 else []) + ["NOUN", "VERB"]
        if rng.random() < 0.6:
            pattern += ["ADP", "DET", "NOUN"]
        pattern.append("PUNCT")
        out.append(([rng.choice(LEXICON[t]) for t in pattern], pattern))
    return out


def write_conllu(path, sentences, *, extras: bool = True) -> None:
    """CoNLL-U with UPOS and an XPOS of the tag's first letter; a comment and a multi-word range line."""
    lines = []
    for k, (tokens, labels) in enumerate(sentences):
        lines.append(f"# sent_id = {k}")
        if extras and k == 0:
            lines.append("1-2\tfoo\t_\t_\t_\t_\t_\t_\t_\t_")
        for i, (w, t) in enumerate(zip(tokens, labels), start=1):
            lines.append(f"{i}\t{w}\t{w}\t{t}\t{t[0]}\t_\t0\tdep\t_\t_")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ner_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Generated BIO sentences: person names (B-PER), one- and two-token places (B-LOC I-LOC)."""
    rng = random.Random(seed)
    people, places = ["John", "Mary", "Ann"], [["Paris"], ["Rome"], ["New", "York"], ["Los", "Angeles"]]
    out = []
    for _ in range(n):
        who, where = rng.choice(people), rng.choice(places)
        tokens = [who, rng.choice(["went", "flew", "moved"]), "to", *where, "."]
        labels = ["B-PER", "O", "O", "B-LOC"] + ["I-LOC"] * (len(where) - 1) + ["O"]
        if rng.random() < 0.3:
            tokens, labels = ["Yesterday", *tokens], ["O", *labels]
        out.append((tokens, labels))
    return out


def write_columns(path, sentences) -> None:
    """CoNLL-2003 style: token, a dummy POS column, label; -DOCSTART- first."""
    lines = ["-DOCSTART- -X- O", ""]
    for tokens, labels in sentences:
        lines += [f"{w} X {t}" for w, t in zip(tokens, labels)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture
def pos_files(tmp_path):
    train, valid = tmp_path / "train.conllu", tmp_path / "dev.conllu"
    write_conllu(train, pos_sentences(120, 1))
    write_conllu(valid, pos_sentences(30, 2))
    return train, valid


@pytest.fixture
def ner_files(tmp_path):
    train, valid = tmp_path / "train.txt", tmp_path / "dev.txt"
    write_columns(train, ner_sentences(100, 3))
    write_columns(valid, ner_sentences(30, 4))
    return train, valid


def small(**kw):
    base = dict(emb=16, char_emb=8, char_hidden=8, hidden=16, layers=1, batch_size=8, log_every=5, threads=1,
                time_budget=None, eval_every=0, lr=0.01, dropout=0.1, seed=3)
    base.update(kw)
    return base


def test_train_predict_evaluate(tmp_path, pos_files):
    train, valid = pos_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), valid=str(valid), max_steps=60, progress=False,
                    **small())
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "best.safetensors", "last.safetensors"):
        assert (run.path / name).is_file(), name
    m = run.evaluate(valid)
    assert set(m) >= {"accuracy", "precision", "recall", "f1", "tokens", "span_level", "unseen_label_tokens"}
    assert all(0.0 <= m[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1"))
    assert m["accuracy"] > 0.9 and m["span_level"] is False and m["f1"] == m["accuracy"]
    assert m["tokens"] == sum(len(s.tokens) for s in read_tagged(valid))
    assert m["unseen_label_tokens"] == 0
    assert run.evaluate() == m  # no path: the run's validation data
    # the validation metrics the engine logged include accuracy
    valid_records = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()
                     if json.loads(x)["split"] == "valid"]
    assert valid_records and {"loss", "accuracy"} <= set(valid_records[-1])
    # predict: plain token lists, unseen words (map to <unk>) welcome, empty sentences stay empty
    out = run.predict([["the", "dog", "sat", "."], [], ["a", "zebra", "ran", "!"]])
    assert out[0] == ["DET", "NOUN", "VERB", "PUNCT"]
    assert out[1] == [] and len(out[2]) == 4
    # a reload gives the same predictions
    again = tag.load(run.path)
    assert again.predict([["the", "dog", "sat", "."]]) == [out[0]]
    with pytest.raises(TypeError, match="sentence 0"):
        run.predict(["the dog sat"])


def test_predictions_come_back_in_input_order(tmp_path, pos_files):
    train, valid = pos_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), max_steps=20, progress=False, **small(bucket=True))
    rng = random.Random(0)
    sentences = [s for s, _ in pos_sentences(50, 9)]
    rng.shuffle(sentences)
    together = run.predict(sentences, batch_size=7)  # sorted by length into batches, then restored
    alone = [run.predict([s])[0] for s in sentences]
    assert together == alone
    assert [len(p) for p in together] == [len(s) for s in sentences]


def test_vocabularies_saved_and_min_count(tmp_path, pos_files):
    train, _ = pos_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), max_steps=2, progress=False,
                    **small(min_count=30))
    data = json.loads((run.path / "tokenizer.json").read_text())
    assert set(data) >= {"words", "chars", "tags"}
    vocabs = tag.TagVocabs.from_dict(data)
    assert vocabs.words.itos[:2] == ["<pad>", "<unk>"] and vocabs.chars.itos[:2] == ["<pad>", "<unk>"]
    assert sorted(vocabs.tags.itos) == sorted(LEXICON)
    counts = {}
    for s in read_tagged(train):
        for w in s.tokens:
            counts[w] = counts.get(w, 0) + 1
    assert set(vocabs.words.itos[2:]) == {w for w, c in counts.items() if c >= 30}
    assert tag.TagVocabs.from_dict(vocabs.to_dict()) == vocabs


def test_long_words_keep_their_ends():
    cfg = tag.make_config(max_word_chars=6)
    vocabs = tag.TagVocabs.build([tag.Sentence(["abcdefghij"], ["X"])], cfg)
    assert vocabs.chars.decode(vocabs.word_chars("abcdefghij")) == list("abchij")
    assert vocabs.chars.decode(vocabs.word_chars("abc")) == list("abc")


def test_lowercase_word_lookup_keeps_case_for_the_characters():
    sentences = [tag.Sentence(["The", "cat", "saw", "the", "Dog"], ["DET", "NOUN", "VERB", "DET", "PROPN"])]
    vocabs = tag.TagVocabs.build(sentences, tag.make_config(lowercase=True))
    assert set(vocabs.words.itos[2:]) == {"the", "cat", "saw", "dog"}
    ex = tag.encode(vocabs, ["THE", "Cat", "DOG", "bird"])
    assert ex.words == [vocabs.words.stoi["the"], vocabs.words.stoi["cat"], vocabs.words.stoi["dog"],
                        vocabs.words.unk_id]
    assert vocabs.chars.decode(ex.chars[0]) == ["T", "<unk>", "<unk>"]  # the characters keep their case
    assert vocabs.chars.decode(ex.chars[1]) == ["<unk>", "a", "t"]
    restored = tag.TagVocabs.from_dict(vocabs.to_dict())
    assert restored == vocabs and restored.lowercase
    # a run saved before the field existed is case-sensitive
    old = vocabs.to_dict()
    del old["lowercase"]
    assert tag.TagVocabs.from_dict(old).lowercase is False
    cased = tag.TagVocabs.build(sentences, tag.make_config())
    assert {"The", "the", "Dog"} <= set(cased.words.itos) and tag.encode(cased, ["THE"]).words == [cased.words.unk_id]


def params_and_optim(run_dir):
    c = ck.load_checkpoint(run_dir / "last.safetensors", task="tag")
    return c.group("model"), c.group("optim"), c.meta


@pytest.mark.parametrize("crf", [False, True], ids=["softmax", "crf"])
def test_resume_is_exact(tmp_path, pos_files, crf):
    train, valid = pos_files
    common = small(train=str(train), valid=str(valid), eval_every=4, crf=crf, scheduler="plateau", epochs=50,
                   word_dropout=0.2, dropout=0.3, log_every=3)
    steps = 2 * 12  # 15 batches per epoch: crosses an epoch boundary and several evaluations
    straight = tag.train(out=str(tmp_path / "straight"), max_steps=steps, progress=False, **common)
    tag.train(out=str(tmp_path / "split"), max_steps=steps // 2, progress=False, **common)
    from rnnkit.train.engine import Trainer

    ran = []
    original = Trainer.fit

    def fit(self):
        state = original(self)
        ran.append(self.steps_this_run)
        return state

    Trainer.fit = fit
    try:
        resumed = tag.resume(tmp_path / "split", max_steps=steps, progress=False)
    finally:
        Trainer.fit = original
    assert ran == [steps // 2]  # the resumed invocation ran only the remaining steps
    a_model, a_opt, a_meta = params_and_optim(straight.path)
    b_model, b_opt, b_meta = params_and_optim(resumed.path)
    assert a_model.keys() == b_model.keys() and a_opt.keys() == b_opt.keys()
    for k in a_model:
        assert torch.equal(a_model[k], b_model[k]), k
    for k in a_opt:
        assert torch.equal(a_opt[k], b_opt[k]), k
    a_state, b_state = dict(a_meta["state"]), dict(b_meta["state"])
    a_state.pop("elapsed_s"), b_state.pop("elapsed_s")
    assert a_state == b_state and b_state["step"] == steps
    records = [json.loads(x) for x in (resumed.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(3, steps + 1, 3))


def test_training_batches_are_a_function_of_seed_and_epoch(pos_files):
    train, _ = pos_files
    cfg = tag.make_config(train=str(train), batch_size=8)
    vocabs, examples, _, _, _ = tag.prepare(cfg)
    task = tag.TagTask(cfg, vocabs, examples, None, None, torch.device("cpu"))
    first = [b.words.tolist() for b in task.train_batches(0, 0)]
    assert len(first) == task.batches_per_epoch() == 15
    assert [b.words.tolist() for b in task.train_batches(0, 4)] == first[4:]
    assert [b.words.tolist() for b in task.train_batches(1, 0)] != first
    assert sum(int(b.lengths.sum()) for b in task.train_batches(0, 0)) == sum(len(e.words) for e in examples)


@pytest.mark.parametrize("kind", ["pos", "ner"])
def test_best_checkpoint_has_the_highest_validation_accuracy_or_f1(tmp_path, pos_files, ner_files, kind):
    train, valid = pos_files if kind == "pos" else ner_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), valid=str(valid), max_steps=40, progress=False,
                    **small(eval_every=5, lr=0.003))
    metric = "accuracy" if kind == "pos" else "f1"
    records = [r for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())
               if r["split"] == "valid"]
    best = max(r[metric] for r in records)
    first_best = next(r for r in records if r[metric] == best)  # only a strictly better score replaces it
    meta = ck.load_checkpoint(run.path / "best.safetensors", task="tag").meta
    assert meta["state"]["step"] == first_best["step"]
    assert meta["state"]["best_saved_score"] == -best
    assert meta["eval_loss"] == first_best["loss"]


@pytest.mark.parametrize("crf", [False, True], ids=["softmax", "crf"])
def test_both_heads_learn_bio_spans(tmp_path, ner_files, crf, capsys):
    train, valid = ner_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), valid=str(valid), max_steps=50, progress=False,
                    **small(crf=crf, chars=False))
    meta = ck.load_checkpoint(run.path / "best.safetensors", task="tag").meta
    assert meta["constraints"] == ("BIO" if crf else None)
    m = run.evaluate(valid)
    assert m["span_level"] is True and m["scheme"] == "BIO"
    assert m["f1"] > 0.9, m
    sents = read_tagged(valid)
    pred = run.predict([s.tokens for s in sents])
    assert m == {**tagging_report([s.labels for s in sents], pred, scheme="BIO", train_labels=run.labels),
                 "sentences": len(sents)}
    records = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert losses[-1] < losses[0] / 2
    if crf:  # constrained Viterbi never starts a chunk with I- whatever the input
        odd = run.predict([["to", "York", "Angeles"], ["Angeles"]])
        for p in odd:
            assert p[0] != "I-LOC" and all(not (a == "O" and b.startswith("I-")) for a, b in zip(p, p[1:]))


def test_constraints_off_when_training_data_breaks_them(tmp_path, capsys):
    train = tmp_path / "iob1.txt"
    sents = ner_sentences(40, 5)
    sents[7] = (["John", "went", "to", "Rome", "."], ["I-PER", "O", "O", "B-LOC", "O"])  # IOB1 style
    write_columns(train, sents)
    run = tag.train(out=str(tmp_path / "r"), train=str(train), max_steps=2, progress=False, **small(crf=True))
    err = capsys.readouterr().err
    assert "iob1.txt: sentence 8 starts with I-PER, which BIO forbids" in err
    assert ck.load_checkpoint(run.path / "best.safetensors", task="tag").meta["constraints"] is None
    assert bool(run.model.crf.allowed_start.all())
    run2 = tag.train(out=str(tmp_path / "r2"), train=str(train), max_steps=2, progress=False,
                     **small(crf=True, constraints="none"))
    assert "forbids" not in capsys.readouterr().err
    assert run2.model.crf is not None and bool(run2.model.crf.allowed_transitions.all())  # constraints="none"


def test_unseen_labels_are_counted_as_errors(tmp_path, pos_files):
    train, _ = pos_files
    test = tmp_path / "test.conllu"
    sents = pos_sentences(10, 7)
    sents[0] = (sents[0][0] + ["wow"], sents[0][1] + ["INTJ"])
    sents[3] = (sents[3][0] + ["hey"], sents[3][1] + ["INTJ"])
    write_conllu(test, sents)
    # a validation file with an unseen label trains (its loss skips that sentence) ...
    run = tag.train(out=str(tmp_path / "r"), train=str(train), valid=str(test), max_steps=10, progress=False,
                    **small())
    # ... and evaluation counts the unseen label as an error, and reports it
    m = run.evaluate(test)
    assert m["unseen_label_tokens"] == 2 and m["unseen_labels"] == ["INTJ"]
    pred = run.predict([s for s, _ in sents])
    correct = sum(p == g for (_, gold), ps in zip(sents, pred) for p, g in zip(ps, gold))
    assert m["accuracy"] == correct / m["tokens"] and m["tokens"] == sum(len(s) for s, _ in sents)


def test_column_choice(tmp_path, pos_files):
    train, valid = pos_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), column="xpos", max_steps=3, progress=False,
                    **small())
    assert sorted(run.labels) == sorted({t[0] for t in LEXICON})
    m = run.evaluate(valid)  # the run's column (xpos) by default
    assert m["unseen_label_tokens"] == 0
    assert run.evaluate(valid, column="upos")["unseen_label_tokens"] > 0
    cols = tmp_path / "cols.txt"
    write_columns(cols, ner_sentences(20, 5))
    ner = tag.train(out=str(tmp_path / "c"), train=str(cols), column="2", max_steps=2, progress=False, **small())
    assert sorted(ner.labels) == ["B-LOC", "B-PER", "I-LOC", "O"]
    with pytest.raises(DataError, match=r"every token has the label 'X'; nothing to learn \(wrong --column\?\)"):
        tag.train(out=str(tmp_path / "c1"), train=str(cols), column="1", max_steps=2, progress=False, **small())


def test_bad_inputs(tmp_path, pos_files):
    train, valid = pos_files
    out = str(tmp_path / "r")
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tthe\tthe\tDET\tD\t_\t0\tdep\t_\t_\n2\tcat\tcat\tNOUN\n\n")
    with pytest.raises(DataError, match=r"bad\.conllu:2: expected 10 tab-separated CoNLL-U columns, got 4"):
        tag.train(out=out, train=str(bad), progress=False, **small())
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("John X B-PER\nran X\n")
    with pytest.raises(DataError, match=r"ragged\.txt:2: expected 3 columns like line 1, got 2"):
        tag.train(out=out, train=str(ragged), progress=False, **small())
    with pytest.raises(ConfigError, match="field 'column': 'lemma' is not upos, xpos"):
        tag.train(out=out, train=str(train), column="lemma", progress=False, **small())
    with pytest.raises(ConfigError, match="column: 'upos' needs a CoNLL-U file"):
        tag.train(out=out, train=str(ragged), column="upos", progress=False, **small())
    empty = tmp_path / "empty.conllu"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.conllu: file is empty \(training data\)"):
        tag.train(out=out, train=str(empty), progress=False, **small())
    binary = tmp_path / "bin.conllu"
    binary.write_bytes(b"1\tthe\n\x00\x01")
    with pytest.raises(DataError, match=r"bin\.conllu:2: binary file"):
        tag.train(out=out, train=str(binary), progress=False, **small())
    one_label = tmp_path / "one.txt"
    one_label.write_text("a O\nb O\n\nc O\n")
    with pytest.raises(DataError, match="every token has the label 'O'"):
        tag.train(out=out, train=str(one_label), progress=False, **small())
    with pytest.raises(ConfigError, match="field 'valid': give --train too"):
        tag.train(out=out, valid=str(valid), progress=False, **small())
    with pytest.raises(ConfigError, match="field 'word_dropout'"):
        tag.make_config(word_dropout=1.0)
    assert not (tmp_path / "r").exists()  # nothing was written for bad input


def test_word_vectors(tmp_path, pos_files):
    train, _ = pos_files
    vec = tmp_path / "vec.txt"
    vec.write_text("2 4\ncat 1 2 3 4\nTHE 5 6 7 8\n")
    run = tag.train(out=str(tmp_path / "r"), train=str(train), word_vectors=str(vec), max_steps=0,
                    progress=False, **small(emb=4))
    w = run.model.word_embedding.weight
    assert w[run.vocabs.words.stoi["cat"]].tolist() == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="4-dimensional vectors, but --emb is 16"):
        tag.train(out=str(tmp_path / "r2"), train=str(train), word_vectors=str(vec), progress=False, **small())


def test_lm_runs_and_checkpoints_are_refused(tmp_path, pos_files):
    from rnnkit.tasks import lm

    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\n" * 40)
    lm_run = lm.train(out=str(tmp_path / "lm"), train=str(text), max_steps=1, progress=False, hidden=8, emb=8,
                      layers=1, batch_size=2, bptt=8, time_budget=None, threads=1)
    with pytest.raises(CheckpointError, match="run of task 'lm', not 'tag'"):
        tag.load(lm_run.path)
    with pytest.raises(CheckpointError, match="run of task 'lm', not 'tag'"):
        tag.resume(lm_run.path, max_steps=2)
    train, _ = pos_files
    run = tag.train(out=str(tmp_path / "t"), train=str(train), max_steps=1, progress=False, **small())
    (run.path / "best.safetensors").write_bytes((lm_run.path / "best.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="checkpoint is for task 'lm', not 'tag'"):
        tag.load(run.path)


def test_crf_viterbi_output_is_a_valid_bio_sequence_per_chunk(tmp_path, ner_files):
    train, _ = ner_files
    run = tag.train(out=str(tmp_path / "r"), train=str(train), max_steps=5, progress=False, **small(crf=True))
    # A barely trained model predicts almost only "O", which would make the check below vacuous: reward the
    # I- tags (start, and after anything) far above the emissions, so that unconstrained Viterbi would start
    # chunks with I-; the BIO constraints must still put a B- first.
    inside = [i for i, label in enumerate(run.vocabs.tags.itos) if label.startswith("I-")]
    with torch.no_grad():
        run.model.crf.start_transitions[inside] += 50.0
        run.model.crf.transitions[:, inside] += 50.0
    pred = run.predict([s for s, _ in ner_sentences(20, 11)])
    chunks = [(p, chunk) for p in pred for chunk in get_chunks(p)]
    assert len(chunks) >= 20 and any(p[last].startswith("I-") for p, (_, _, last) in chunks)
    for p, (kind, first, _) in chunks:  # every chunk starts with B- under the BIO constraints
        assert p[first] == f"B-{kind}"


# --- two processes (torch.distributed, gloo on CPU) ------------------------------------------------------

def _trained_sequences(task, batch) -> list:  # noqa: ANN001
    """What one training step of this rank sees: each sentence's word ids."""
    return [tuple(w[:n].tolist()) for w, n in zip(batch.words, batch.lengths)]


def _ddp_worker(rank: int, port: int, kwargs: dict) -> None:
    import os

    from rnnkit.train import distributed as dist
    from tests.test_distributed import record_batches

    record_batches(tag.TagTask, Path(kwargs["out"]).parent / f"seen{rank}.pt", _trained_sequences)

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        tag.train(progress=False, **kwargs)
    finally:
        dist.cleanup()


def test_two_processes_equal_one_process(tmp_path, pos_files):
    import torch.multiprocessing as mp

    from tests.test_distributed import assert_shards_cover_batches, free_port, recording_batches

    train, valid = pos_files
    kw = small(train=str(train), valid=str(valid), max_steps=6, eval_every=3, dropout=0.0, word_dropout=0.0,
               optimizer="sgd", lr=0.5, device="cpu", crf=True)
    with recording_batches(tag.TagTask, tmp_path / "seen_single.pt", _trained_sequences):
        tag.train(out=str(tmp_path / "single"), progress=False, **kw)
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
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["split"] == "valid"]

    one, two = valid_records(tmp_path / "single"), valid_records(tmp_path / "ddp")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [3, 6]
    for r, s in zip(one, two):  # validation sentences split over the ranks, statistics summed
        assert r["accuracy"] == s["accuracy"] and r["loss"] == pytest.approx(s["loss"], abs=1e-5)
