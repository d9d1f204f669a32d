"""The README's Python snippets run as written."""

from __future__ import annotations

import re
import sys
import types
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
    module = types.ModuleType("__readme__")  # a real module, so that dataclasses defined in a snippet work
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, str(README), "exec"), module.__dict__)


def test_package_map_lists_every_module():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Package map"):text.index("## Dependencies")]
    root = README.parent
    modules = sorted(p.relative_to(root).as_posix() for p in (root / "rnnkit").rglob("*.py")
                     if p.name != "__init__.py" and "resources" not in p.parts)
    missing = [m for m in modules if f"| `{m}` |" not in table]
    assert not missing
    listed = re.findall(r"^\| `(rnnkit/[^`]+\.py)` \|", table, flags=re.M)
    assert sorted(listed) == modules  # and nothing that does not exist


def test_no_pointers_to_things_readers_cannot_see():
    text = README.read_text(encoding="utf-8")
    assert not re.search(r"\bissue \d+", text)
