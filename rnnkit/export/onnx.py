"""Export a trained run to a self-contained ONNX folder (``rnnkit export RUN --format onnx --out DIR``).

The folder holds everything needed to run the model without PyTorch or rnnkit::

    model.json        task, graphs (file, inputs, outputs with dtypes and shapes), state shapes, special ids
    *.onnx            the graphs (opset 17; int8 weights after ``--quantize int8``)
    tokenizer.json    / vocabs.json: the run's tokenizer(s) and label vocabularies, as rnnkit saves them
    example.py        a standalone script (onnxruntime + numpy, + tokenizers for subword runs)

Each task contributes a module (:mod:`rnnkit.export.lm`, :mod:`~rnnkit.export.tagger`,
:mod:`~rnnkit.export.seq2seq`, :mod:`~rnnkit.export.classify`) with ``graphs(run) -> list[Graph]`` and
``files(run) -> dict`` (JSON files and the task's ``model.json`` fields); :data:`TASKS` maps a task name to it.
A new task adds its module and one entry here, and a loader entry in :data:`LOADERS`.

Graphs are exported with PyTorch's TorchScript-based exporter (``dynamo=False``): it maps a packed
``torch.nn.LSTM/GRU`` to the ONNX recurrent ops with their ``sequence_lens`` input, so variable lengths in a
batch are handled inside the graph (padding never reaches a real position or a final state).
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.errors import CheckpointError, ConfigError

FORMAT = "rnnkit.export/1"
OPSET = 17
QUANTIZE = ("int8",)

#: task name -> module with ``graphs(run)`` and ``files(run)``
TASKS = {"lm": "rnnkit.export.lm", "tag": "rnnkit.export.tagger", "seq2seq": "rnnkit.export.seq2seq",
         "classify": "rnnkit.export.classify"}
#: task name -> module whose ``load(run_dir)`` returns the run (the public task API)
LOADERS = {"lm": "rnnkit.tasks.lm", "tag": "rnnkit.tasks.tag", "seq2seq": "rnnkit.tasks.seq2seq",
           "classify": "rnnkit.tasks.classify"}


@dataclass
class Graph:
    """One graph to export: a module, example inputs, and the names and dynamic axes of its tensors."""

    name: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    doc: str = ""


def run_task(run_dir: str | Path) -> str:
    """The task of a run folder, read from its ``config.json``."""
    path = Path(run_dir) / "config.json"
    try:
        task = json.loads(path.read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: cannot read the run's task: {e}") from None
    if task not in LOADERS:
        raise CheckpointError(f"{path}: unknown task {task!r} (expected one of {', '.join(LOADERS)})")
    return task


def load_run(run_dir: str | Path) -> tuple[str, Any]:
    """(task, loaded run) of a run folder, through the task's public ``load``."""
    task = run_task(run_dir)
    return task, importlib.import_module(LOADERS[task]).load(run_dir, device="cpu")


def torch_rnn(layer: nn.RNNBase) -> nn.RNNBase:
    """A ``torch.nn.LSTM/GRU/RNN`` (batch-first, eval mode) with the weights of an rnnkit recurrent layer.

    rnnkit's layers keep torch.nn's parameter names, so the state dict loads as it is.
    """
    if not isinstance(layer, nn.RNNBase) or layer.layer_norm:  # rnnkit's RNN/LSTM/GRU are RNNBase subclasses
        raise ConfigError(f"export: the cell of this run ({type(layer).__name__}) has no ONNX recurrent op; "
                          "runs of the rnn, lstm and gru cells export")
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}[layer.mode]
    kw = {"nonlinearity": "relu" if layer.mode == "RNN_RELU" else "tanh"} if cls is nn.RNN else {}
    out = cls(layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias, batch_first=True,
              bidirectional=layer.bidirectional, **kw)
    out.load_state_dict({k: v for k, v in layer.state_dict().items() if k in out.state_dict()})
    return out.eval()


def export_graph(graph: Graph, path: Path) -> dict[str, Any]:
    """Write one graph to ``path``; returns its ``model.json`` entry (file, inputs, outputs)."""
    module = graph.module.eval()
    with torch.no_grad():
        outputs = module(*graph.inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    with warnings.catch_warnings():  # the exporter warns about its own deprecation and packed-sequence shapes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, graph.inputs, str(path), dynamo=False, opset_version=OPSET,
                          input_names=graph.input_names, output_names=graph.output_names,
                          dynamic_axes=graph.dynamic_axes)

    def describe(names: list[str], tensors: tuple[Tensor, ...]) -> list[dict[str, Any]]:
        return [{"name": n, "dtype": str(t.dtype).removeprefix("torch."),
                 "shape": [graph.dynamic_axes.get(n, {}).get(i, d) for i, d in enumerate(t.shape)]}
                for n, t in zip(names, tensors)]

    import onnx

    used = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}  # unused inputs are dropped
    inputs = [(n, t) for n, t in zip(graph.input_names, graph.inputs) if n in used]
    return {"file": path.name, "doc": graph.doc, "inputs": describe(*map(list, zip(*inputs))),
            "outputs": describe(graph.output_names, outputs)}


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantisation of a graph's weights, in place (onnxruntime's ``quantize_dynamic``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns on the root logger about tensors it leaves in float
    try:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    tmp.replace(path)


def export(run_dir: str | Path, out: str | Path, *, quantize: str | None = None, overwrite: bool = False) -> Path:
    """Export the run in ``run_dir`` to the folder ``out`` (see the module docstring); returns ``out``."""
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"field 'quantize': expected one of {', '.join(QUANTIZE)}, got {quantize!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: folder exists and is not empty (give --overwrite to replace its files)")
    task, run = load_run(run_dir)
    spec = importlib.import_module(TASKS[task])
    out.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for graph in spec.graphs(run):
        path = out / f"{graph.name}.onnx"
        graphs[graph.name] = export_graph(graph, path)
        if quantize == "int8":
            quantize_int8(path)
    meta, json_files = spec.files(run)
    for name, obj in json_files.items():
        (out / name).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    model = {"format": FORMAT, "task": task, "source_run": str(Path(run_dir).resolve()), "opset": OPSET,
             "quantize": quantize, "graphs": graphs, **meta}
    (out / "model.json").write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.copyfile(Path(__file__).with_name("example.py"), out / "example.py")
    return out
