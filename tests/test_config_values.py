"""Config values from files and flags: out-of-range and non-finite values are ConfigErrors naming the field."""

from __future__ import annotations

import pytest

from rnnkit.errors import ConfigError, RnnkitError
from rnnkit.tasks.lm import LMConfig
from rnnkit.train.config import build_config, load_config_file


@pytest.mark.parametrize("text, message", [
    ("cutoffs = [inf]\n", "field 'cutoffs': expected a list of integers, got [inf]"),
    ("cutoffs = [2, -inf]\n", "field 'cutoffs': expected a list of integers, got [2, -inf]"),
    ("cutoffs = [2, 3.5]\n", "field 'cutoffs': expected a list of integers, got [2, 3.5]"),
    ("cutoffs = [true]\n", "field 'cutoffs': expected a list of integers, got [True]"),
    ("eval_every = -1\n", "field 'eval_every': must be >= 0, got -1"),
    ("max_vocab = 0\n", "field 'max_vocab': must be >= 1, got 0"),
])
def test_bad_values_in_a_config_file(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        build_config(LMConfig, load_config_file(path), source=str(path))
    assert str(info.value) == f"{path}: {message}"


def test_declared_lower_bound_allows_the_boundary_and_none():
    cfg = build_config(LMConfig, {"eval_every": 0, "max_vocab": 1})
    assert (cfg.eval_every, cfg.max_vocab) == (0, 1)
    assert build_config(LMConfig, {"max_vocab": None}).max_vocab is None


@pytest.mark.parametrize("data, message", [
    ('hidden = 8\n'.encode("utf-16"), "{p}: UTF-16 (little-endian) text, not UTF-8; convert it: iconv -f UTF-16LE "
                                      "-t UTF-8 {p} > NEW (config file)"),
    (b'level = "word"\nhidden = 8 # caf\xe9\n', "{p}:2: not valid UTF-8 (byte 0xe9 at column 17) (config file)"),
])
def test_config_file_encoding_errors_name_the_line(tmp_path, data, message):
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    with pytest.raises(RnnkitError) as info:
        load_config_file(path)
    assert str(info.value) == message.format(p=path)


def test_empty_config_file_sets_nothing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("\n", encoding="utf-8")
    assert load_config_file(path) == {}
