"""The pipeline benchmark's reports: what a run and a series of runs write."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from workers.bench.pipeline import Load, Result, report, report_repeats

LOAD = Load(
    rates=(1000.0,),
    conversations=10,
    duration_s=1.0,
    warmup_s=0.5,
    words_per_chunk=3,
    unsafe_share=0.2,
    seed=0,
)


def _result(name: str, p99: float, cut_p99: float | None, answered: int = 100) -> Result:
    return Result(
        name=name,
        offered_rate=1000.0,
        chunks_published=100,
        chunks_measured=answered,
        throughput_per_s=float(answered),
        p50_ms=p99 / 2,
        p90_ms=p99 * 0.8,
        p99_ms=p99,
        max_ms=p99 * 1.5,
        cutoffs=2 if cut_p99 is not None else 0,
        cutoff_p50_ms=None if cut_p99 is None else cut_p99 / 2,
        cutoff_p99_ms=cut_p99,
        leaked_max=None if cut_p99 is None else 0,
        leaked_mean=None if cut_p99 is None else 0.0,
        latencies_ms=[1.0, 2.0, 3.0],
        timeline=[(0.1, 1.0), (0.6, 2.0), (0.9, 3.0)],
    )


def test_one_run_writes_its_record_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    report([_result("relay", 8.0, None), _result("pipeline", 40.0, 30.0)], LOAD, Console(file=None, quiet=True), out)
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["relay", "pipeline"]
    assert "latencies_ms" not in data["results"][0] and "timeline" not in data["results"][0]
    assert data["results"][1]["cutoff_p99_ms"] == 30.0
    assert out.with_suffix(".png").stat().st_size > 0


def test_repeated_runs_keep_every_run_and_flag_unanswered_chunks(tmp_path: Path) -> None:
    out = tmp_path / "repeat.json"
    runs = [
        [_result("relay", 8.0, None), _result("pipeline", 40.0, 30.0)],
        [_result("relay", 9.0, None), _result("pipeline", 60.0, 1500.0, answered=99)],
    ]
    console = Console(record=True, width=200)
    report_repeats(runs, LOAD, console, out)
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 2
    assert [r["cutoff_p99_ms"] for r in (run[1] for run in data["runs"])] == [30.0, 1500.0]
    text = console.export_text()
    assert "30.0 / 765.0 / 1500.0" in text, "min / median / max of the cut-off p99 over the runs"
    assert "NO" in text, "a run with an unanswered chunk must show"
    assert out.with_suffix(".png").stat().st_size > 0
