"""Presenting an engine benchmark: a rich table, the JSON record and the PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from workers.bench.engine import BenchResult


def result_table(result: BenchResult) -> Table:
    """Throughput, chunk latency and the ratio to the reference loop for every measured point.

    Columns: attention path, concurrent conversations, moderated tokens/s, ratio to the reference
    loop, chunk latency p50 / p99, rows per forward, evictions, peak GPU memory.
    """
    reference = result.reference
    title = (
        f"engine vs reference loop: {model_name(result.config)} on {result.machine.get('gpu', result.config['device'])}"
        f" ({result.config['dtype']}); reference {reference.tokens_per_s:,.1f} tokens/s, "
        f"chunk p50 {reference.chunk_p50_ms:,.1f} ms"
    )
    table = Table(title=title)
    for column in ("attention", "conv", "tokens/s", "x ref", "p50 ms", "p99 ms", "rows/fwd", "evicted", "GPU MiB"):
        table.add_column(column, justify="right")
    for point in result.points:
        peak = "-" if point.peak_memory_bytes is None else f"{point.peak_memory_bytes / 2**20:,.0f}"
        table.add_row(
            point.attention,
            str(point.concurrency),
            f"{point.tokens_per_s:,.0f}",
            f"{point.ratio_vs_reference:,.1f}",
            f"{point.chunk_p50_ms:,.2f}",
            f"{point.chunk_p99_ms:,.2f}",
            f"{point.rows_per_forward:,.1f}",
            str(point.evictions),
            peak,
        )
    return table


def write_json(result: BenchResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def write_plot(result: BenchResult, path: Path) -> Path:
    """Throughput and p99 chunk latency against concurrency, one line per attention path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for attention in sorted({p.attention for p in result.points}):
        points = sorted((p for p in result.points if p.attention == attention), key=lambda p: p.concurrency)
        concurrency = [p.concurrency for p in points]
        throughput.plot(concurrency, [p.tokens_per_s for p in points], marker="o", label=f"engine ({attention})")
        latency.plot(concurrency, [p.chunk_p99_ms for p in points], marker="o", label=f"engine ({attention})")
    concurrencies = sorted({p.concurrency for p in result.points})
    throughput.plot(
        concurrencies,
        [result.reference.tokens_per_s] * len(concurrencies),
        linestyle="--",
        color="grey",
        label="reference loop",
    )
    throughput.set(xscale="log", yscale="log", xlabel="concurrent conversations", ylabel="moderated tokens/s")
    latency.set(xscale="log", yscale="log", xlabel="concurrent conversations", ylabel="chunk latency p99 (ms)")
    for axis in (throughput, latency):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    device = result.machine.get("gpu", result.config["device"])
    figure.suptitle(
        f"streamwarden engine, {model_name(result.config)} ({result.config['dtype']}) on {device}, "
        f"{result.config['chunk_tokens']}-token chunks of {result.config['answer_tokens']}-token answers"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def model_name(config: dict[str, Any]) -> str:
    """What was measured: the random-weight size, or the checkpoint, with its cut and quantisation."""
    name = str(config.get("checkpoint") or config["size"])
    if config.get("layers") is not None:
        name += f", first {config['layers']} layers"
    if config.get("quantize", "none") != "none":
        name += f", {config['quantize']}"
    return name
