"""The runtime never imports the training and evaluation toolkit (``workers.guards``).

Serving a model needs its files, metadata and thresholds, and those modules live with the
backends; the toolkit builds on them. A worker that imported the toolkit would load dataset
readers, training code and their dependencies it never uses, and a change to a training recipe
could break serving.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLKIT = "workers.guards"


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _runtime_modules() -> list[Path]:
    toolkit = ROOT / "workers" / "guards"
    files = [*sorted((ROOT / "workers").rglob("*.py")), *sorted((ROOT / "topics").rglob("*.py"))]
    return [path for path in files if toolkit not in path.parents]


def test_no_runtime_module_imports_the_toolkit() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _imported(path) if name == TOOLKIT or name.startswith(f"{TOOLKIT}.")
        )
        for path in _runtime_modules()
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from workers.guards.thresholds import select_thresholds\n", encoding="utf-8")
    assert "workers.guards.thresholds" in _imported(sample)
    assert len(_runtime_modules()) > 50  # the walk found the tree
