"""The archive keeps every record of the verdicts, control, prompts and tokens topics exactly once,
across SIGKILLs.

Real broker, real ``python -m workers archive`` processes: the first is SIGKILLed mid-way (some files
written, records left), a leftover temporary file is planted as a kill mid-write would leave it,
the same command is started again until it has caught up, and then a third archiver in a fresh
consumer group (no committed offsets at all) must resume from the files alone. The files are then
checked against the topics: every (topic, partition, offset) exactly once, each row the record
produced there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import TopicsFactory
from topics import codec
from topics.events import (
    Action,
    ControlEvent,
    Message,
    PromptEvent,
    Risk,
    Role,
    Stage,
    TokenChunkEvent,
    VerdictEvent,
)
from topics.names import Topic
from workers.archive import FileName, Table, scan
from workers.infra.processes import dies_with_parent
from workers.runner import REPO_ROOT, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 2
VERDICTS = 6_000
CUTOFFS = 300
PROMPTS = 100
CHUNKS = 1_500
START_MS = 1_767_222_000_000  # 2025-12-31T23:00:00Z: the verdicts span three UTC days
STEP_MS = 20_000

Coordinates = tuple[Topic, int, int]  # topic, partition, offset


@dataclass
class Produced:
    """What the test put on the topics, by coordinates: an event id, or None for an undecodable record."""

    names: dict[Topic, str]
    records: dict[Coordinates, str | None] = field(default_factory=dict)

    def ends(self) -> dict[tuple[Topic, int], int]:
        """The last offset of every partition produced to."""
        last: dict[tuple[Topic, int], int] = {}
        for topic, partition, offset in self.records:
            last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
        return last


def _verdict(n: int) -> VerdictEvent:
    return VerdictEvent(
        event_id=f"verdict-{n}",
        conversation_id=f"c{n % 97}",
        message_id="m1",
        ts_ms=START_MS + n * STEP_MS,
        stage=Stage.RESPONSE,
        seq=n,
        risk=Risk.SAFE,
        action=Action.ALLOW,
        tier="stream",
        model_id="planted",
        policy="strict",
    )


def _cutoff(n: int) -> ControlEvent:
    return ControlEvent(
        event_id=f"cutoff-{n}",
        conversation_id=f"c{n}",
        message_id="m1",
        ts_ms=START_MS + n * STEP_MS * 20,
        stage=Stage.RESPONSE,
        seq=n,
        risk=Risk.UNSAFE,
        policy="strict",
        reason="unsafe answer",
    )


def _prompt(n: int) -> PromptEvent:
    return PromptEvent(
        event_id=f"prompt-{n}",
        conversation_id=f"c{n}",
        message_id="m1",
        ts_ms=START_MS + n * STEP_MS * 60,
        messages=(Message(role=Role.USER, content=f"question {n}"),),
    )


def _chunk(n: int) -> TokenChunkEvent:
    return TokenChunkEvent(
        event_id=f"chunk-{n}",
        conversation_id=f"c{n % PROMPTS}",
        message_id="m1",
        ts_ms=START_MS + n * STEP_MS * 4,
        seq=n // PROMPTS,
        text=f"word{n} ",
    )


async def _produce(bootstrap: str, produced: Produced, items: list[tuple[Topic, str | None, bytes]]) -> None:
    """Send ``(topic, event id, value)`` items, each topic's round-robin over its partitions; record their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        turns = {topic: itertools.count() for topic in produced.names}
        sends = [
            (
                topic,
                event_id,
                await producer.send(produced.names[topic], value, partition=next(turns[topic]) % PARTITIONS),
            )
            for topic, event_id, value in items
        ]
        for topic, event_id, future in sends:
            meta = await future
            produced.records[(topic, meta.partition, meta.offset)] = event_id
    finally:
        await producer.stop()


def _items(
    verdicts: range, cutoffs: range, garbage: dict[Topic, int], *, prompts: range = range(0), chunks: range = range(0)
) -> list[tuple[Topic, str | None, bytes]]:
    """Verdicts with cut-offs, prompts, chunks and undecodable records spread among them, as they
    come in production."""
    items: list[tuple[Topic, str | None, bytes]] = [
        (Topic.VERDICTS, f"verdict-{n}", codec.encode(_verdict(n))) for n in verdicts
    ]
    extra = [(Topic.CONTROL, f"cutoff-{n}", codec.encode(_cutoff(n))) for n in cutoffs]
    extra += [(Topic.PROMPTS, f"prompt-{n}", codec.encode(_prompt(n))) for n in prompts]
    extra += [(Topic.TOKENS, f"chunk-{n}", codec.encode(_chunk(n))) for n in chunks]
    extra += [(topic, None, b"\x00 not an event %d" % g) for topic, count in garbage.items() for g in range(count)]
    step = len(items) // (len(extra) + 1)
    for i, item in enumerate(extra):
        items.insert((i + 1) * step + i, item)
    return items


class ArchiverProcess:
    """One ``python -m workers archive`` child process."""

    def __init__(self, bootstrap: str, prefix: str, out: Path, log: Path, group_id: str) -> None:
        self.log = log
        self._argv = [sys.executable, "-m", "workers", "archive", "--out", str(out), "--group-id", group_id]
        self._argv += ["--flush-every", "100", "--flush-seconds", "0.5"]
        overrides = {"kafka.bootstrap_servers": bootstrap, "kafka.topic_prefix": prefix, "kafka.session_timeout_s": 6}
        self._env = {**os.environ, **settings_env(overrides), "PYTHONUNBUFFERED": "1"}
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *dies_with_parent(self._argv),
                cwd=REPO_ROOT,
                env=self._env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def signal(self, sig: signal.Signals) -> int:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
        return await asyncio.wait_for(self._proc.wait(), 60)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:]) if self.log.exists() else "(no log)"


async def _wait_until(
    archiver: ArchiverProcess, predicate: Callable[[], bool], what: str, within_s: float = 180.0
) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert archiver.running(), f"the archiver exited while waiting for {what}:\n{archiver.tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{archiver.tail()}"
        await asyncio.sleep(0.02)


def _caught_up(out: Path, produced: Produced) -> bool:
    return scan(out) == produced.ends()


def _files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.parquet"))


@pytest_asyncio.fixture
async def topics(make_topics: TopicsFactory) -> AsyncIterator[dict[Topic, str]]:
    yield await make_topics(partitions=PARTITIONS)


async def test_sigkilled_archivers_leave_every_record_exactly_once(
    kafka_bootstrap: str, topic_prefix: str, topics: dict[Topic, str], tmp_path: Path
) -> None:
    out, produced = tmp_path / "archive", Produced(topics)
    garbage = {Topic.VERDICTS: 3, Topic.CONTROL: 1, Topic.PROMPTS: 1, Topic.TOKENS: 2}
    await _produce(
        kafka_bootstrap,
        produced,
        _items(range(VERDICTS), range(CUTOFFS), garbage, prompts=range(PROMPTS), chunks=range(CHUNKS)),
    )
    group = f"archive-{uuid.uuid4().hex[:6]}"

    first = ArchiverProcess(kafka_bootstrap, topic_prefix, out, tmp_path / "first.log", group)
    await first.start()
    await _wait_until(first, lambda: len(_files(out / Table.VERDICTS.value)) >= 3, "the first verdict files")
    assert await first.signal(signal.SIGKILL) == -signal.SIGKILL
    files_at_kill, archived_at_kill = len(_files(out)), scan(out)
    offsets_at_kill = sum(last + 1 for last in archived_at_kill.values())
    assert offsets_at_kill < len(produced.records), "the kill came after everything was archived"

    # What a kill in the middle of a write leaves behind: a half-written temporary file, in the
    # folder and under the name of the next file of a partition.
    (topic, partition), last = min(archived_at_kill.items())
    folder = next(p.parent for p in _files(out) if (n := FileName.parse(p.name)) and n.key == (topic, partition))
    leftover = folder / FileName(topic=topic, partition=partition, first=last + 1, last=last + 100).temporary
    leftover.write_bytes(b"PAR1 half a file")

    second = ArchiverProcess(kafka_bootstrap, topic_prefix, out, tmp_path / "second.log", group)
    await second.start()
    await _wait_until(second, lambda: _caught_up(out, produced), "the second archiver to catch up")
    assert await second.signal(signal.SIGTERM) == 128 + signal.SIGTERM  # a clean stop, as `streamwarden` exits on it
    assert not leftover.exists()

    # A fresh group has no committed offset: only the files can tell the third archiver where to go on.
    more = _items(
        range(VERDICTS, VERDICTS + 200),
        range(CUTOFFS, CUTOFFS + 10),
        {Topic.VERDICTS: 1, Topic.TOKENS: 1},
        chunks=range(CHUNKS, CHUNKS + 100),
    )
    await _produce(kafka_bootstrap, produced, more)
    third = ArchiverProcess(kafka_bootstrap, topic_prefix, out, tmp_path / "third.log", f"{group}-fresh")
    await third.start()
    await _wait_until(third, lambda: _caught_up(out, produced), "the third archiver to catch up")
    assert await third.signal(signal.SIGTERM) == 128 + signal.SIGTERM

    _check_exactly_once(out, produced)
    _check_readers(out, produced)
    print(  # the numbers the report quotes (pytest -s)
        f"\nproduced {len(produced.records)} records; first archiver killed after {files_at_kill} files "
        f"({offsets_at_kill} offsets archived); at the end {len(_files(out))} files"
    )


def _rows(out: Path, produced: Produced) -> list[tuple[Coordinates, str | None]]:
    """Every archived row as ((topic, partition, offset), event id or None), from all five tables."""

    def columns(table: Table, *names: str) -> list[tuple[Any, ...]]:
        data = ds.dataset(out / table.value, format="parquet", partitioning="hive").to_table(columns=list(names))
        return list(zip(*(data.column(n).to_pylist() for n in names), strict=True))

    rows: list[tuple[Coordinates, str | None]] = []
    pairs = (
        (Table.VERDICTS, Topic.VERDICTS),
        (Table.CUTOFFS, Topic.CONTROL),
        (Table.PROMPTS, Topic.PROMPTS),
        (Table.CHUNKS, Topic.TOKENS),
    )
    for table, topic in pairs:
        rows += [((topic, p, o), e) for p, o, e in columns(table, "kafka_partition", "kafka_offset", "event_id")]
    topic_of = {name: topic for topic, name in produced.names.items()}
    rows += [
        ((topic_of[t], p, o), None)
        for t, p, o in columns(Table.UNDECODABLE, "kafka_topic", "kafka_partition", "kafka_offset")
    ]
    return rows


def _check_exactly_once(out: Path, produced: Produced) -> None:
    rows = _rows(out, produced)
    counts = Counter(coordinates for coordinates, _ in rows)
    duplicated = {c: n for c, n in counts.items() if n > 1}
    missing = set(produced.records) - set(counts)
    assert duplicated == {} and missing == set() and set(counts) == set(produced.records)
    assert dict(rows) == produced.records  # each row is the record produced at its offset
    # The file names tile each partition's offsets: no gap, no overlap.
    spans: dict[tuple[Topic, int], list[tuple[int, int]]] = {}
    for path in _files(out):
        name = FileName.parse(path.name)
        assert name is not None
        spans.setdefault(name.key, []).append((name.first, name.last))
    for key, ranges in spans.items():
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == produced.ends()[key]
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges)), key


def _check_readers(out: Path, produced: Produced) -> None:
    verdicts = sum(1 for (topic, _, _), e in produced.records.items() if topic is Topic.VERDICTS and e is not None)
    glob = f"{out}/verdicts/**/*.parquet"
    total, distinct = duckdb.sql(
        f"SELECT count(*), count(DISTINCT kafka_offset || '-' || kafka_partition) FROM read_parquet('{glob}', hive_partitioning=true)"
    ).fetchone()
    assert total == distinct == verdicts
    misfiled, days = duckdb.sql(
        f"SELECT count(*) FILTER (WHERE CAST(date AS VARCHAR) <> strftime(epoch_ms(ts_ms), '%Y-%m-%d')), count(DISTINCT date) "
        f"FROM read_parquet('{glob}', hive_partitioning=true)"
    ).fetchone()
    assert misfiled == 0 and days == 3
    (cutoffs,) = duckdb.sql(
        f"SELECT count(DISTINCT event_id) FROM read_parquet('{out}/cutoffs/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert cutoffs == CUTOFFS + 10
    texts = duckdb.sql(
        f"SELECT count(*), count(DISTINCT event_id), min(text) FROM read_parquet('{out}/chunks/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert texts == (CHUNKS + 100, CHUNKS + 100, "word0 ")
    (question,) = duckdb.sql(
        f"SELECT messages[1].content FROM read_parquet('{out}/prompts/**/*.parquet', hive_partitioning=true) "
        "WHERE event_id = 'prompt-7'"
    ).fetchone()
    assert question == "question 7"
