"""The test tree's own rule: test modules are collected by basename (rootdir-relative imports
without packages), so two files with one name in different folders break collection of the
whole suite. Caught here with a clear message instead."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in ROOT.rglob("test_*.py"):
        if "__pycache__" not in path.parts:
            seen[path.name].append(str(path.relative_to(ROOT)))
    dupes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not dupes, f"test modules must have unique names: {dupes}"
