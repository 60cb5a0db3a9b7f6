"""``streamwarden bench pipeline``: end-to-end latency and throughput on a real Kafka and Redis.

Two runs under the same offered load (``rate`` chunks/s spread over ``conversations`` streaming
conversations), measured from the same producer and consumer code:

- baseline: a bare relay process (consume the tokens topic as a group, re-publish each record to
  the verdicts topic): the floor that Kafka and two hops impose on this machine;
- pipeline: a real guard worker (engine, Redis state, verdicts, cut-offs) with the planted tiny
  test model, so that chosen conversations turn unsafe at known chunks.

Reported: chunk published -> verdict consumed latency (p50/p99) for both and their difference,
throughput, and for the conversations that turn unsafe the cut-off latency (triggering chunk
published -> ControlEvent received by the producer), split at the moment the worker published the
cut-off, and how many chunks the producer published after the triggering one before it stopped.
The plot also shows latency over the run, warm-up included, so start-up transients stay visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from topics import codec
from topics.errors import DecodeError
from topics.events import Message, Role, Stage, TokenChunkEvent, VerdictEvent
from topics.names import Topic
from workers.client import GuardClient
from workers.engine.planted import make_planted_checkpoint
from workers.infra import LocalKafka, LocalRedis, ensure_topics
from workers.infra.processes import dies_with_parent
from workers.runner import REPO_ROOT, WorkerProcess

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WORDS = ("the", "river", "runs", "past", "old", "stone", "bridges", "and", "quiet", "fields", "toward", "the", "sea")


@dataclass
class Load:
    rates: tuple[float, ...]
    conversations: int
    duration_s: float
    warmup_s: float
    words_per_chunk: int
    unsafe_share: float
    seed: int


@dataclass
class Result:
    name: str
    offered_rate: float
    chunks_published: int
    chunks_measured: int
    throughput_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cutoffs: int = 0
    cutoff_p50_ms: float | None = None
    cutoff_p99_ms: float | None = None
    in_worker_p50_ms: float | None = None  # the verdicts' latency_ms: the worker's receipt -> verdict
    in_worker_p99_ms: float | None = None
    cutoff_at_worker_p50_ms: float | None = None  # triggering chunk published -> worker publishes the cut-off
    cutoff_at_worker_p99_ms: float | None = None
    leaked_max: int | None = None
    leaked_mean: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    timeline: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (s since start, ms)


class Recorder:
    """Publish times of chunks, receipt times of their verdicts (or relayed copies)."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, int], float] = {}
        self.received: dict[tuple[str, int], float] = {}
        self.trigger_wall: dict[str, float] = {}  # conversation -> time.time() its trigger was sent
        self.in_worker: dict[tuple[str, int], float] = {}  # the verdict's own latency_ms (receipt -> verdict)

    def latencies(self, after: float) -> list[float]:
        return [(self.received[k] - t) * 1000 for k, t in self.sent.items() if t >= after and k in self.received]

    def timeline(self, start: float) -> list[tuple[float, float]]:
        """(seconds after ``start`` the chunk was sent, its latency in ms) for every answered chunk."""
        return sorted((t - start, (self.received[k] - t) * 1000) for k, t in self.sent.items() if k in self.received)


async def tail_topic(bootstrap: str, topic: str, on_record: Callable[[bytes, float], None]) -> None:
    """Until cancelled: every new record of ``topic`` to ``on_record(value, perf_counter at receipt)``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    on_record(record.value or b"", now)
    finally:
        await consumer.stop()


async def _consume(bootstrap: str, topic: str, recorder: Recorder, verdicts: bool) -> None:
    def on_record(raw: bytes, now: float) -> None:
        key, in_worker = _key(raw, verdicts)
        if key is not None:
            recorder.received.setdefault(key, now)
        if key is not None and in_worker is not None:
            recorder.in_worker.setdefault(key, in_worker)

    await tail_topic(bootstrap, topic, on_record)


def _key(raw: bytes, verdicts: bool) -> tuple[tuple[str, int] | None, float | None]:
    """The chunk a record answers, and for a verdict the worker's own share of its latency."""
    try:
        if verdicts:
            v = codec.decode(raw, VerdictEvent)
            if v.stage is Stage.RESPONSE and v.seq is not None:
                return (v.conversation_id, v.seq), v.latency_ms
            return None, None
        c = codec.decode(raw, TokenChunkEvent)
    except DecodeError:
        return None, None
    return (c.conversation_id, c.seq), None


def _pieces(rng: random.Random, n: int) -> Iterator[str]:
    while True:
        yield " ".join(rng.choice(WORDS) for _ in range(n)) + " "


async def _conversation(
    client: GuardClient,
    recorder: Recorder,
    load: Load,
    rate: float,
    cid: str,
    trigger_at: int | None,
    stop_at: float,
    leaks: dict[str, int],
) -> None:
    rng = random.Random(cid)
    await client.publish_prompt(cid, "m1", [Message(role=Role.USER, content="Tell me about rivers.")])
    interval = load.conversations / rate
    await asyncio.sleep(rng.uniform(0, interval))  # spread the conversations evenly
    writer = client.stream(cid, "m1")
    pieces = _pieces(rng, load.words_per_chunk)
    next_at = time.perf_counter()
    trigger_seq: int | None = None
    while time.perf_counter() < stop_at:
        if client.cutoff(cid, "m1") is not None:
            break
        text = next(pieces)
        if trigger_at is not None and writer.seq == trigger_at:
            text, trigger_seq = "and then DETONATE it ", writer.seq
        recorder.sent[(cid, writer.seq)] = time.perf_counter()
        if trigger_seq == writer.seq:
            recorder.trigger_wall[cid] = time.time()  # compared with the cut-off record's timestamp
        await writer.send(text)
        if trigger_seq is not None and writer.seq - 1 > trigger_seq:
            leaks[cid] = writer.seq - 1 - trigger_seq
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    if trigger_seq is not None:
        leaks.setdefault(cid, 0)
    await writer.flush()


async def _drive(
    bootstrap: str, prefix: str, load: Load, rate: float, verdict_topic: str, verdicts: bool, name: str
) -> Result:
    recorder = Recorder()
    rng = random.Random(load.seed)
    consumer = asyncio.create_task(_consume(bootstrap, verdict_topic, recorder, verdicts))
    await asyncio.sleep(2.0)  # the consumer joins and positions itself at the end
    # This process carries torch and transformers (it built the planted checkpoint): a full
    # collection walks them all with the event loop stopped (~230 ms here), which would be charged
    # to the pipeline as a latency spike. Nothing allocated from here on needs them scanned.
    gc.collect()
    gc.freeze()
    leaks: dict[str, int] = {}
    async with GuardClient(bootstrap, topic_prefix=prefix) as client:
        start = time.perf_counter()
        stop_at = start + load.warmup_s + load.duration_s
        cids = [f"{name}-{rate:.0f}-{i}-{uuid.uuid4().hex[:6]}" for i in range(load.conversations)]
        triggers = {c: rng.randint(5, 30) if rng.random() < load.unsafe_share and verdicts else None for c in cids}
        await asyncio.gather(
            *(_conversation(client, recorder, load, rate, c, triggers[c], stop_at, leaks) for c in cids)
        )
        await asyncio.sleep(3.0)  # in-flight verdicts
        cut_latencies, at_worker = [], []
        for c, t in triggers.items():
            control = client.cutoff(c, "m1")
            if t is None or control is None or control.seq is None:
                continue
            sent = recorder.sent.get((c, control.seq))
            got = client.cutoff_received_at(c, "m1")
            if sent is not None and got is not None:
                cut_latencies.append((got - sent) * 1000)
            published, trigger_sent = client.cutoff_published_at(c, "m1"), recorder.trigger_wall.get(c)
            if control.seq == t and published is not None and trigger_sent is not None:
                at_worker.append((published - trigger_sent) * 1000)
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    measured = recorder.latencies(after=start + load.warmup_s)
    window = [t for t in recorder.sent.values() if t >= start + load.warmup_s]
    received = [k for k, t in recorder.sent.items() if t >= start + load.warmup_s and k in recorder.received]
    lat = np.array(measured) if measured else np.array([float("nan")])
    result = Result(
        name=name,
        offered_rate=rate,
        chunks_published=len(window),
        chunks_measured=len(received),
        throughput_per_s=len(received) / load.duration_s,
        p50_ms=float(np.percentile(lat, 50)),
        p90_ms=float(np.percentile(lat, 90)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(lat.max()),
        latencies_ms=measured,
        timeline=recorder.timeline(start),
    )
    if len(window) and cut_latencies:
        cut = np.array(cut_latencies)
        result.cutoffs = len(cut_latencies)
        result.cutoff_p50_ms = float(np.percentile(cut, 50))
        result.cutoff_p99_ms = float(np.percentile(cut, 99))
        result.leaked_max = max(leaks.values())
        result.leaked_mean = float(np.mean(list(leaks.values())))
    in_worker = [ms for k, ms in recorder.in_worker.items() if recorder.sent.get(k, 0.0) >= start + load.warmup_s]
    if in_worker:
        result.in_worker_p50_ms = float(np.percentile(in_worker, 50))
        result.in_worker_p99_ms = float(np.percentile(in_worker, 99))
    if at_worker:
        result.cutoff_at_worker_p50_ms = float(np.percentile(at_worker, 50))
        result.cutoff_at_worker_p99_ms = float(np.percentile(at_worker, 99))
    return result


async def run_pipeline_bench(load: Load, *, run_dir: Path, console: Console, partitions: int = 8) -> list[Result]:
    """Every rate of ``load`` through the relay, then through a guard worker; returns all results."""
    results = []
    run_dir = run_dir / time.strftime("%Y%m%d-%H%M%S")  # a fresh broker and Redis every run
    async with LocalKafka(nodes=1, run_dir=run_dir / "kafka") as kafka, LocalRedis(run_dir=run_dir / "redis") as redis:
        bootstrap = kafka.bootstrap_servers
        checkpoint = make_planted_checkpoint(run_dir / "planted")

        prefix = f"relay{uuid.uuid4().hex[:6]}"
        await ensure_topics(bootstrap, prefix=prefix, partitions=partitions)
        relay = await asyncio.create_subprocess_exec(
            *dies_with_parent([sys.executable, "-m", "workers.bench.relay", bootstrap, prefix]), cwd=REPO_ROOT
        )
        try:
            await asyncio.sleep(3.0)
            for rate in load.rates:
                with console.status(f"baseline: bare Kafka relay at {rate:.0f} chunks/s"):
                    verdicts = Topic.VERDICTS.full_name(prefix)
                    results.append(await _drive(bootstrap, prefix, load, rate, verdicts, False, "relay"))
        finally:
            relay.terminate()
            await relay.wait()

        prefix = f"guard{uuid.uuid4().hex[:6]}"
        await ensure_topics(bootstrap, prefix=prefix, partitions=partitions)
        worker = WorkerProcess(
            "bench-worker",
            run_dir,
            {
                "kafka.bootstrap_servers": bootstrap,
                "kafka.topic_prefix": prefix,
                "kafka.partitions": partitions,
                "redis.url": redis.url,
                "guard.backend": "stream",
                "guard.checkpoint": str(checkpoint),
                "guard.allow_test_checkpoint": True,
                "engine.dtype": "float32",  # the planted weights are exact in float32
                "log_level": "WARNING",
            },
        )
        async with worker:
            for rate in load.rates:
                with console.status(f"pipeline: guard worker (planted tiny model) at {rate:.0f} chunks/s"):
                    verdicts = Topic.VERDICTS.full_name(prefix)
                    results.append(await _drive(bootstrap, prefix, load, rate, verdicts, True, "pipeline"))
    return results


def report(results: list[Result], load: Load, console: Console, out: Path | None) -> None:
    table = Table(title=f"chunk published -> verdict consumed, {load.conversations} conversations")
    columns = (
        "run",
        "offered/s",
        "verdicts/s",
        "answered",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cut-off p50/p99 ms",
    )
    for col in (*columns, "leaked chunks"):
        table.add_column(col, justify="right")
    for r in results:
        cut = f"{r.cutoff_p50_ms:.1f} / {r.cutoff_p99_ms:.1f} ({r.cutoffs})" if r.cutoff_p50_ms is not None else "-"
        leaked = f"max {r.leaked_max}, mean {r.leaked_mean:.2f}" if r.leaked_max is not None else "-"
        table.add_row(
            r.name,
            f"{r.offered_rate:.0f}",
            f"{r.throughput_per_s:.0f}",
            f"{r.chunks_measured}/{r.chunks_published}",
            f"{r.p50_ms:.1f}",
            f"{r.p90_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            cut,
            leaked,
        )
    console.print(table)
    by_rate = {(r.name, r.offered_rate): r for r in results}
    for rate in load.rates:
        base, pipe = by_rate.get(("relay", rate)), by_rate.get(("pipeline", rate))
        if base and pipe:
            console.print(
                f"at {rate:.0f} chunks/s the guard adds {pipe.p50_ms - base.p50_ms:.1f} ms at p50 and "
                f"{pipe.p99_ms - base.p99_ms:.1f} ms at p99 over a bare two-hop Kafka relay"
            )
        if pipe and pipe.in_worker_p50_ms is not None:
            console.print(
                f"at {rate:.0f} chunks/s the worker took {pipe.in_worker_p50_ms:.1f} ms (p50) / "
                f"{pipe.in_worker_p99_ms:.1f} ms (p99) from receiving a chunk to its verdict; the rest is Kafka"
            )
        if pipe and pipe.cutoff_at_worker_p50_ms is not None:
            console.print(
                f"at {rate:.0f} chunks/s the worker published the cut-off {pipe.cutoff_at_worker_p50_ms:.1f} ms "
                f"(p50) / {pipe.cutoff_at_worker_p99_ms:.1f} ms (p99) after the triggering chunk was published"
            )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [_row(r) for r in results]
        out.write_text(json.dumps({"load": asdict(load), "results": rows}, indent=2) + "\n", encoding="utf-8")
        _plot(results, load, out.with_suffix(".png"))


def _row(result: Result) -> dict[str, object]:
    """A result as a JSON record, without its per-chunk samples."""
    return {k: v for k, v in asdict(result).items() if k not in ("latencies_ms", "timeline")}


def report_repeats(runs: list[list[Result]], load: Load, console: Console, out: Path | None) -> None:
    """Summarise repeated runs (each a full ``run_pipeline_bench``): how steady each number is."""
    table = Table(title=f"{len(runs)} runs: min / median / max over the runs")
    for col in ("run", "offered/s", "p50 ms", "p99 ms", "cut-off p99 ms", "leaked chunks (max)", "all answered"):
        table.add_column(col, justify="right")

    def spread(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        if not known:
            return "-"
        return f"{min(known):.1f} / {float(np.median(known)):.1f} / {max(known):.1f}"

    for name in ("relay", "pipeline"):
        for rate in load.rates:
            same = [r for results in runs for r in results if r.name == name and r.offered_rate == rate]
            if not same:
                continue
            table.add_row(
                name,
                f"{rate:.0f}",
                spread([r.p50_ms for r in same]),
                spread([r.p99_ms for r in same]),
                spread([r.cutoff_p99_ms for r in same]),
                spread([None if r.leaked_max is None else float(r.leaked_max) for r in same]),
                "yes" if all(r.chunks_measured == r.chunks_published for r in same) else "NO",
            )
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [[_row(r) for r in results] for results in runs]
        out.write_text(json.dumps({"load": asdict(load), "runs": rows}, indent=2) + "\n", encoding="utf-8")
        _plot_repeats(runs, out.with_suffix(".png"))


def _plot_repeats(runs: list[list[Result]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (verdicts, cutoffs) = plt.subplots(1, 2, figsize=(12, 4.5))
    index = np.arange(1, len(runs) + 1)
    rates = sorted({r.offered_rate for results in runs for r in results})
    for rate in rates:
        for name, style in (("relay", "--"), ("pipeline", "-")):
            same = [next((r for r in results if r.name == name and r.offered_rate == rate), None) for results in runs]
            if not any(same):
                continue
            label = f"{name} at {rate:.0f}/s"
            verdicts.plot(index, [r.p50_ms if r else np.nan for r in same], style, marker="o", label=f"{label} p50")
            verdicts.plot(index, [r.p99_ms if r else np.nan for r in same], style, marker="s", label=f"{label} p99")
            if name == "pipeline":
                cut = [r.cutoff_p99_ms if r and r.cutoff_p99_ms is not None else np.nan for r in same]
                cutoffs.plot(index, cut, style, marker="s", label=f"{label} cut-off p99")
    axes = ((verdicts, "chunk published -> verdict consumed (ms)"), (cutoffs, "trigger -> cut-off at producer (ms)"))
    for ax, what in axes:
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("run")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot(results: list[Result], load: Load, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_rate, cdf, over_time) = plt.subplots(1, 3, figsize=(18, 4.5))
    for name, style in (("relay", "--"), ("pipeline", "-")):
        runs = sorted((r for r in results if r.name == name), key=lambda r: r.offered_rate)
        rates = [r.offered_rate for r in runs]
        by_rate.plot(rates, [r.p50_ms for r in runs], style, marker="o", label=f"{name} p50")
        by_rate.plot(rates, [r.p99_ms for r in runs], style, marker="s", label=f"{name} p99")
        if runs:
            data = np.sort(np.array(runs[-1].latencies_ms))
            if len(data):
                cdf.plot(data, np.linspace(0, 1, len(data)), style, label=f"{name} at {runs[-1].offered_rate:.0f}/s")
            _plot_timeline(over_time, runs[-1], style)
    by_rate.set_yscale("log")
    by_rate.set_xlabel("offered chunks per second")
    by_rate.set_ylabel("chunk published -> verdict consumed (ms)")
    by_rate.grid(True, which="both", alpha=0.3)
    by_rate.legend()
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms)")
    cdf.set_ylabel("fraction of chunks")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()
    over_time.axvspan(0, load.warmup_s, color="grey", alpha=0.15, label="warm-up (not in the statistics)")
    over_time.set_yscale("log")
    over_time.set_xlabel("seconds since the load started")
    over_time.set_ylabel("latency of chunks sent in each 0.5 s (ms)")
    over_time.grid(True, which="both", alpha=0.3)
    over_time.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_timeline(ax: Axes, run: Result, style: str, bin_s: float = 0.5) -> None:
    """p50 and max latency of the chunks sent in each ``bin_s`` window of ``run``."""
    if not run.timeline:
        return
    sent, latency = np.array(run.timeline).T
    bins = (sent // bin_s).astype(int)
    edges = np.unique(bins)
    p50 = [np.percentile(latency[bins == b], 50) for b in edges]
    worst = [latency[bins == b].max() for b in edges]
    x = edges * bin_s + bin_s / 2
    label = f"{run.name} at {run.offered_rate:.0f}/s"
    ax.plot(x, p50, style, label=f"{label} p50")
    ax.plot(x, worst, style, alpha=0.5, label=f"{label} max")
