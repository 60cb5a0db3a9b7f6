"""The archiver's consumer loop: read the topics, buffer per partition, write files, then commit.

On every partition assignment the archiver deletes the assigned partitions' leftover temporary
files, scans its output for the highest archived offset of each, and seeks there (``resume_at``).
Rebalances are made safe by one lock and a position per partition (the next offset to archive):
a revocation waits for the files being written, then drops what was buffered for the revoked
partitions (the next owner reads it again from the files' end); an assigned partition takes records
only from its position on, and only once every seek is done; a batch fetched across a rebalance is
dropped. Whatever is dropped for a partition still held is followed by a seek to its position, so
it is fetched again and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from workers.archive.layout import EFFECT_TOPICS, INPUT_TOPICS, PartitionKey, Table, remove_temporaries, scan
from workers.archive.rows import Record
from workers.archive.segments import Pending, Segment, write_segment

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Archived:
    """What one run wrote: rows per table, re-emitted duplicates dropped, and files."""

    verdicts: int = 0
    cutoffs: int = 0
    prompts: int = 0
    chunks: int = 0
    undecodable: int = 0
    duplicates: int = 0
    files: int = 0

    @property
    def rows(self) -> int:
        return self.verdicts + self.cutoffs + self.prompts + self.chunks + self.undecodable


class ArchiveAheadOfTopic(RuntimeError):
    """The files hold offsets the topic does not have: the topic was recreated, or the directory
    is another deployment's archive. Archiving on would overwrite files, so the archiver stops."""


def resume_at(archived_last: int | None, committed: int | None) -> int | None:
    """The offset to resume a partition at: after its last archived offset, or the group's
    committed offset where that is further (files moved out of the directory are not archived
    again); None: neither exists, start from the beginning."""
    candidates = [o for o in (None if archived_last is None else archived_last + 1, committed) if o is not None]
    return max(candidates, default=None)


class Archiver:
    """The archiver over one consumer subscribed to the archived topics (``archive`` wires it): call
    ``step`` in a loop; ``assigned``/``revoked`` are its rebalance callbacks.

    Args:
        with_text: archive the input topics too (prompts and chunks: the conversations' text), not
            only the verdicts and cut-offs.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        out: Path,
        prefix: str,
        *,
        flush_every: int,
        flush_s: float,
        with_text: bool = False,
    ) -> None:
        self._consumer, self._out = consumer, out
        topics = {**EFFECT_TOPICS, **(INPUT_TOPICS if with_text else {})}
        self._names = {topic: topic.full_name(prefix) for topic in topics}
        self._topics = {name: topic for topic, name in self._names.items()}
        self._pending = Pending(flush_every=flush_every, flush_s=flush_s)
        self._lock = asyncio.Lock()  # held while files are written, and by the rebalance callbacks
        self._next: dict[PartitionKey, int] = {}  # the next offset to archive of each partition held
        self._generation = 0  # bumped by every rebalance callback
        self._failure: BaseException | None = None
        self._counts: dict[str, int] = dict.fromkeys([*(t.value for t in Table), "duplicates", "files"], 0)

    @property
    def topic_names(self) -> list[str]:
        return list(self._topics)

    def archived(self) -> Archived:
        return Archived(**self._counts)

    def _key(self, tp: TopicPartition) -> PartitionKey:
        return (self._topics[tp.topic], tp.partition)

    async def step(self) -> None:
        """Fetch once, buffer what came, and write every segment that is due."""
        generation = self._generation
        batches: dict[TopicPartition, list[Any]] = await self._consumer.getmany(timeout_ms=200)
        if self._failure is not None:
            raise self._failure
        if generation != self._generation:
            self._refetch(batches)
        else:
            now = time.monotonic()
            for tp, records in batches.items():
                self._take(tp, records, now)
        await self._flush()

    def _refetch(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Drop a batch fetched across a rebalance (it may predate the seeks), and seek the partitions
        still held back to their positions, so that nothing it held is skipped."""
        for tp in batches:
            position = self._next.get(self._key(tp))
            if position is not None:
                self._consumer.seek(tp, position)

    def _take(self, tp: TopicPartition, records: list[Any], now: float) -> None:
        """Buffer the records of ``tp`` from its position on. Those below it are archived already,
        and a partition without a position takes none: it was revoked, or is being resumed (and its
        seek, still to come, fetches them again)."""
        key = self._key(tp)
        for record in records:
            position = self._next.get(key, sys.maxsize)
            if record.offset < position:
                continue
            if record.offset > position:  # the file's range will name offsets without a record
                logger.warning(
                    "offsets %d..%d of %s[%d] hold no record (expired, or transaction markers)",
                    position,
                    record.offset - 1,
                    tp.topic,
                    tp.partition,
                )
            self._add(key, tp.topic, record, now)
            self._next[key] = record.offset + 1

    def _add(self, key: PartitionKey, topic_name: str, kafka: Any, now: float) -> None:
        record = Record(
            topic=key[0],
            topic_name=topic_name,
            partition=key[1],
            offset=kafka.offset,
            timestamp_ms=kafka.timestamp,
            key=kafka.key,
            value=kafka.value,
        )
        entry = self._pending.add(record, now)
        if entry.event_id is None:
            logger.warning(
                "undecodable record %s[%d] offset=%d: %s", topic_name, key[1], record.offset, entry.row["detail"]
            )

    async def _flush(self) -> None:
        now = time.monotonic()
        written: dict[TopicPartition, int] = {}
        async with self._lock:
            for segment in self._pending.take_due(now):
                path = await asyncio.to_thread(write_segment, self._out, segment)
                self._count(segment, path)
                written[TopicPartition(self._names[segment.topic], segment.partition)] = segment.last + 1
        if not written:
            return
        try:  # only now: everything up to these offsets is on disk
            await self._consumer.commit(written)
        except KafkaError as exc:  # the files are the progress; the commit only feeds lag monitoring
            logger.warning("offset commit failed (the files already hold the records): %r", exc)

    def _count(self, segment: Segment, path: Path) -> None:
        self._counts[segment.table.value] += len(segment.rows)
        self._counts["duplicates"] += segment.duplicates
        self._counts["files"] += 1
        logger.info("archived %d %s rows to %s", len(segment.rows), segment.table.value, path)

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        async with self._lock:  # waits for the files being written: the next owner scans them
            self._generation += 1
            for tp in partitions:
                self._pending.drop(self._key(tp))
                self._next.pop(self._key(tp), None)

    async def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        assigned = list(partitions)
        async with self._lock:
            owned = {self._key(tp) for tp in assigned}
            for path in await asyncio.to_thread(remove_temporaries, self._out, owned):
                logger.warning("removed %s, left half-written by an earlier run", path)
            archived = await asyncio.to_thread(scan, self._out)
            if not assigned:
                return
            beginning = await self._consumer.beginning_offsets(assigned)
            end = await self._consumer.end_offsets(assigned)
            positions: dict[TopicPartition, int] = {}
            for tp in assigned:
                positions[tp] = await self._resume_at(tp, archived.get(self._key(tp)), beginning[tp], end[tp])
            # No await from here on: the seeks, the positions and the new generation come together,
            # so what the consumer fetched before the seeks is dropped and then fetched again.
            for tp, position in positions.items():
                self._consumer.seek(tp, position)
                self._next[self._key(tp)] = position
            self._generation += 1

    async def _resume_at(self, tp: TopicPartition, last: int | None, first_kept: int, end: int) -> int:
        """Where ``tp`` resumes: where its archive ends (``last``: its highest archived offset)."""
        if last is not None and last >= end:
            raise ArchiveAheadOfTopic(
                f"{self._out} holds {tp.topic}[{tp.partition}] up to offset {last}, but the topic ends "
                f"at {end - 1}: archive this topic to a new directory"
            )
        start = resume_at(last, await self._consumer.committed(tp))
        if start is not None and start < first_kept:
            logger.error(
                "offsets %d..%d of %s[%d] expired from the topic before they were archived",
                start,
                first_kept - 1,
                tp.topic,
                tp.partition,
            )
        position = first_kept if start is None else max(start, first_kept)
        if start is None:
            source = "nothing archived yet"
        elif last is not None and start == last + 1:
            source = "after the archived files"
        else:
            source = "the group's committed offset"
        logger.info("archiving %s[%d] from offset %d (%s)", tp.topic, tp.partition, position, source)
        return position

    def fail(self, exc: BaseException) -> None:
        self._failure = exc


class _Resume(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """Rebalance callbacks. aiokafka logs and swallows their errors, so a failed resume is handed to
    the loop, which raises it rather than read on from an unknown position."""

    def __init__(self, archiver: Archiver) -> None:
        self._archiver = archiver

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._archiver.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._archiver.assigned(assigned)
        except Exception as exc:
            logger.exception("could not resume the assigned partitions %s", sorted(map(str, assigned)))
            self._archiver.fail(exc)


async def archive(
    bootstrap: str,
    prefix: str,
    out: Path,
    *,
    group_id: str,
    flush_every: int,
    flush_s: float,
    stop_after: int | None = None,
    with_text: bool = False,
    session_timeout_s: float = 10.0,
    heartbeat_interval_s: float = 1.0,
) -> Archived:
    """Archive the verdicts and control topics under ``out`` until cancelled, or until ``stop_after``
    rows (of all tables) are written; returns what was written.

    Args:
        with_text: archive the prompts and tokens topics too (tables ``prompts`` and ``chunks``),
            which ``streamwarden audit`` needs for a message's text and for ``--replay``.

    Raises:
        ArchiveAheadOfTopic: the files hold offsets the topic does not have.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        session_timeout_ms=int(session_timeout_s * 1000),
        heartbeat_interval_ms=int(heartbeat_interval_s * 1000),
    )
    archiver = Archiver(consumer, out, prefix, flush_every=flush_every, flush_s=flush_s, with_text=with_text)
    consumer.subscribe(archiver.topic_names, listener=_Resume(archiver))
    await consumer.start()
    try:
        while stop_after is None or archiver.archived().rows < stop_after:
            await archiver.step()
    finally:
        await consumer.stop()
    return archiver.archived()
