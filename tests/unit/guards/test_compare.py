"""Comparing guards: only results scored on the same prompts, side by side, with a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from workers.cli import build_parser
from workers.guards.compare import IncomparableResults, check_same_sample, comparison_table, plot_comparison
from workers.guards.evaluation import evaluate

from .fakes import ScriptedGuard
from .test_evaluation import ROWS, SETS

# A second guard that fixes the first one's false positive and misses nothing else.
BETTER = {**ROWS, "kill a python process": (0.9, 0.05, 0.05)}


async def _results() -> tuple[dict[str, Any], dict[str, Any]]:
    first = await evaluate("prefilter", ScriptedGuard(rows=ROWS, tier="prefilter"), SETS, ["strict"], progress=False)
    second = await evaluate("cascade", ScriptedGuard(rows=BETTER, tier="stream"), SETS, ["strict"], progress=False)
    return first, second


async def test_comparison_table_and_plot(tmp_path: Path) -> None:
    first, second = await _results()
    assert first["sets"]["xstest"]["fingerprint"] == second["sets"]["xstest"]["fingerprint"]
    check_same_sample([first, second])

    console = Console(record=True, width=200)
    console.print(comparison_table([first, second], "strict"))
    text = console.export_text()
    xstest = next(line for line in text.splitlines() if "xstest" in line)
    # prefilter: 1 TP, 1 FP of 2 safe -> F1 66.7, FPR 50.0; the better guard: F1 100.0, FPR 0.0.
    assert [cell.strip() for cell in xstest.split("│")[4:8]] == ["66.7", "50.0", "100.0", "0.0"]
    assert "language: zh" in text and "overall" in text

    path = plot_comparison([first, second], tmp_path / "cmp.png")
    assert path.stat().st_size > 1000


async def test_results_on_different_prompts_do_not_compare() -> None:
    first, second = await _results()
    other_sample = json.loads(json.dumps(second))
    other_sample["sets"]["xstest"]["fingerprint"] = "0" * 16
    with pytest.raises(IncomparableResults, match="different samples of xstest"):
        check_same_sample([first, other_sample])
    sampled = {**second, "limit": 250}
    with pytest.raises(IncomparableResults, match="limit None vs 250"):
        check_same_sample([first, sampled])
    with pytest.raises(IncomparableResults, match="at least two"):
        check_same_sample([first])


async def test_eval_compare_command(tmp_path: Path) -> None:
    first, second = await _results()
    paths = []
    for result in (first, second):
        path = tmp_path / f"quality_{result['guard']}.json"
        path.write_text(json.dumps(result))
        paths.append(str(path))
    args = build_parser().parse_args(["eval-compare", *paths, "--out", str(tmp_path / "plot.png")])
    assert args.handler(args, None) == 0
    assert (tmp_path / "plot.png").exists()
    broken = json.loads(json.dumps(second))
    broken["sets"]["xstest"]["n"] = 99
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    args = build_parser().parse_args(["eval-compare", paths[0], str(tmp_path / "broken.json")])
    assert args.handler(args, None) == 2
