"""Rebalances: what the consumer fetches while a partition is resumed, or across a rebalance, is
archived once, neither twice nor skipped.

The consumer is a fake over an in-memory log with a fetch position per partition, like Kafka's, and
each fetch waits for the test to release it, so the test decides exactly when records arrive
relative to the rebalance callbacks (on a real broker that is a race).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from aiokafka import TopicPartition

from tests.unit.archive.events import TS_MS, verdict
from topics import codec
from topics.names import Topic
from workers.archive import FileName, scan
from workers.archive.rows import Record
from workers.archive.run import Archiver
from workers.archive.segments import Pending, write_segment

TP = TopicPartition(Topic.VERDICTS.full_name("t"), 0)
CONTROL = TopicPartition(Topic.CONTROL.full_name("t"), 0)


@dataclass(frozen=True)
class KafkaRecord:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes


class FakeConsumer:
    """Verdict partition 0 holds offsets ``0..size-1``; the control partition is empty.

    Args:
        prefetch: a fetch reads the log when it starts (its records may predate a seek made while
            it waits), else when it is released (after such a seek).
    """

    def __init__(self, size: int, *, chunk: int = 10, prefetch: bool = False) -> None:
        self.log = {TP: [KafkaRecord(o, TS_MS, None, codec.encode(verdict(o))) for o in range(size)], CONTROL: []}
        self.position = dict.fromkeys(self.log, 0)  # no committed offset: the earliest
        self.chunk, self.prefetch = chunk, prefetch
        self.releases: asyncio.Queue[None] = asyncio.Queue()
        self.fetching, self.delivered = asyncio.Event(), asyncio.Event()
        self.asked, self.answer = asyncio.Event(), asyncio.Event()
        self.commits: list[dict[TopicPartition, int]] = []

    def _read(self) -> dict[TopicPartition, list[KafkaRecord]]:
        batch = {}
        for tp, records in self.log.items():
            if taken := records[self.position[tp] : self.position[tp] + self.chunk]:
                batch[tp] = taken
                self.position[tp] += len(taken)
        return batch

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[KafkaRecord]]:
        batch = self._read() if self.prefetch else {}
        self.fetching.set()
        await self.releases.get()
        self.fetching.clear()
        batch = batch if self.prefetch else self._read()
        self.delivered.set()
        return batch

    async def committed(self, tp: TopicPartition) -> int | None:
        if tp == CONTROL:  # a slow broker round trip, after verdict partition 0 has its answer
            self.asked.set()
            await self.answer.wait()
        return None

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.log[tp]) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    async def step(self, archiver: Archiver) -> None:
        self.releases.put_nowait(None)
        await archiver.step()


def archived_before(out: Path, last: int) -> None:
    """Files of verdict partition 0 holding offsets 0..last, as an earlier run left them."""
    pending = Pending(flush_every=10_000, flush_s=0.0)
    for offset in range(last + 1):
        value = codec.encode(verdict(offset))
        pending.add(
            Record(
                topic=Topic.VERDICTS,
                topic_name=TP.topic,
                partition=0,
                offset=offset,
                timestamp_ms=TS_MS,
                key=None,
                value=value,
            ),
            0.0,
        )
    for segment in pending.take_due(now=1.0):
        write_segment(out, segment)


def offsets_in_files(out: Path) -> list[int]:
    return sorted(o for p in out.rglob("*.parquet") for o in pq.read_table(p).column("kafka_offset").to_pylist())


def spans(out: Path) -> list[tuple[int, int]]:
    names = [FileName.parse(p.name) for p in out.rglob("*.parquet")]
    return sorted((n.first, n.last) for n in names if n is not None)


async def test_records_fetched_while_partitions_are_resumed_are_archived_once(tmp_path: Path) -> None:
    archived_before(tmp_path, 49)
    consumer = FakeConsumer(120, chunk=60)
    archiver = Archiver(consumer, tmp_path, "t", flush_every=1_000, flush_s=0.0)  # type: ignore[arg-type]

    resuming = asyncio.create_task(archiver.assigned([TP, CONTROL]))
    await consumer.asked.wait()
    # The consumer fetches from the group's position (none: the earliest) before the seeks, and
    # partition 0 has its position while the control partition's is still being asked for.
    stepping = asyncio.create_task(consumer.step(archiver))
    await consumer.delivered.wait()  # the step has its batch (its flush then waits for the resume)
    consumer.answer.set()
    await resuming
    await stepping
    while consumer.position[TP] < 120:
        await consumer.step(archiver)

    assert offsets_in_files(tmp_path) == list(range(120))
    assert spans(tmp_path) == [(0, 49), (50, 109), (110, 119)]
    assert scan(tmp_path) == {(Topic.VERDICTS, 0): 119}
    assert consumer.commits == [{TP: 110}, {TP: 120}]
    assert archiver.archived().verdicts == 70


async def test_a_batch_fetched_before_a_rebalance_is_fetched_again(tmp_path: Path) -> None:
    consumer = FakeConsumer(30, prefetch=True)
    consumer.answer.set()
    archiver = Archiver(consumer, tmp_path, "t", flush_every=15, flush_s=3_600.0)  # type: ignore[arg-type]
    await archiver.assigned([TP])
    await consumer.step(archiver)  # 0..9, buffered

    stepping = asyncio.create_task(archiver.step())
    await consumer.fetching.wait()  # 10..19 fetched, not yet returned
    await archiver.revoked([TP])  # drops 0..9
    await archiver.assigned([TP])  # nothing archived: from 0 again
    consumer.releases.put_nowait(None)
    await stepping
    while consumer.position[TP] < 30:
        await consumer.step(archiver)

    assert spans(tmp_path) == [(0, 14), (15, 29)]
    assert offsets_in_files(tmp_path) == list(range(30))


async def test_a_batch_fetched_after_the_seeks_of_a_rebalance_is_fetched_again(tmp_path: Path) -> None:
    consumer = FakeConsumer(30)
    consumer.answer.set()
    archiver = Archiver(consumer, tmp_path, "t", flush_every=10, flush_s=3_600.0)  # type: ignore[arg-type]
    await archiver.assigned([TP])
    await consumer.step(archiver)  # 0..9, written

    stepping = asyncio.create_task(archiver.step())
    await consumer.fetching.wait()
    await archiver.revoked([TP])
    await archiver.assigned([TP])  # resumes at 10, after the files
    consumer.releases.put_nowait(None)  # this fetch reads 10..19, but the step began before the rebalance
    await stepping
    while consumer.position[TP] < 30:
        await consumer.step(archiver)

    assert spans(tmp_path) == [(0, 9), (10, 19), (20, 29)]
    assert offsets_in_files(tmp_path) == list(range(30))
