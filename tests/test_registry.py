"""Cell registry: names, import paths, the layer factory, and every cell in every task (train, reload)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import random
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rnnkit.cli.main import main
from rnnkit.errors import CheckpointError
from rnnkit.models.lm import LMModelConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.models.tagger import TaggerConfig
from rnnkit.nn import GRU, LSTM, RNN, LSTMCell, MinGRU, MinLSTM, Recurrent, RecurrentCell, registry
from rnnkit.nn.registry import cell_names, recurrent_layer, register_cell, resolve_cell
from rnnkit.tasks import classify, lm, tag
from rnnkit.tasks import seq2seq as s2s


class TraceCell(RecurrentCell):
    """A user cell with a two-tensor state of two sizes: ``h`` (B, H) and the two previous outputs (B, 2H).

    ``h_t = tanh(W x_t + U h_{t-1} + V [h_{t-2}; h_{t-3}] + b)``; output ``h_t``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1 / math.sqrt(hidden_size)
        self.weight_ih = torch.nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = torch.nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))
        self.weight_trace = torch.nn.Parameter(torch.empty(hidden_size, 2 * hidden_size).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.zeros(hidden_size))

    def init_state(self, batch_size, *, device=None, dtype=None):
        return (torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype),
                torch.zeros(batch_size, 2 * self.hidden_size, device=device, dtype=dtype))

    def project_input(self, input):
        return F.linear(input, self.weight_ih, self.bias)

    def step(self, projected, state):
        h, trace = state
        new = torch.tanh(projected + h @ self.weight_hh.t() + trace @ self.weight_trace.t())  # (B, H)
        return new, (new, torch.cat([h, trace[:, : self.hidden_size]], dim=1))


class NoHiddenWeights(RecurrentCell):
    """A cell without hidden-to-hidden weights: a running mean of projected inputs."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.proj = torch.nn.Linear(input_size, hidden_size)

    def project_input(self, input):
        return self.proj(input)

    def step(self, projected, state):
        new = 0.5 * (state + projected)
        return new, new


class NotACell(torch.nn.Module):
    pass


USER = "tests.test_registry:TraceCell"
CELLS = [*cell_names(), USER]


def test_builtin_names():
    assert cell_names()[:5] == ("rnn", "lstm", "gru", "ln-lstm", "ln-gru")


@pytest.mark.parametrize("cell, message", [
    ("foo", f"unknown cell 'foo' (choose from {', '.join(cell_names())} or package.module:ClassName)"),
    ("no_such_pkg.cells:X", "cannot import cell 'no_such_pkg.cells:X' (ModuleNotFoundError: No module named "
                            "'no_such_pkg')"),
    ("tests.test_registry:Gone", "cannot import cell 'tests.test_registry:Gone' (module 'tests.test_registry' "
                                 "has no attribute 'Gone')"),
    ("tests.test_registry:", "cannot import cell 'tests.test_registry:' (expected package.module:ClassName)"),
    ("tests.test_registry:NotACell", "cell 'tests.test_registry:NotACell' does not follow the cell protocol "
                                     "(lacks init_state, step; see rnnkit.nn.cells)"),
    ("tests.test_registry:USER", "cell 'tests.test_registry:USER' does not follow the cell protocol (not a "
                                 "torch.nn.Module subclass; see rnnkit.nn.cells)"),
])
def test_resolve_errors_name_the_cell(cell, message):
    with pytest.raises(ValueError) as e:
        resolve_cell(cell)
    assert str(e.value) == message


def test_register_cell(monkeypatch):
    monkeypatch.setattr(registry, "_CELLS", dict(registry._CELLS))
    assert register_cell("trace", TraceCell) is TraceCell
    assert register_cell("trace", TraceCell) is TraceCell  # the same class again is fine
    assert cell_names()[-1] == "trace" and resolve_cell("trace") is TraceCell
    layer = recurrent_layer("trace", 3, 4, 2, bidirectional=True)
    assert isinstance(layer, Recurrent) and all(type(c) is TraceCell for c in layer.cells)
    for name, cls, message in [
        ("lstm", TraceCell, "register_cell: 'lstm' is already the name of LSTMCell"),
        ("a:b", TraceCell, "register_cell: a cell name is a non-empty string without ':', got 'a:b'"),
        ("x", NotACell, "does not follow the cell protocol (lacks init_state, step; see rnnkit.nn.cells)"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            register_cell(name, cls)


def test_factory_keeps_fused_layers_for_stock_cells():
    assert type(recurrent_layer("rnn", 3, 4)) is RNN
    assert type(recurrent_layer("lstm", 3, 4)) is LSTM
    assert type(recurrent_layer("gru", 3, 4)) is GRU
    for name in ("ln-lstm", "ln-gru", USER):
        assert type(recurrent_layer(name, 3, 4)) is Recurrent
    with pytest.raises(ValueError, match="unknown cell 'nope'"):
        recurrent_layer("nope", 3, 4)


@pytest.mark.parametrize("cell", CELLS)
def test_every_layer_has_the_zero_state_it_returns(cell):
    layer = recurrent_layer(cell, 3, 4, 2, bidirectional=True)
    out, state = layer(torch.randn(2, 5, 3), lengths=torch.tensor([5, 2]))
    zero = layer.init_state(2)
    parts = (state,) if isinstance(state, torch.Tensor) else state
    zeros = (zero,) if isinstance(zero, torch.Tensor) else zero
    assert out.shape == (2, 5, 8)
    assert [p.shape for p in parts] == [z.shape for z in zeros] and all(not z.any() for z in zeros)


def test_generic_dropouts_equal_the_lstm_layers():
    """Recurrent(LSTMCell) with every dropout draws the same masks as rnnkit.nn.LSTM and gives its output
    (on full-length batches: with variable lengths on CPU the fused layer keeps the batch padded, the generic
    engine packs it, so their masks are drawn in different layouts; without dropout they agree there too)."""
    torch.manual_seed(0)
    kw = dict(dropout=0.3, variational_dropout=True, weight_dropout=0.4, input_dropout=0.2, output_dropout=0.1)
    generic = Recurrent(LSTMCell, 4, 5, 2, bidirectional=True, **kw)
    layer = LSTM(4, 5, 2, batch_first=True, bidirectional=True, **kw)
    with torch.no_grad():
        for k, suffix in enumerate(("_l0", "_l0_reverse", "_l1", "_l1_reverse")):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, name + suffix).copy_(getattr(generic.cells[k], name))
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    torch.manual_seed(1)
    want, (h, c) = layer(x)
    torch.manual_seed(1)
    got, (h2, c2) = generic(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close((h2, c2), (h, c))
    layer.eval(), generic.eval()
    want, (h, c) = layer(x, lengths=lengths)
    got, (h2, c2) = generic(x, lengths=lengths)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close((h2, c2), (h, c))


@pytest.mark.parametrize("cell", ["ln-gru", USER])
def test_weight_dropout_drops_the_hidden_weights_of_generic_cells(cell):
    torch.manual_seed(0)
    layer = recurrent_layer(cell, 3, 4, 2, weight_dropout=0.5)
    x = torch.randn(2, 5, 3)
    torch.manual_seed(7)
    dropped, _ = layer(x)
    dropped.sum().backward()
    grads = [c.weight_hh.grad for c in layer.cells]
    assert all((g == 0).any() for g in grads)  # dropped entries get no gradient
    assert all((c.weight_ih.grad != 0).all() for c in layer.cells)
    # the same output as the cells with F.dropout applied to each weight_hh, masks drawn in cell order
    torch.manual_seed(7)
    masked = [F.dropout(c.weight_hh.detach(), 0.5, True) for c in layer.cells]
    with torch.no_grad():
        raw = [c.weight_hh.clone() for c in layer.cells]
        for c, w in zip(layer.cells, masked):
            c.weight_hh.copy_(w)
        manual, _ = layer.eval()(x)
        for c, w in zip(layer.cells, raw):
            c.weight_hh.copy_(w)
    torch.testing.assert_close(dropped, manual)
    plain = recurrent_layer(cell, 3, 4, 2).eval()
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x)[0], plain(x)[0])  # eval: weight dropout is the identity


def test_weight_dropout_needs_hidden_weights():
    with pytest.raises(ValueError, match="Recurrent: weight_dropout needs hidden-to-hidden weights \\(parameters "
                                         "named weight_hh\\*\\); NoHiddenWeights has none"):
        recurrent_layer("tests.test_registry:NoHiddenWeights", 3, 4, weight_dropout=0.1)
    recurrent_layer("tests.test_registry:NoHiddenWeights", 3, 4)  # without weight dropout it is fine


@pytest.mark.parametrize("config", [LMModelConfig, TaggerConfig, Seq2SeqConfig])
def test_model_configs_have_no_defaults(config):
    """Each default lives in the task config only, so no model-config default can disagree with it."""
    with_default = [f.name for f in dataclasses.fields(config)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_default == []


def test_seq2seq_bridges_every_state_part():
    torch.manual_seed(0)
    base = dict(src_vocab_size=9, tgt_vocab_size=9, pad_id=0, bos_id=1, eos_id=2, attention="additive", emb=6,
                enc_hidden=4, hidden=8, layers=2, dropout=0.0, share_embeddings=False, tie_weights=False)
    lstm = Seq2Seq(Seq2SeqConfig(cell="lstm", **base))
    assert lstm.bridge_names == ["bridge", "bridge_cell"]  # the LSTM-only bridge's names: old runs load
    model = Seq2Seq(Seq2SeqConfig(cell=USER, **base))
    assert model.bridge_names == ["bridge", "bridge_cell"]
    assert model.bridge_cell.weight.shape == (2 * 16, 2 * 2 * 8)  # (L * 2H, 2L * 2H_e)
    enc = model.encode(torch.randint(3, 9, (3, 5)), torch.tensor([5, 1, 3]))
    h, trace = model.initial_state(enc).rnn
    assert h.shape == (2, 3, 8) and trace.shape == (2, 3, 16)
    torch.testing.assert_close(trace[1], torch.tanh(model.bridge_cell(
        enc.final[1].transpose(0, 1).reshape(3, -1))).view(3, 2, 16)[:, 1])


# --- every cell in every task ----------------------------------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "\n" for _ in range(60))
    (folder / "lm.txt").write_text(text, encoding="utf-8")
    rows = []
    for _ in range(24):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        rows.append(" ".join(words) + "\t" + " ".join(w.upper() for w in reversed(words)) + "\n")
    (folder / "pairs.tsv").write_text("".join(rows), encoding="utf-8")
    lines = []
    for _ in range(24):
        for w in (rng.choice(WORDS) for _ in range(rng.randint(2, 5))):
            lines.append(f"{w}\t{'N' if w in ('cat', 'mat', 'dog') else 'X'}")
        lines.append("")
    (folder / "tags.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(24)]
    (folder / "texts.tsv").write_text("".join(f"{d}\t{'N' if 'cat' in d else 'X'}\n" for d in docs), encoding="utf-8")
    return folder


TRAIN = dict(max_steps=2, time_budget=None, threads=1, log_every=1, seed=5, progress=False)


def train_task(task: str, cell: str, files, out):
    if task == "lm":
        return lm.train(out=str(out), train=str(files / "lm.txt"), model=cell, emb=6, hidden=6, layers=2, bptt=6,
                        batch_size=4, dropout=0.2, dropout_emb=0.1, dropout_hidden=0.1, **TRAIN)
    if task == "tag":
        return tag.train(out=str(out), train=str(files / "tags.txt"), cell=cell, char_cell=cell, emb=6, char_emb=4,
                         char_hidden=3, hidden=5, layers=2, batch_size=4, **TRAIN)
    if task == "classify":
        return classify.train(out=str(out), train=str(files / "texts.tsv"), text_column="0", label_column="1",
                              cell=cell, char_cell=cell, chars=True, emb=6, char_emb=4, char_hidden=3, hidden=5,
                              layers=2, batch_size=4, **TRAIN)
    return s2s.train(out=str(out), train=str(files / "pairs.tsv"), cell=cell, emb=6, enc_hidden=4, hidden=8,
                     layers=2, batch_size=4, valid_beam=0, **TRAIN)


def outputs(task: str, run):
    """Deterministic outputs of a loaded run: model outputs (eval mode) and what the Run API makes (LM
    sampling carries the state; beam search reorders it)."""
    model = run.model
    torch.manual_seed(0)
    if task == "lm":
        return model(torch.randint(len(run.tokenizer.vocab), (2, 7)))[0], run.generate("the", length=5, seed=1)
    if task == "tag":
        return run.predict([["the", "cat", "sat"], ["a", "dog"]]), model.word_embedding.weight
    if task == "classify":
        return run.probabilities(["the cat sat", "a dog"]), model.word_embedding.weight
    src = torch.randint(4, len(run.tokenizers.source.vocab), (2, 4))
    tgt = torch.randint(4, len(run.tokenizers.target.vocab), (2, 3))
    return model(src, torch.tensor([4, 2]), tgt), run.translate(["the cat", "a dog sat"], beam=3, max_len_b=4)


def field_of(task: str) -> str:
    return {"lm": "model", "tag": "cell", "seq2seq": "cell", "classify": "cell"}[task]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("task", ["lm", "tag", "seq2seq", "classify"])
def test_every_cell_trains_and_reloads_in_every_task(task, cell, files, tmp_path):
    run = train_task(task, cell, files, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved[field_of(task)] == cell
    if task in ("tag", "classify"):
        assert saved["char_cell"] == cell
    loader = {"lm": lm.load, "tag": tag.load, "seq2seq": s2s.load, "classify": classify.load}[task]
    again = loader(tmp_path / "run")
    expected_type = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "mingru": MinGRU, "minlstm": MinLSTM}.get(cell, Recurrent)
    layers = {"lm": ["rnn"], "tag": ["lstm", "char_lstm"], "seq2seq": ["encoder", "decoder"],
              "classify": ["rnn", "char_lstm"]}[task]
    assert all(type(getattr(again.model, name)) is expected_type for name in layers)
    for a, b in zip(_flat(outputs(task, run)), _flat(outputs(task, again))):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def _flat(x):
    return list(x) if isinstance(x, tuple) else [x]


@pytest.mark.parametrize("task, flag", [("lm", "--model"), ("tag", "--cell"), ("tag", "--char-cell"),
                                        ("seq2seq", "--cell")])
def test_unknown_cell_is_a_one_line_cli_error(task, flag, capsys, tmp_path):
    code = main([task, "train", "--out", str(tmp_path / "r"), flag, "lstn"])
    err = capsys.readouterr().err
    assert code == 2
    field = flag[2:].replace("-", "_")
    assert err == (f"rnnkit: error: flags: field '{field}': unknown cell 'lstn' (choose from "
                   f"{', '.join(cell_names())} or package.module:ClassName)\n")
    assert not (tmp_path / "r").exists()


def test_help_lists_the_cells(capsys):
    with pytest.raises(SystemExit):
        main(["tag", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"recurrent cell of the character encoder: {', '.join(cell_names())} or package.module:ClassName" in text


def test_a_run_whose_cell_cannot_be_imported_is_a_one_line_error(files, tmp_path, monkeypatch):
    module = tmp_path / "mods" / "my_cells_for_test.py"
    module.parent.mkdir()
    module.write_text("from tests.test_registry import TraceCell as Cell\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(module.parent))
    train_task("lm", "my_cells_for_test:Cell", files, tmp_path / "run")
    module.unlink()
    monkeypatch.delitem(sys.modules, "my_cells_for_test")
    importlib.invalidate_caches()
    with pytest.raises(CheckpointError) as e:
        lm.load(tmp_path / "run")
    assert str(e.value) == (f"{tmp_path / 'run' / 'config.json'}: field 'model': cannot import cell "
                            f"'my_cells_for_test:Cell' (ModuleNotFoundError: No module named 'my_cells_for_test')")


def _drop_meta_keys(path, keys):
    """Rewrite a checkpoint as the release before the cell fields wrote it: without ``keys`` in its
    ``model_config``."""
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    meta = json.loads(metadata["rnnkit"])
    for key in keys:
        del meta["model_config"][key]
    save_file(load_file(str(path)), str(path), metadata={**metadata, "rnnkit": json.dumps(meta)})


def test_tagger_runs_saved_without_cell_fields_load_as_lstm(files, tmp_path):
    run = train_task("tag", "lstm", files, tmp_path / "run")
    config = tmp_path / "run" / "config.json"
    saved = json.loads(config.read_text())
    for key in ("cell", "char_cell"):
        del saved[key]
    config.write_text(json.dumps(saved))
    for name in ("best", "last"):
        _drop_meta_keys(tmp_path / "run" / f"{name}.safetensors", ("cell", "char_cell"))
    old = tag.load(tmp_path / "run")
    assert old.config.cell == old.config.char_cell == "lstm"
    assert old.predict([["the", "cat", "sat"]]) == run.predict([["the", "cat", "sat"]])
    for (name, a), b in zip(run.model.state_dict().items(), old.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert TaggerConfig.from_dict({k: v for k, v in old.model.config.to_dict().items()
                                   if k not in ("cell", "char_cell")}) == old.model.config
