"""Task configs: ranges declared with the field (``option(low=, fraction=)``) and checked once for every
task, cross-field checks in ``validate()``, and the driver's defaults a task inherits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

import rnnkit.tasks.lm as lm
import rnnkit.tasks.seq2seq as s2s
import rnnkit.tasks.tag as tag
from rnnkit.errors import ConfigError
from rnnkit.models.lm import LanguageModel
from rnnkit.models.seq2seq import Seq2Seq
from rnnkit.models.tagger import Tagger
from rnnkit.train.config import TrainConfig, build_config, option, task_default


@dataclass(frozen=True)
class ToyConfig(TrainConfig):
    out: str = option("runs/toy", "run folder to write")
    width: int = option(4, "width", low=1)
    depth: int | None = option(None, "depth", low=0)
    rate: float = option(0.5, "a rate", fraction=True)
    epochs: int = task_default("epochs", 3)

    def validate(self) -> None:
        if self.width < (self.depth or 0):
            raise ValueError(f"field 'depth': must be <= --width ({self.width}), got {self.depth}")


@pytest.mark.parametrize(("values", "message"), [
    ({"width": 0}, "field 'width': must be >= 1, got 0"),
    ({"depth": -1}, "field 'depth': must be >= 0, got -1"),
    ({"rate": 1.0}, r"field 'rate': must be in \[0, 1\), got 1.0"),
    ({"rate": -0.1}, r"field 'rate': must be in \[0, 1\), got -0.1"),
    ({"epochs": 0}, "field 'epochs': must be >= 1, got 0"),  # task_default keeps the declared range
    ({"max_steps": -1}, "field 'max_steps': must be >= 0, got -1"),
    ({"lr": 0.0}, "field 'lr': must be > 0, got 0.0"),
    ({"width": 2, "depth": 3}, r"field 'depth': must be <= --width \(2\), got 3"),  # validate()
])
def test_declared_ranges_and_validate_are_checked(values, message):
    with pytest.raises(ConfigError, match=f"^flags: {message}$"):
        build_config(ToyConfig, values, source="flags")
    with pytest.raises(ValueError, match=f"^{message}$"):
        ToyConfig(**values)


def test_values_in_range_pass():
    cfg = ToyConfig(width=1, depth=None, rate=0.0)  # None passes a range: an optional field left unset
    assert (cfg.width, cfg.depth, cfg.rate, cfg.epochs) == (1, None, 0.0, 3)


@pytest.mark.parametrize(("cls", "declared"), [
    (lm.LMConfig, {"layers": 1, "hidden": 1, "bptt": 1, "subword_vocab": 1, "dropout": "fraction",
                   "weight_dropout": "fraction"}),
    (tag.TagConfig, {"char_hidden": 1, "max_word_chars": 0, "word_dropout": "fraction"}),
    (s2s.Seq2SeqTaskConfig, {"max_chars": 1, "max_vocab": 1, "valid_beam": 0, "label_smoothing": "fraction"}),
])
def test_task_configs_declare_their_ranges(cls, declared):
    fields = {f.name: f.metadata for f in dataclasses.fields(cls)}
    for name, low in declared.items():
        assert fields[name]["fraction"] if low == "fraction" else fields[name]["low"] == low, name
    for name, meta in fields.items():  # every declared range is enforced, with the one message
        if meta.get("low") is not None:
            bad = meta["low"] - 1
            with pytest.raises(ConfigError, match=rf"^kw: field '{name}': must be >= {meta['low']}, got {bad}(\.0)?$"):
                build_config(cls, {name: bad}, source="kw")
        if meta.get("fraction"):
            with pytest.raises(ConfigError, match=rf"^kw: field '{name}': must be in \[0, 1\), got 1.0$"):
                build_config(cls, {name: 1.0}, source="kw")


def test_spec_takes_config_and_model_classes_from_its_run():
    for task, config, model in ((lm, lm.LMConfig, LanguageModel), (tag, tag.TagConfig, Tagger),
                                (s2s, s2s.Seq2SeqTaskConfig, Seq2Seq)):
        spec = task.DRIVER.spec
        assert (spec.config_class, spec.model_class) == (config, model)
