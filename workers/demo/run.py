"""``streamwarden demo``: the whole pipeline on this machine, shown live.

Starts a real single-node Kafka (KRaft, from the cached Maven jars) and a real Redis, creates the
topics, starts one guard worker process with the configured guard, then streams the scripted
conversations through ``GuardClient.guarded`` at a realistic token rate while a verdict consumer
feeds the live view. The conversations use the ``loose`` policy (controversial is flagged and the
answer goes on; unsafe is cut off), so that answers turning unsafe mid-stream are judged as they
stream. Once the streams end it waits (bounded) until every prompt and chunk has its verdict, then
ends with a summary that sets each outcome against what a good guard would do, and with how far
the verdicts lagged behind the stream. It exits non-zero only if the pipeline misbehaved (a prompt
or a streamed chunk got no verdict at all), not for the guard's own mistakes, which the summary
shows; a machine too slow for the demo's rate is said so plainly, with the measured lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from topics.events import Message, Role
from workers.client import GuardClient, VerdictConsumer
from workers.demo.conversations import SCRIPTS, Kind, Script
from workers.demo.view import DemoView, Row
from workers.infra.kafka import LocalKafka
from workers.infra.redis_server import LocalRedis
from workers.infra.topics import ensure_topics
from workers.runner import WorkerProcess
from workers.settings import Settings

PREFIX = "demo"
POLICY = "loose"
VERDICT_WAIT_S = 60.0
"""How long the demo waits, after the streams end, for the verdicts still on their way."""
SLOW_LAG_MS = 1000.0
"""Verdicts later than this (p99) mean the machine did not keep up with the demo's rate."""


async def fake_llm(text: str, words_per_s: float, rng: random.Random) -> AsyncIterator[str]:
    """Yield ``text`` word by word (spaces kept) with the jitter of a real model's stream."""
    for piece in re.findall(r"\S+\s*", text):
        await asyncio.sleep(rng.uniform(0.5, 1.5) / words_per_s)
        yield piece


async def run_demo(settings: Settings, *, words_per_s: float, run_dir: Path, console: Console) -> int:
    async with contextlib.AsyncExitStack() as stack:
        with console.status("starting Kafka (KRaft) and Redis…"):
            kafka = await stack.enter_async_context(LocalKafka(nodes=1, run_dir=run_dir / "kafka"))
            redis = await stack.enter_async_context(LocalRedis(run_dir=run_dir / "redis"))
            await ensure_topics(kafka.bootstrap_servers, prefix=PREFIX, partitions=4)
        console.print(f"Kafka at {kafka.bootstrap_servers}, Redis at {redis.address}")
        worker = WorkerProcess(
            "worker-1",
            run_dir,
            {
                "kafka.bootstrap_servers": kafka.bootstrap_servers,
                "kafka.topic_prefix": PREFIX,
                "kafka.partitions": 4,
                "redis.url": redis.url,
            },
        )
        with console.status("starting the guard worker (loading the model)…"):
            await stack.enter_async_context(worker)
        client = await stack.enter_async_context(GuardClient(kafka.bootstrap_servers, topic_prefix=PREFIX))
        verdicts = await stack.enter_async_context(
            VerdictConsumer(kafka.bootstrap_servers, group_id=f"demo-view-{uuid.uuid4().hex[:6]}", topic_prefix=PREFIX)
        )
        rows = [Row(script=s, conversation_id=f"{s.name}-{uuid.uuid4().hex[:6]}") for s in SCRIPTS]
        view = DemoView(rows, model_id=_model_id(worker), policy=POLICY)
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            feeder = asyncio.create_task(_feed_verdicts(verdicts, view))
            rng = random.Random(7)
            await asyncio.gather(
                *(_converse(client, view, row, words_per_s, rng, delay=i * 0.3) for i, row in enumerate(rows))
            )
            await _await_verdicts(view, within_s=VERDICT_WAIT_S)
            feeder.cancel()
            live.update(view.render())
        console.print(_summary(view))
        console.print(_lag_report(view, words_per_s))
        problems = _pipeline_problems(view)
        for problem in problems:
            console.print(f"[bold red]pipeline problem:[/] {problem}")
        return 1 if problems else 0


async def _await_verdicts(view: DemoView, *, within_s: float) -> None:
    """Until every prompt and streamed chunk has its verdict, or ``within_s`` has passed."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if all(view.answered(row) for row in view.rows.values()):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # verdicts of the final chunks, which the view does not wait for


def _lag_report(view: DemoView, words_per_s: float) -> str:
    """How far verdicts trailed the stream, and plainly whether this machine kept up."""
    chunks, prompts = np.array(view.chunk_lags_ms), np.array(view.prompt_lags_ms)
    if not chunks.size:
        return "no chunk verdicts were received"
    p50, p99, worst = np.percentile(chunks, 50), np.percentile(chunks, 99), chunks.max()
    line = f"verdicts trailed their chunks by {p50:.0f} ms (p50) / {p99:.0f} ms (p99) / {worst:.0f} ms (max)"
    if prompts.size:
        line += f"; prompt verdicts took {np.percentile(prompts, 50):.0f} ms (p50)"
    rate = words_per_s * len(view.rows)
    if p99 > SLOW_LAG_MS:
        line += (
            f"\n[bold yellow]this machine did not keep up with the demo's ~{rate:.0f} chunks/s:[/] verdicts fell "
            f"up to {worst / 1000:.1f} s behind the stream, so cut-offs came late. Run fewer words per second "
            "(--words-per-second), more workers and partitions, a GPU, or a smaller guard (docs/benchmarks.md)."
        )
    return line


async def _converse(
    client: GuardClient, view: DemoView, row: Row, words_per_s: float, rng: random.Random, delay: float
) -> None:
    await asyncio.sleep(delay)
    cid, mid = row.conversation_id, "turn-1"
    view.on_prompt(cid)
    await client.publish_prompt(cid, mid, [Message(role=Role.USER, content=row.script.prompt)], policy=POLICY)
    guarded = client.guarded(cid, mid, fake_llm(row.script.answer, words_per_s, rng))
    seq = 0
    async for piece in guarded:
        view.on_piece(cid, piece, seq)
        seq += 1
    if guarded.cutoff is None:
        guarded.cutoff = await client.wait_cutoff(cid, mid, within_s=1.0)
    if guarded.cutoff is not None and row.cutoff is None:
        view.on_cutoff(guarded.cutoff)
    row.done = True


async def _feed_verdicts(verdicts: VerdictConsumer, view: DemoView) -> None:
    async for batch in verdicts.batches(timeout_ms=50):
        for verdict in batch:
            view.on_verdict(verdict)


def _model_id(worker: WorkerProcess) -> str:
    return worker.announcement().get("model_id", "?")


def _pipeline_problems(view: DemoView) -> list[str]:
    """Everything that went wrong in the pipeline itself (the guard's judgement is not checked)."""
    problems = []
    for row in view.rows.values():
        if row.prompt is None:
            problems.append(f"{row.script.name}: no verdict on the prompt")
        elif row.verdicts < row.pieces:
            problems.append(f"{row.script.name}: {row.pieces} chunks streamed, {row.verdicts} verdicts")
    return problems


def _summary(view: DemoView) -> Table:
    table = Table(title=f"summary (policy: {POLICY})")
    for col in (
        "conversation",
        "kind",
        "prompt verdict",
        "chunks streamed",
        "outcome",
        "a good guard",
        "cut-off latency",
    ):
        table.add_column(col)
    for row in view.rows.values():
        prompt = f"{row.prompt.risk.value} ({row.prompt.tier})" if row.prompt else "none"
        if row.cutoff is None:
            outcome = "allowed"
        elif row.cutoff.stage.value == "prompt":
            outcome = f"blocked at the prompt ({row.cutoff.category})"
        else:
            outcome = f"cut at token {row.cutoff.token_index} ({row.cutoff.category})"
        latency = f"{row.cut_latency_ms:.0f} ms" if row.cut_latency_ms is not None else "-"
        expected = expected_outcome(row.script)
        agrees = (row.cutoff is None) == (expected == "allowed")
        mark = "[green]agrees[/]" if agrees else "[bold red]guard mistake[/]"
        table.add_row(
            row.script.name, row.script.kind.value, prompt, str(row.pieces), outcome, f"{expected} ({mark})", latency
        )
    return table


def expected_outcome(script: Script) -> str:
    """What a good guard does with this conversation (for the README and the summary)."""
    return {
        Kind.BENIGN: "allowed",
        Kind.LOOKALIKE: "allowed",
        Kind.TURNS_UNSAFE: "cut mid-stream",
        Kind.UNSAFE_PROMPT: "blocked at the prompt",
    }[script.kind]
