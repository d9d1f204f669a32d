"""The README's Python snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rnnkit.nn import registry

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_CELLS", dict(registry._CELLS))  # cells a snippet registers stay in it
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
