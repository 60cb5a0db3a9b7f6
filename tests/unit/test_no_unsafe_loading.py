"""No code path unpickles, evaluates or runs remote code (docs/reliability.md, "Secrets and authentication").

Events are JSON, checkpoints are safetensors or GGUF: a check over the source keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {"eval", "exec"}


def _findings(path: Path, root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_CALLS:
                found.append(f"{where} calls {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) == "torch":
                found.append(f"{where} calls torch.load (pickle)")
            for keyword in node.keywords:
                risky = keyword.arg in ("trust_remote_code", "allow_pickle")
                if risky and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    found.append(f"{where} passes {keyword.arg}={ast.unparse(keyword.value)}")
    return found


def test_no_pickle_eval_or_remote_code_in_the_source() -> None:
    files = [*sorted((ROOT / "workers").rglob("*.py")), *sorted((ROOT / "topics").rglob("*.py"))]
    assert len(files) > 50
    assert [finding for path in files for finding in _findings(path)] == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nimport torch\nx = eval('1')\ntorch.load('m.pt')\nf(trust_remote_code=True)\n",
        encoding="utf-8",
    )
    findings = _findings(sample, root=tmp_path)
    assert len(findings) == 4, findings
