"""Several guards' evaluation results side by side: a table per policy and one plot.

Results compare only when they were scored on the same prompts: the same sets, the same sample
(``limit`` and, where recorded, the sample fingerprint) and the same labels. ``check_same_sample``
says which set differs otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

METRICS = ("f1", "fpr")


class IncomparableResults(ValueError):
    """The results were scored on different prompts."""


def check_same_sample(results: Sequence[dict[str, Any]]) -> None:
    """Raise ``IncomparableResults`` naming the first difference in what the results scored."""
    if len(results) < 2:
        raise IncomparableResults("comparing needs at least two results")
    first = results[0]
    for other in results[1:]:
        pair = f"{first['guard']} and {other['guard']}"
        limits = first.get("limit"), other.get("limit")
        if limits[0] != limits[1]:
            raise IncomparableResults(f"{pair} sampled differently (limit {limits[0]} vs {limits[1]})")
        if list(first["sets"]) != list(other["sets"]):
            raise IncomparableResults(f"{pair} scored different sets: {list(first['sets'])} vs {list(other['sets'])}")
        for name, described in first["sets"].items():
            theirs = other["sets"][name]
            for key in ("n", "labels", "fingerprint"):
                if key in described and key in theirs and described[key] != theirs[key]:
                    raise IncomparableResults(
                        f"{pair} scored different samples of {name} ({key}: {described[key]} vs {theirs[key]})"
                    )
        missing = set(first["policies"]) ^ set(other["policies"])
        if missing:
            raise IncomparableResults(f"{pair} were scored under different policies ({sorted(missing)})")


def _label(result: dict[str, Any]) -> str:
    return str(result["guard"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def comparison_table(results: Sequence[dict[str, Any]], policy: str) -> Table:
    """F1 and FPR (x100) of every result per set, per language and overall; best F1 and FPR bold."""
    table = Table(title=f"{' vs '.join(_label(r) for r in results)}, {policy} policy")
    table.add_column("set", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("unsafe", justify="right")
    for result in results:
        for metric in METRICS:
            table.add_column(f"{_label(result)}\n{metric.upper()}", justify="right")
    for title, rows in _rows(results, policy):
        first = rows[0]
        cells = [title, str(first["n"]), str(first["unsafe"])]
        best = {
            "f1": max((r["f1"] for r in rows if r["f1"] is not None), default=None),
            "fpr": min((r["fpr"] for r in rows if r["fpr"] is not None), default=None),
        }
        for row in rows:
            for metric in METRICS:
                text = _pct(row[metric])
                winner = row[metric] is not None and row[metric] == best[metric] and len(rows) > 1
                cells.append(f"[bold]{text}[/bold]" if winner else text)
        table.add_row(*cells)
    return table


def _rows(results: Sequence[dict[str, Any]], policy: str) -> list[tuple[str, list[dict[str, Any]]]]:
    scored = [r["policies"][policy] for r in results]
    rows = [(name, [s["sets"][name] for s in scored]) for name in scored[0]["sets"]]
    rows += [(f"language: {lang}", [s["languages"][lang] for s in scored]) for lang in scored[0]["languages"]]
    rows.append(("overall", [s["overall"] for s in scored]))
    return rows


def plot_comparison(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row of two panels per policy: F1 per set, and FPR on the sets with safe prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(results[0]["policies"])
    figure, axes = plt.subplots(
        len(policies), 2, figsize=(14, 5.5 * len(policies)), squeeze=False, layout="constrained"
    )
    width = 0.8 / len(results)
    for (f1_axis, fpr_axis), policy in zip(axes, policies, strict=True):
        for axis, metric in ((f1_axis, "f1"), (fpr_axis, "fpr")):
            names = [
                name
                for name, rows in _rows(results, policy)
                if not name.startswith("language") and rows[0][metric] is not None
            ]
            for i, result in enumerate(results):
                per_set = result["policies"][policy]
                values = [
                    100 * ((per_set["overall"] if n == "overall" else per_set["sets"][n])[metric] or 0) for n in names
                ]
                axis.bar([x + i * width for x in range(len(names))], values, width, label=_label(result))
            axis.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=30, ha="right")
            axis.set_ylim(0, 100)
            axis.legend(fontsize=8)
            better = "higher" if metric == "f1" else "lower"
            axis.set_title(f"{metric.upper()} per set, {policy} policy ({better} is better)")
    limit = results[0].get("limit")
    sample = "every prompt" if limit is None else f"a seeded sample of {limit} prompts per set"
    figure.suptitle(f"{' vs '.join(_label(r) for r in results)} on the same prompts ({sample})")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
