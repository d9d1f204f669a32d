"""ONNX export: onnxruntime equals PyTorch on variable-length batches for every task, greedy generation and
translation through the graphs equal rnnkit's, int8 quantisation, the CLI, and a folder that needs no torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rnnkit.cli.main import main
from rnnkit.decode import stream
from rnnkit.export import onnx as export_onnx
from rnnkit.export.onnx import export
from rnnkit.tasks import classify, lm, seq2seq, tag
from rnnkit.tasks.tag import collate, encode
from tests.test_classify_task import texts
from tests.test_classify_task import write_tsv as write_texts
from tests.test_lm_task import make_text
from tests.test_seq2seq_task import reverse_pairs, write_tsv
from tests.test_tag_task import ner_sentences, write_columns

TOL = dict(rtol=1e-4, atol=1e-4)


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(folder):
    """The exported folder's example.py as a module (what a user would run)."""
    return load_script(folder / "example.py")


def load_example_template():
    """rnnkit/export/example.py, the file every export copies."""
    return load_script(Path(export_onnx.__file__).with_name("example.py"))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module", params=[("word", "lstm"), ("char", "gru")])
def lm_export(request, tmp_path_factory):
    level, cell = request.param
    tmp = tmp_path_factory.mktemp("lm")
    text = tmp / "lm.txt"
    text.write_text(make_text(200, 1))
    run = lm.train(out=str(tmp / f"lm-{level}"), train=str(text), level=level, model=cell, max_steps=4, hidden=16,
                   emb=8, layers=2, batch_size=4, bptt=12, time_budget=None, threads=1, progress=False, seed=3)
    return run, export(run.path, tmp / f"lm-{level}-onnx")


@pytest.fixture(scope="module", params=[dict(crf=True, chars=True), dict(crf=False, chars=False)])
def tag_export(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tag")
    data = tmp / "ner.txt"
    write_columns(data, ner_sentences(60, 3))
    name = "tag-" + "-".join(k for k, v in request.param.items() if v)
    run = tag.train(out=str(tmp / name), train=str(data), max_steps=6, progress=False, emb=16, char_emb=8,
                    char_hidden=8, hidden=16, layers=2, batch_size=8, threads=1, time_budget=None, eval_every=0,
                    lr=0.01, seed=3, max_word_chars=4, **request.param)
    return run, export(run.path, tmp / f"{name}-onnx")


@pytest.fixture(scope="module", params=[dict(cell="lstm", attention="additive"), dict(cell="gru", attention="none")])
def s2s_export(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2s")
    data = tmp / "pairs.tsv"
    write_tsv(data, reverse_pairs(200, 1))
    name = f"s2s-{request.param['cell']}"
    run = seq2seq.train(out=str(tmp / name), train=str(data), max_steps=30, progress=False, emb=16, enc_hidden=16,
                        hidden=32, layers=2, batch_size=16, lr=0.01, time_budget=None, threads=1, dropout=0.0,
                        seed=3, **request.param)
    return run, export(run.path, tmp / f"{name}-onnx")


@pytest.fixture(scope="module", params=[dict(pooling="attention", chars=True, cell="lstm", attention_heads=2),
                                        dict(pooling="last", chars=False, cell="gru", multi_label=True),
                                        dict(pooling="max", chars=False, cell="lstm", bidirectional=False)])
def classify_export(request, tmp_path_factory):
    import random

    tmp = tmp_path_factory.mktemp("cls")
    data = write_texts(tmp / "train.tsv", texts(random.Random(4), 60))
    name = "cls-" + "-".join(f"{v}" for v in request.param.values())
    label_sep = "|" if request.param.get("multi_label") else None
    run = classify.train(out=str(tmp / name), train=str(data), text_column="text", label_column="label",
                         label_sep=label_sep, max_steps=6, progress=False, emb=8, char_emb=4, char_hidden=4, hidden=8,
                         layers=2, batch_size=8, threads=1, time_budget=None, lr=0.01, seed=3, **request.param)
    return run, export(run.path, tmp / f"{name}-onnx")


def session(folder, graph):
    return ort.InferenceSession(str(folder / f"{graph}.onnx"), providers=["CPUExecutionProvider"])


# --- language model -------------------------------------------------------------------------------------------

def test_lm_step_graph_equals_pytorch(lm_export):
    run, folder = lm_export
    meta = json.loads((folder / "model.json").read_text())
    sess = session(folder, "lm_step")
    for batch in (1, 3):  # dynamic batch
        state = run.initial_state(batch)
        ort_state = {n: state[n].numpy() for n in meta["state"]["names"]}
        for _ in range(4):
            ids = torch.randint(run.model.config.vocab_size, (batch,))
            log_probs, state = run.step(ids, state)
            out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"ids": ids.numpy(), **ort_state})))
            np.testing.assert_allclose(out["log_probs"], log_probs.numpy(), **TOL)
            ort_state = {n: out[f"{n}_out"] for n in ort_state}
            for n in ort_state:
                np.testing.assert_allclose(ort_state[n], state[n].numpy(), **TOL)


def test_lm_sequence_graph_scores_variable_lengths(lm_export):
    run, folder = lm_export
    example = load_example(folder)
    m = example.Exported(folder)
    tok = example.Tokenizer(m.json("tokenizer.json"))
    texts = ["the cat sat on a mat\n", "a dog\n", make_text(4, 9)]  # very different lengths in one batch
    assert [tok.encode_stream(t) for t in texts] == [run.tokenizer.encode_stream(t) for t in texts]
    got = example.lm_score(m, tok, texts)
    want = [stream.score_ids(run.model, run.tokenizer.encode_stream(t))[0] for t in texts]
    np.testing.assert_allclose(got, want, **TOL)


def test_lm_greedy_generation_equals_rnnkit(lm_export):
    run, folder = lm_export
    example = load_example(folder)
    m = example.Exported(folder)
    tok = example.Tokenizer(m.json("tokenizer.json"))
    for prompt in ("the dog", ""):
        ids = example.lm_generate(m, tok, prompt, 12)
        assert tok.decode_stream(ids) == run.generate(prompt, 12, temperature=0.0)[0]


# --- tagger ---------------------------------------------------------------------------------------------------

SENTENCES = [["John", "flew", "to", "New", "York", "."], ["Mary", "went"], ["Yesterday", "Zorglub", "moved", "to",
                                                                             "Rome", "."]]


def test_tagger_graph_equals_pytorch(tag_export):
    run, folder = tag_export
    batch = collate([encode(run.vocabs, s) for s in SENTENCES], run.vocabs, with_tags=False)
    with torch.no_grad():
        want = run.model(batch.words, batch.chars, batch.lengths, batch.char_lengths)  # (B, T, K)
    feeds = {"words": batch.words.numpy(), "lengths": batch.lengths.numpy()}
    if batch.chars is not None:
        feeds |= {"chars": batch.chars.numpy(), "char_lengths": batch.char_lengths.numpy()}
    (got,) = session(folder, "tagger").run(None, feeds)
    for b, n in enumerate(batch.lengths.tolist()):  # real positions; padding is meaningless in both
        np.testing.assert_allclose(got[b, :n], want[b, :n].numpy(), **TOL)


def test_tagger_example_equals_predict(tag_export):
    run, folder = tag_export
    example = load_example(folder)
    assert example.tag(example.Exported(folder), SENTENCES) == run.predict(SENTENCES)


def test_numpy_viterbi_equals_crf_decode():
    from rnnkit.nn.crf import CRF, bio_constraints

    example = load_example_template()
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    trans, start, end = bio_constraints(labels, "BIO")
    crf = CRF(5, allowed_transitions=trans, allowed_start=start, allowed_end=end)
    torch.manual_seed(0)
    for p in crf.parameters():
        torch.nn.init.normal_(p)
    emissions = torch.randn(4, 7, 5)
    lengths = torch.tensor([7, 1, 4, 6])
    mask = torch.arange(7)[None] < lengths[:, None]
    start, trans, end = (x.detach().numpy() for x in crf._scores(float("-inf")))
    got = [example.viterbi(emissions[b, :n].numpy(), start, trans, end) for b, n in enumerate(lengths.tolist())]
    assert got == crf.decode(emissions, mask)


# --- seq2seq --------------------------------------------------------------------------------------------------

def test_seq2seq_graphs_equal_pytorch(s2s_export):
    run, folder = s2s_export
    model = run.model
    meta = json.loads((folder / "model.json").read_text())
    src_rows = [run.tokenizers.source.encode(s) for s in ("ant bee cat dog eel", "fox", "gnu hen ibis")]
    lengths = torch.tensor([len(r) for r in src_rows])
    src = torch.full((3, int(lengths.max())), model.pad_id)
    for b, r in enumerate(src_rows):
        src[b, :len(r)] = torch.tensor(r)
    with torch.no_grad():
        enc = model.encode(src, lengths)
        state = model.initial_state(enc)
    enc_out = dict(zip(meta["memory"] + meta["state"],
                       session(folder, "encoder").run(None, {"src": src.numpy(), "src_lengths": lengths.numpy()})))
    np.testing.assert_allclose(enc_out["memory"], enc.memory.numpy(), **TOL)  # padding included: zero in both
    rnn = state.rnn if isinstance(state.rnn, tuple) else (state.rnn,)
    for name, want in zip(meta["state"], (*rnn, *([] if state.feed is None else [state.feed]))):
        np.testing.assert_allclose(enc_out[name], want.numpy(), **TOL)
    step = session(folder, "decoder_step")
    names = [o.name for o in step.get_outputs()]
    ort_state = {n: enc_out[n] for n in meta["state"]}
    memory = {n: enc_out[n] for n in meta["memory"]} | {"mask": enc.mask.numpy()}
    prev = torch.full((3,), model.bos_id)
    for _ in range(3):
        with torch.no_grad():
            log_probs, state, weights = model.decode_step(prev, state, enc)
        feeds = {"prev": prev.numpy(), **ort_state, **memory}
        out = dict(zip(names, step.run(None, {i.name: feeds[i.name] for i in step.get_inputs()})))
        np.testing.assert_allclose(out["log_probs"], log_probs.numpy(), **TOL)
        if weights is not None:
            np.testing.assert_allclose(out["attention"], weights.numpy(), **TOL)
        ort_state = {n: out[f"{n}_out"] for n in ort_state}
        prev = log_probs.argmax(-1)


@pytest.mark.parametrize("beam", [1, 3])
def test_seq2seq_translation_through_graphs_equals_rnnkit(s2s_export, beam):
    run, folder = s2s_export
    example = load_example(folder)
    m = example.Exported(folder)
    toks = m.json("tokenizers.json")
    source = example.Tokenizer(toks["source"])
    target = source if toks["shared"] else example.Tokenizer(toks["target"])
    sentences = [s for s, _ in reverse_pairs(6, 7)]
    search = example.greedy if beam == 1 else (lambda m, ids: example.beam(m, ids, beam))
    got = [target.decode(search(m, source.encode(s))) for s in sentences]
    assert got == run.translate(sentences, beam=beam)


# --- classifier -----------------------------------------------------------------------------------------------

CLASSIFY_TEXTS = ["the film was good", "bad", "it was a very fine plot film", "zorglub good really"]


def test_classifier_graph_equals_pytorch(classify_export):
    run, folder = classify_export
    items = [run.vocabs.encode(t) for t in CLASSIFY_TEXTS]  # variable lengths in one batch
    batch = classify.collate(items, run.vocabs, run.config.multi_label, with_labels=False)
    feeds = {"words": batch.words.numpy(), "lengths": batch.lengths.numpy()}
    if batch.chars is not None:
        feeds |= {"chars": batch.chars.numpy(), "char_lengths": batch.char_lengths.numpy()}
    (got,) = session(folder, "classifier").run(None, feeds)
    np.testing.assert_allclose(got, run.probabilities(CLASSIFY_TEXTS).numpy(), **TOL)


def test_classify_example_runs_where_torch_cannot_be_imported(classify_export, no_torch):
    run, folder = classify_export
    out = run_example(folder, no_torch, "classify", *CLASSIFY_TEXTS)
    key = "labels" if run.config.multi_label else "label"
    assert [o[key] for o in out] == run.predict(CLASSIFY_TEXTS)
    got = [[o["probabilities"][lab] for lab in run.labels] for o in out]
    np.testing.assert_allclose(got, run.probabilities(CLASSIFY_TEXTS).numpy(), **TOL)


# --- the folder, quantisation, the CLI ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """Environment of a process where ``import torch`` fails (a shim package first on the path)."""
    shim = tmp_path_factory.mktemp("no-torch")
    (shim / "torch").mkdir()
    (shim / "torch" / "__init__.py").write_text("raise ImportError('torch is not available here')\n")
    env = {"PYTHONPATH": str(shim)}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "torch is not available here" in check.stderr  # the shim works
    return env


def run_example(folder, env, *args) -> list[dict]:
    res = subprocess.run([sys.executable, str(folder / "example.py"), *args], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_lm_example_runs_where_torch_cannot_be_imported(lm_export, no_torch):
    run, folder = lm_export
    (out,) = run_example(folder, no_torch, "generate", "the cat", "--length", "8")
    assert out["text"] == run.generate("the cat", 8, temperature=0.0)[0]
    texts = ["the dog ran\n", "a cat\n"]
    got = [o["log_likelihood"] for o in run_example(folder, no_torch, "score", *texts)]
    assert got == pytest.approx([run.score(t)[0] for t in texts], rel=1e-4)


def test_tag_example_runs_where_torch_cannot_be_imported(tag_export, no_torch):
    run, folder = tag_export
    out = run_example(folder, no_torch, "tag", *(" ".join(s) for s in SENTENCES))
    assert [o["tags"] for o in out] == run.predict(SENTENCES)


def test_translate_example_runs_where_torch_cannot_be_imported(s2s_export, no_torch):
    run, folder = s2s_export
    sentences = [s for s, _ in reverse_pairs(3, 5)]
    out = run_example(folder, no_torch, "translate", *sentences, "--beam", "2")
    assert [o["text"] for o in out] == run.translate(sentences, beam=2)
    res = subprocess.run([sys.executable, str(folder / "example.py"), "tag", "a b"], env=no_torch,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "'tag' needs a tag export, this is a seq2seq export" in res.stderr


def test_int8_export_quantizes_and_stays_close(lm_export, tmp):
    import onnx

    run, folder = lm_export
    q = export(run.path, tmp / f"{folder.name}-int8", quantize="int8")
    assert json.loads((q / "model.json").read_text())["quantize"] == "int8"
    ops = {n.op_type for n in onnx.load(str(q / "lm_step.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul"}, ops
    example = load_example(q)
    m = example.Exported(q)
    tok = example.Tokenizer(m.json("tokenizer.json"))
    text = make_text(3, 4)
    fp32 = stream.score_ids(run.model, run.tokenizer.encode_stream(text))[0]
    assert example.lm_score(m, tok, [text])[0] == pytest.approx(fp32, rel=0.05)


def test_cli_export_and_refusals(lm_export, tmp, capsys):
    run, _ = lm_export
    out = tmp / f"cli-{run.path.name}"
    assert main(["export", str(run.path), "--format", "onnx", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model.json", "tokenizer.json", "example.py", "lm_step.onnx",
                                               "lm_sequence.onnx"}
    assert main(["export", str(run.path), "--format", "onnx", "--out", str(out)]) == 2
    assert f"rnnkit: error: {out}: folder exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(tmp / "nothing"), "--format", "onnx", "--out", str(tmp / "x")]) == 2
    assert "config.json: cannot read the run's task" in capsys.readouterr().err


@pytest.mark.parametrize("config", [dict(softmax="adaptive", cutoffs=(10, 30)),
                                    dict(model="rnn", layers=1, tie_weights=True), dict(model="gru", layers=3)])
def test_lm_graphs_of_other_architectures(tmp_path, config):
    from rnnkit.export import lm as export_lm
    from rnnkit.export.onnx import export_graph
    from rnnkit.models.lm import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(lm.LMConfig(emb=16, hidden=16, **config).model_config(vocab_size=50)).eval()
    for graph in export_lm.graphs(SimpleNamespace(model=model)):
        export_graph(graph, tmp_path / f"{graph.name}.onnx")
    ids, lengths = torch.randint(50, (3, 7)), torch.tensor([7, 2, 5])
    (got,) = session(tmp_path, "lm_sequence").run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
    for b, n in enumerate(lengths.tolist()):
        assert got[b, n:].tolist() == [0.0] * (7 - n)
        want = stream.score_ids(model, ids[b, :n].tolist())[0]
        assert float(got[b].astype(np.float64).sum()) == pytest.approx(want, rel=1e-4)
    state = stream.initial_state(model, 3)
    feeds = {"ids": ids[:, 0].numpy(), **{n: state[n].numpy() for n in export_lm.state_names(model)}}
    log_probs, _ = stream.step(model, ids[:, 0], state)
    np.testing.assert_allclose(session(tmp_path, "lm_step").run(None, feeds)[0], log_probs.numpy(), **TOL)


@pytest.mark.parametrize("level", ["char", "word", "subword"])
def test_example_tokenizer_equals_rnnkit(level):
    from rnnkit.data.tokenize import build_tokenizer

    corpus = [make_text(50, 1), "caf\u00e9 na\u00efve <unk> words\n"]
    tok = build_tokenizer(level, corpus, subword_vocab_size=60)
    mine = load_example_template().Tokenizer(json.loads(json.dumps(tok.to_dict())))
    for text in ("the cat sat\nzebra <pad> \u00e9t\u00e9 ran\n", "no newline at the end", ""):
        ids = tok.encode_stream(text)
        assert mine.encode_stream(text) == ids
        assert mine.decode_stream(ids) == tok.decode_stream(ids)
        assert mine.encode(text.split("\n")[0]) == tok.encode(text.split("\n")[0])


@pytest.mark.parametrize("cell", ["ln-lstm", "mingru"])
def test_runs_of_cells_without_an_onnx_op_are_a_one_line_error(tmp_path, capsys, cell):
    train = tmp_path / "train.txt"
    train.write_text("abc abd abe\n" * 40)
    run = lm.train(out=str(tmp_path / "run"), train=str(train), model=cell, max_steps=1, hidden=8, emb=4,
                   layers=1, batch_size=2, bptt=8, time_budget=None, progress=False)
    capsys.readouterr()
    assert main(["export", str(run.path), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no ONNX recurrent op; runs of the rnn, lstm and gru cells export" in err
