"""``streamwarden bench pipeline --guard default``: the capacity of the guard a fresh install runs.

The planted-model benchmark (``bench.pipeline``) measures the pipeline alone; this one measures the
product: a real Kafka and Redis, one guard worker process with the shipped default guard (the
configured ``guard.backend``, ``cascade`` by default, and ``guard.checkpoint``, the shipped stream
heads by default), and demo-like traffic (``bench.traffic``): real text, one word per chunk,
prompts of mixed lengths, conversations ending and new ones starting, a share of answers turning
unsafe.

Each offered rate runs on its own topics and a freshly started worker (so a backlog left by one
rate never leaks into the next, and every rate also measures the worker's start). Reported per
rate: chunk published -> verdict consumed p50/p99, the worker's own share (the verdicts'
``latency_ms``), prompt published -> prompt verdict p50/p99 and which tier decided, cut-off
latency at the producer and leaked chunks, and whether the verdict lag stayed flat: the
**sustained capacity** is the highest offered rate at which every chunk got its verdict and the
lag at the end of the run was not growing (``Steadiness``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

from topics import codec
from topics.errors import DecodeError
from topics.events import Message, Role, Stage, VerdictEvent
from topics.names import Topic
from workers.bench.pipeline import tail_topic
from workers.bench.traffic import TrafficSource
from workers.client import GuardClient
from workers.infra import LocalKafka, LocalRedis, ensure_topics
from workers.runner import WorkerProcess

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MESSAGE = "m1"


@dataclass(frozen=True)
class ShippedLoad:
    """What the benchmark offers the worker."""

    rates: tuple[float, ...]
    """Offered chunks per second, over all conversations."""
    words_per_s: float
    """How fast each conversation streams (one word per chunk); rate / words_per_s conversations
    stream at once, a finished one replaced by a new one."""
    duration_s: float
    warmup_s: float
    unsafe_share: float
    max_prompt_words: int
    policy: str
    seed: int
    worker_settings: Mapping[str, str] = field(default_factory=dict)
    """Extra settings of the worker (dotted keys), e.g. another ``guard.checkpoint``."""


@dataclass
class ShippedResult:
    offered_rate: float
    model_id: str
    worker_start_s: float
    conversations: int
    ramp_s: float
    chunks_published: int
    chunks_answered: int
    published_per_s: float
    p50_ms: float
    p99_ms: float
    in_worker_p50_ms: float | None
    in_worker_p99_ms: float | None
    prompts: int
    prompts_answered: int
    prompt_p50_ms: float | None
    prompt_p99_ms: float | None
    prompt_tiers: dict[str, int]
    cutoffs: int
    cutoff_p50_ms: float | None
    cutoff_p99_ms: float | None
    leaked_max: int | None
    leaked_over_one: int
    """Cut-off messages with more than one chunk published after the triggering one."""
    early_p50_ms: float
    late_p50_ms: float
    sustained: bool
    timeline: list[tuple[float, float]] = field(default_factory=list, repr=False)


class Steadiness:
    """Whether a run kept up: the chunks sent in the last quarter of the measured window were
    answered no slower (p50) than ``factor`` x those of the first quarter plus ``slack_ms`` (a
    worker that cannot keep up builds a queue, so its late chunks wait longer), and within
    ``ceiling_ms`` (a backlog of seconds that is only draining is not keeping up either)."""

    factor = 1.5
    slack_ms = 20.0
    ceiling_ms = 1000.0

    @classmethod
    def flat(cls, early_p50_ms: float, late_p50_ms: float) -> bool:
        return late_p50_ms <= min(cls.factor * early_p50_ms + cls.slack_ms, cls.ceiling_ms)


class _Recorder:
    def __init__(self) -> None:
        self.chunk_sent: dict[tuple[str, int], float] = {}
        self.chunk_answered: dict[tuple[str, int], float] = {}
        self.in_worker: dict[tuple[str, int], float] = {}
        self.prompt_sent: dict[str, float] = {}
        self.prompt_answered: dict[str, float] = {}
        self.prompt_tier: dict[str, str] = {}
        self.last_seq: dict[str, int] = {}  # highest seq the producer published per conversation
        self.cut_received: dict[str, float] = {}  # conversation -> when its cut-off reached the producer
        self.cut_seq: dict[str, int] = {}  # conversation -> the chunk its cut-off names

    def on_verdict(self, verdict: VerdictEvent, now: float) -> None:
        cid = verdict.conversation_id
        if verdict.stage is Stage.PROMPT:
            self.prompt_answered.setdefault(cid, now)
            self.prompt_tier.setdefault(cid, verdict.tier)
        elif verdict.seq is not None:
            key = (cid, verdict.seq)
            self.chunk_answered.setdefault(key, now)
            self.in_worker.setdefault(key, verdict.latency_ms)


async def _consume(bootstrap: str, topic: str, recorder: _Recorder) -> None:
    def on_record(raw: bytes, now: float) -> None:
        with contextlib.suppress(DecodeError):
            recorder.on_verdict(codec.decode(raw, VerdictEvent), now)

    await tail_topic(bootstrap, topic, on_record)


async def _session(
    client: GuardClient,
    recorder: _Recorder,
    traffic: TrafficSource,
    *,
    name: str,
    words_per_s: float,
    policy: str,
    stop_at: float,
    rng: random.Random,
    ramp_s: float,
) -> None:
    """One user after another on this slot: a prompt, its answer word by word, then the next."""
    # Slots start spread over the warm-up, and each one's first answer is cut short at a random
    # point, so that prompts arrive at the steady rate of conversations ending and starting
    # rather than all at once (a burst of long prompts would otherwise be what is measured).
    await asyncio.sleep(rng.uniform(0, ramp_s))
    turn_index = 0
    while time.perf_counter() < stop_at:
        turn = next(traffic)
        if turn_index == 0:
            turn = dataclasses.replace(turn, chunks=turn.chunks[: rng.randint(1, len(turn.chunks))])
        cid = f"{name}-{turn_index}-{uuid.uuid4().hex[:6]}"
        turn_index += 1
        recorder.prompt_sent[cid] = time.perf_counter()
        await client.publish_prompt(cid, MESSAGE, [Message(role=Role.USER, content=turn.prompt)], policy=policy)
        writer = client.stream(cid, MESSAGE)
        next_at = time.perf_counter()
        finished = True
        for piece in turn.chunks:
            if client.cutoff(cid, MESSAGE) is not None or time.perf_counter() >= stop_at:
                finished = False
                break
            recorder.chunk_sent[(cid, writer.seq)] = time.perf_counter()
            recorder.last_seq[cid] = writer.seq
            await writer.send(piece)
            next_at += rng.uniform(0.5, 1.5) / words_per_s
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if finished and client.cutoff(cid, MESSAGE) is None:
            recorder.chunk_sent[(cid, writer.seq)] = time.perf_counter()
            recorder.last_seq[cid] = writer.seq
            await writer.finish()
        else:
            await writer.flush()


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def _drive(bootstrap: str, prefix: str, load: ShippedLoad, rate: float) -> tuple[_Recorder, dict[str, float]]:
    recorder = _Recorder()
    consumer = asyncio.create_task(_consume(bootstrap, Topic.VERDICTS.full_name(prefix), recorder))
    await asyncio.sleep(2.0)  # the consumer joins and positions itself at the end
    gc.collect()
    gc.freeze()  # nothing allocated from here on needs the start-up heap scanned (see bench.pipeline)
    traffic = TrafficSource(load.seed, unsafe_share=load.unsafe_share, max_prompt_words=load.max_prompt_words)
    rng = random.Random(load.seed)
    async with GuardClient(bootstrap, topic_prefix=prefix) as client:
        start = time.perf_counter()
        slots = max(1, round(rate / load.words_per_s))
        words_per_s = rate / slots
        # Starting every slot at once would put the prompts of a whole answer's duration into the
        # first seconds; slots start spread over the mean answer's duration instead (with the first
        # answers cut short at random, prompts then arrive at the steady rate from the start).
        ramp_s = traffic.mean_chunks() / words_per_s
        stop_at = start + ramp_s + load.warmup_s + load.duration_s
        await asyncio.gather(
            *(
                _session(
                    client,
                    recorder,
                    traffic,
                    name=f"c{slot}",
                    words_per_s=words_per_s,
                    policy=load.policy,
                    stop_at=stop_at,
                    rng=random.Random(rng.random()),
                    ramp_s=ramp_s,
                )
                for slot in range(slots)
            )
        )
        await _drain(recorder, within_s=10.0)
        for cid in recorder.prompt_sent:
            control = client.cutoff(cid, MESSAGE)
            received = client.cutoff_received_at(cid, MESSAGE)
            if control is not None and control.seq is not None and received is not None:
                recorder.cut_received[cid], recorder.cut_seq[cid] = received, control.seq
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    timing = {
        "start": start,
        "measure_from": start + ramp_s + load.warmup_s,
        "stop": stop_at,
        "conversations": float(slots),
        "ramp_s": ramp_s,
    }
    return recorder, timing


async def _drain(recorder: _Recorder, *, within_s: float) -> None:
    """Wait until every published chunk and prompt has its verdict, or ``within_s`` has passed."""
    deadline = time.perf_counter() + within_s
    while time.perf_counter() < deadline:
        if len(recorder.chunk_answered) >= len(recorder.chunk_sent) and len(recorder.prompt_answered) >= len(
            recorder.prompt_sent
        ):
            return
        await asyncio.sleep(0.2)


def summarise(
    recorder: _Recorder, timing: Mapping[str, float], rate: float, model_id: str, start_s: float
) -> ShippedResult:
    """The statistics of one rate's run (chunks and prompts sent after the warm-up)."""
    begin, stop = timing["measure_from"], timing["stop"]
    chunks = {k: t for k, t in recorder.chunk_sent.items() if t >= begin}
    answered = {k: recorder.chunk_answered[k] - t for k, t in chunks.items() if k in recorder.chunk_answered}
    latencies = [s * 1000 for s in answered.values()]
    quarter = (stop - begin) / 4
    early = [
        (recorder.chunk_answered[k] - t) * 1000 for k, t in chunks.items() if t < begin + quarter and k in answered
    ]
    late = [(recorder.chunk_answered[k] - t) * 1000 for k, t in chunks.items() if t >= stop - quarter and k in answered]
    early_p50 = _percentile(early, 50) or float("nan")
    late_p50 = _percentile(late, 50) or float("nan")
    prompts = {c: t for c, t in recorder.prompt_sent.items() if t >= begin}
    prompt_lat = [(recorder.prompt_answered[c] - t) * 1000 for c, t in prompts.items() if c in recorder.prompt_answered]
    tiers: dict[str, int] = {}
    for cid in prompts:
        if cid in recorder.prompt_tier:
            tiers[recorder.prompt_tier[cid]] = tiers.get(recorder.prompt_tier[cid], 0) + 1
    cut_lat, leaks = [], []
    for cid, seq in recorder.cut_seq.items():
        sent = recorder.chunk_sent.get((cid, seq))
        if sent is None or sent < begin:
            continue
        cut_lat.append((recorder.cut_received[cid] - sent) * 1000)
        leaks.append(max(0, recorder.last_seq.get(cid, seq) - seq))
    in_worker = [recorder.in_worker[k] for k in answered if k in recorder.in_worker]
    all_answered = len(answered) == len(chunks) and all(c in recorder.prompt_answered for c in prompts)
    return ShippedResult(
        offered_rate=rate,
        model_id=model_id,
        worker_start_s=start_s,
        conversations=int(timing.get("conversations", 0)),
        ramp_s=timing.get("ramp_s", 0.0),
        chunks_published=len(chunks),
        chunks_answered=len(answered),
        published_per_s=len(chunks) / (stop - begin),
        p50_ms=_percentile(latencies, 50) or float("nan"),
        p99_ms=_percentile(latencies, 99) or float("nan"),
        in_worker_p50_ms=_percentile(in_worker, 50),
        in_worker_p99_ms=_percentile(in_worker, 99),
        prompts=len(prompts),
        prompts_answered=len(prompt_lat),
        prompt_p50_ms=_percentile(prompt_lat, 50),
        prompt_p99_ms=_percentile(prompt_lat, 99),
        prompt_tiers=tiers,
        cutoffs=len(cut_lat),
        cutoff_p50_ms=_percentile(cut_lat, 50),
        cutoff_p99_ms=_percentile(cut_lat, 99),
        leaked_max=max(leaks) if leaks else None,
        leaked_over_one=sum(1 for n in leaks if n > 1),
        early_p50_ms=early_p50,
        late_p50_ms=late_p50,
        sustained=all_answered and Steadiness.flat(early_p50, late_p50),
        timeline=sorted(
            (t - timing["start"], (recorder.chunk_answered[k] - t) * 1000)
            for k, t in recorder.chunk_sent.items()
            if k in recorder.chunk_answered
        ),
    )


async def run_shipped_bench(
    load: ShippedLoad, *, run_dir: Path, console: Console, partitions: int = 8
) -> list[ShippedResult]:
    """Every rate of ``load`` against a fresh worker running the configured guard."""
    results = []
    run_dir = run_dir / time.strftime("%Y%m%d-%H%M%S")
    async with LocalKafka(nodes=1, run_dir=run_dir / "kafka") as kafka, LocalRedis(run_dir=run_dir / "redis") as redis:
        bootstrap = kafka.bootstrap_servers
        for rate in load.rates:
            prefix = f"shipped{uuid.uuid4().hex[:6]}"
            await ensure_topics(bootstrap, prefix=prefix, partitions=partitions)
            worker = WorkerProcess(
                f"worker-{rate:.0f}",
                run_dir,
                {
                    "kafka.bootstrap_servers": bootstrap,
                    "kafka.topic_prefix": prefix,
                    "kafka.partitions": partitions,
                    "redis.url": redis.url,
                    "log_level": "WARNING",
                    **load.worker_settings,
                },
            )
            with console.status(f"starting a guard worker for {rate:.0f} chunks/s"):
                began = time.perf_counter()
                await worker.start()
                start_s = time.perf_counter() - began
            model_id = worker.announcement().get("model_id", "?")
            try:
                with console.status(f"{model_id} at {rate:.0f} chunks/s"):
                    recorder, timing = await _drive(bootstrap, prefix, load, rate)
            finally:
                await worker.stop()
            result = summarise(recorder, timing, rate, model_id, start_s)
            results.append(result)
            console.print(_line(result))
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.0f}"


def _line(r: ShippedResult) -> str:
    state = "[green]flat[/]" if r.sustained else "[bold red]falling behind[/]"
    return (
        f"{r.offered_rate:.0f} chunks/s offered ({r.published_per_s:.0f} published): chunk p50 {_ms(r.p50_ms)} / "
        f"p99 {_ms(r.p99_ms)} ms, prompt p50 {_ms(r.prompt_p50_ms)} ms, lag {_ms(r.early_p50_ms)} -> "
        f"{_ms(r.late_p50_ms)} ms: {state}"
    )


def capacity(results: list[ShippedResult]) -> float | None:
    """The highest offered rate that was sustained (None if none was)."""
    sustained = [r.offered_rate for r in results if r.sustained]
    return max(sustained) if sustained else None


def report(results: list[ShippedResult], load: ShippedLoad, console: Console, out: Path | None) -> None:
    model = results[0].model_id if results else "?"
    table = Table(title=f"{model}: conversations at {load.words_per_s:g} words/s, one word per chunk")
    table.add_column("offered chunks/s")
    for r in results:
        table.add_column(f"{r.offered_rate:.0f}", justify="right")
    rows: tuple[tuple[str, Callable[[ShippedResult], str]], ...] = (
        ("conversations at once", lambda r: str(r.conversations)),
        ("published chunks/s", lambda r: f"{r.published_per_s:.0f}"),
        ("chunks answered", lambda r: f"{r.chunks_answered}/{r.chunks_published}"),
        ("chunk p50 / p99 ms", lambda r: f"{_ms(r.p50_ms)} / {_ms(r.p99_ms)}"),
        ("  in the worker", lambda r: f"{_ms(r.in_worker_p50_ms)} / {_ms(r.in_worker_p99_ms)}"),
        ("prompt p50 / p99 ms", lambda r: f"{_ms(r.prompt_p50_ms)} / {_ms(r.prompt_p99_ms)}"),
        ("prompts answered", lambda r: f"{r.prompts_answered}/{r.prompts}"),
        ("  decided by", lambda r: ", ".join(f"{t} {n}" for t, n in sorted(r.prompt_tiers.items())) or "-"),
        ("cut-offs", lambda r: str(r.cutoffs)),
        ("cut-off p50 / p99 ms", lambda r: f"{_ms(r.cutoff_p50_ms)} / {_ms(r.cutoff_p99_ms)}"),
        ("leaked max (cuts > 1)", lambda r: "-" if r.leaked_max is None else f"{r.leaked_max} ({r.leaked_over_one})"),
        ("lag p50 first -> last 1/4", lambda r: f"{_ms(r.early_p50_ms)} -> {_ms(r.late_p50_ms)}"),
        ("sustained", lambda r: "yes" if r.sustained else "[bold red]NO[/]"),
        ("worker start s", lambda r: f"{r.worker_start_s:.1f}"),
    )
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    console.print(table)
    best = capacity(results)
    console.print(
        f"sustained capacity of {model}: "
        + (f"{best:.0f} chunks/s" if best is not None else "below the lowest offered rate")
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        records = [{k: v for k, v in asdict(r).items() if k != "timeline"} for r in results]
        record = {"load": asdict(load), "capacity_chunks_per_s": best, "results": records}
        out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        _plot(results, load, out.with_suffix(".png"))
        console.print(f"wrote {out} and {out.with_suffix('.png')}")


def _plot(results: list[ShippedResult], load: ShippedLoad, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_rate, over_time) = plt.subplots(1, 2, figsize=(14, 4.8))
    rates = [r.offered_rate for r in results]
    by_rate.plot(rates, [r.p50_ms for r in results], marker="o", label="chunk p50")
    by_rate.plot(rates, [r.p99_ms for r in results], marker="s", label="chunk p99")
    by_rate.plot(rates, [r.prompt_p50_ms or np.nan for r in results], "--", marker="o", label="prompt p50")
    by_rate.plot(rates, [r.cutoff_p99_ms or np.nan for r in results], ":", marker="^", label="cut-off p99")
    by_rate.axhline(100, color="grey", lw=0.8, ls="--")
    by_rate.set_yscale("log")
    by_rate.set_xlabel("offered chunks per second")
    by_rate.set_ylabel("latency (ms)")
    by_rate.set_title(results[0].model_id if results else "")
    by_rate.grid(True, which="both", alpha=0.3)
    by_rate.legend(fontsize="small")
    for r in results:
        _plot_timeline(over_time, r)
    ramp = max((r.ramp_s for r in results), default=0.0)
    over_time.axvspan(0, ramp + load.warmup_s, color="grey", alpha=0.15, label="ramp and warm-up (not counted)")
    over_time.set_yscale("log")
    over_time.set_xlabel("seconds since the load started")
    over_time.set_ylabel("chunk latency, p50 per 1 s (ms)")
    over_time.grid(True, which="both", alpha=0.3)
    over_time.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_timeline(ax: Axes, run: ShippedResult, bin_s: float = 1.0) -> None:
    if not run.timeline:
        return
    sent, latency = np.array(run.timeline).T
    bins = (sent // bin_s).astype(int)
    edges = np.unique(bins)
    ax.plot(
        edges * bin_s + bin_s / 2,
        [np.percentile(latency[bins == b], 50) for b in edges],
        label=f"{run.offered_rate:.0f}/s",
    )
