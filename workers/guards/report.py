"""Evaluation results as rich tables, a JSON file and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from workers.guards.metrics import STREAM_BINS
from workers.guards.published import PUBLISHED_PROMPT_F1

if TYPE_CHECKING:
    from rich.console import Console


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _published(policy: str, dataset: str) -> str:
    values = [PUBLISHED_PROMPT_F1[model][policy].get(dataset) for model in PUBLISHED_PROMPT_F1]
    return "-" if values[0] is None else " / ".join(f"{v:.1f}" for v in values if v is not None)


def sets_table(result: dict[str, Any], policy: str) -> Table:
    """Per-set precision, recall, F1, FPR (x100) of one policy, with published Stream F1."""
    table = Table(title=f"{result['guard']} ({result['model']['model_id']}), {policy} policy")
    for column in ("set", "n", "unsafe", "P", "R", "F1", "FPR", "prefilter share", "Stream 0.6B/4B/8B F1"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, row in result["policies"][policy]["sets"].items():
        tiers = result["tiers"][name]
        share = tiers.get("prefilter", 0) / max(1, sum(tiers.values()))
        table.add_row(
            name,
            str(row["n"]),
            str(row["unsafe"]),
            _pct(row["precision"]),
            _pct(row["recall"]),
            _pct(row["f1"]),
            _pct(row["fpr"]),
            _pct(share),
            _published(policy, name),
        )
    return table


def languages_table(result: dict[str, Any], policy: str) -> Table:
    table = Table(title=f"per language, {policy} policy (all sets pooled)")
    for column in ("language", "n", "unsafe", "P", "R", "F1", "FPR"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for language, row in result["policies"][policy]["languages"].items():
        table.add_row(
            language,
            str(row["n"]),
            str(row["unsafe"]),
            *(_pct(row[k]) for k in ("precision", "recall", "f1", "fpr")),
        )
    return table


def categories_table(result: dict[str, Any], policy: str) -> Table:
    table = Table(title=f"per category of unsafe prompts, {policy} policy")
    for column in ("category", "n", "recall", "category accuracy of caught"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for category, row in result["policies"][policy]["categories"].items():
        table.add_row(category, str(row["n"]), _pct(row["recall"]), _pct(row["category_accuracy"]))
    return table


def decisions_table(result: dict[str, Any]) -> Table:
    """The prompts the guard marked confident (``decided``) and its errors among them."""
    table = Table(title="prompts the guard marked decided, and its errors among them")
    for column in ("set", "prompts", "decided", "blocked", "blocked, not unsafe", "allowed", "allowed, not safe"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, row in result["decisions"].items():
        table.add_row(
            name,
            *(
                str(row[k])
                for k in ("prompts", "decided", "blocked", "blocked_not_unsafe", "allowed", "allowed_not_safe")
            ),
        )
    return table


def responses_table(result: dict[str, Any], policy: str) -> Table:
    """Streamed responses of one policy: response-level P/R/F1/FPR and where the cut-offs fell."""
    streamed = result["responses"]
    table = Table(
        title=f"streamed responses, {policy} policy ({streamed['chunk_tokens']}-token chunks): "
        "cut-offs of harmful responses by tokens after the first harmful sentence"
    )
    columns = ("set", "kind", "n", "harmful", "P", "R", "F1", "FPR", *STREAM_BINS, "within 32", "median delay")
    for column in columns:
        table.add_column(column, justify="left" if column in ("set", "kind") else "right")
    for name, kinds in streamed["policies"][policy].items():
        for kind, row in kinds.items():
            responses, timing = row["responses"], row["timing"]
            delay = timing["after_first_harmful"]["median"]
            table.add_row(
                name,
                kind,
                str(responses["n"]),
                str(responses["unsafe"]),
                *(_pct(responses[k]) for k in ("precision", "recall", "f1", "fpr")),
                *(str(timing["bins"][b]) for b in STREAM_BINS),
                _pct(timing["within_32"]),
                "-" if delay is None else f"{delay:.0f}",
            )
    return table


def print_report(result: dict[str, Any], console: Console) -> None:
    for policy in result["policies"]:
        console.print(sets_table(result, policy))
        console.print(languages_table(result, policy))
        console.print(categories_table(result, policy))
    console.print(decisions_table(result))
    if result.get("responses", {}).get("measured"):
        for policy in result["responses"]["policies"]:
            console.print(responses_table(result, policy))


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``quality_<guard>_{sets,languages,categories}.png`` (and ``_responses.png`` when
    responses were streamed); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    guard, policies = result["guard"], list(result["policies"])
    paths = []
    drawings = [("sets", _draw_sets), ("languages", _draw_languages), ("categories", _draw_categories)]
    if result.get("responses", {}).get("measured"):
        drawings.append(("responses", _draw_responses))
    for name, draw in drawings:
        figure = draw(plt, result, policies)
        path = out_dir / f"quality_{guard}_{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _bars(axis: Any, labels: list[str], series: Mapping[str, Sequence[float]]) -> float:
    """Grouped bars; returns the offset of each group's centre from its index."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        axis.bar([x + i * width for x in range(len(labels))], values, width, label=label)
    centre = 0.4 - width / 2
    axis.set_xticks([x + centre for x in range(len(labels))], labels, rotation=30, ha="right")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=8)
    return centre


def _draw_sets(plt: Any, result: dict[str, Any], policies: list[str]) -> Any:
    names = list(result["sets"])
    figure, (f1_axis, fpr_axis) = plt.subplots(1, 2, figsize=(13, 4.5))
    f1 = {p: [100 * (result["policies"][p]["sets"][n]["f1"] or 0) for n in names] for p in policies}
    centre = _bars(f1_axis, names, f1)
    for model, marker in zip(PUBLISHED_PROMPT_F1, ("v", "o", "^"), strict=False):
        published = PUBLISHED_PROMPT_F1[model]["strict"]
        points = [(i + centre, published[n]) for i, n in enumerate(names) if n in published]
        if points:
            f1_axis.scatter(
                *zip(*points, strict=True), marker=marker, color="black", s=18, label=f"{model} strict (pub.)"
            )
    f1_axis.legend(fontsize=7, loc="lower left")
    f1_axis.set_title(f"{result['guard']}: F1 per evaluation set")
    with_safe = [n for n in names if result["policies"][policies[0]]["sets"][n]["fpr"] is not None]
    fpr = {p: [100 * result["policies"][p]["sets"][n]["fpr"] for n in with_safe] for p in policies}
    _bars(fpr_axis, with_safe, fpr)
    fpr_axis.set_title("false-positive rate on the safe prompts of each set")
    return figure


def _draw_languages(plt: Any, result: dict[str, Any], policies: list[str]) -> Any:
    figure, axis = plt.subplots(figsize=(7, 4))
    languages = list(result["policies"][policies[0]]["languages"])
    series = {}
    for policy in policies:
        rows = result["policies"][policy]["languages"]
        series[f"F1 {policy}"] = [100 * (rows[lang]["f1"] or 0) for lang in languages]
        series[f"FPR {policy}"] = [100 * (rows[lang]["fpr"] or 0) for lang in languages]
    _bars(axis, languages, series)
    axis.set_title(f"{result['guard']}: per language (all evaluation sets pooled)")
    return figure


def _draw_categories(plt: Any, result: dict[str, Any], policies: list[str]) -> Any:
    figure, axis = plt.subplots(figsize=(9, 4))
    categories = list(result["policies"][policies[0]]["categories"])
    series = {
        f"recall {policy}": [100 * result["policies"][policy]["categories"][c]["recall"] for c in categories]
        for policy in policies
    }
    _bars(axis, categories, series)
    axis.set_title(f"{result['guard']}: recall per category of unsafe prompts")
    return figure


def _draw_responses(plt: Any, result: dict[str, Any], policies: list[str]) -> Any:
    """Per policy, one stacked bar per (set, kind): shares of harmful responses in each bin."""
    streamed = result["responses"]["policies"]
    figure, axes = plt.subplots(1, len(policies), figsize=(5 + 5 * len(policies), 4.5), squeeze=False, sharey=True)
    colours = plt.get_cmap("RdYlGn_r")([i / (len(STREAM_BINS) - 1) for i in range(len(STREAM_BINS))])
    for axis, policy in zip(axes[0], policies, strict=True):
        rows = [
            (f"{name} ({kind})", row["timing"])
            for name, kinds in streamed[policy].items()
            for kind, row in kinds.items()
        ]
        rows = [(label, timing) for label, timing in rows if timing["n"]]
        left = [0.0] * len(rows)
        for colour, name in zip(colours, STREAM_BINS, strict=True):
            shares = [100 * timing["bins"][name] / timing["n"] for _, timing in rows]
            axis.barh([label for label, _ in rows], shares, left=left, color=colour, label=name)
            left = [a + b for a, b in zip(left, shares, strict=True)]
        axis.set_xlim(0, 100)
        axis.set_xlabel("% of harmful responses")
        axis.set_title(f"{result['guard']}: where the cut-off fell ({policy})")
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure
