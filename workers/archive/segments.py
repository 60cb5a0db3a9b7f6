"""What the archiver holds between reading records and writing them: segments, one per file.

A ``PartitionBuffer`` cuts one topic-partition's records, in offset order, into segments: runs of
consecutive records bound for the same table and day folder, of at most ``flush_every`` rows. A
record bound elsewhere (the next UTC day, or the ``undecodable`` table) closes the open segment
and opens the next one, so every file holds one contiguous offset range and consecutive files of
a partition tile its offsets without gap or overlap. A re-emitted duplicate dropped by
``SeenIds`` adds no row but stays inside the range of the segment it falls in (counted in its
``duplicates``), so the ranges still account for every offset. Only the workers' effects are
de-duplicated: their ids derive from what they judge, so a second copy is the same verdict or
cut-off published again. A prompt's or chunk's id is its producer's, and a second copy is a second
send, which the workers also saw (and dead-lettered as ``duplicate_seq`` or ``duplicate_prompt``):
the archive keeps it, as it keeps everything the conversation's topics carried.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from topics.names import Topic
from workers.archive.layout import EFFECT_TOPICS, FileName, PartitionKey, Table, write_file
from workers.archive.rows import Entry, Record, Row, entry_of, to_table

DUPLICATES_KEY = "streamwarden.duplicates_dropped"
"""Parquet key-value metadata: how many re-emitted duplicates inside the file's range were dropped."""


class Segment:
    """Consecutive records of one topic-partition, bound for one file."""

    __slots__ = ("day", "duplicates", "first", "last", "opened", "partition", "rows", "table", "topic")

    def __init__(self, topic: Topic, partition: int, table: Table, day: str, *, first: int, opened: float) -> None:
        self.topic, self.partition, self.table, self.day = topic, partition, table, day
        self.first = self.last = first
        self.opened = opened  # time.monotonic() of the first record: the clock of --flush-seconds
        self.rows: list[Row] = []
        self.duplicates = 0

    @property
    def name(self) -> FileName:
        return FileName(topic=self.topic, partition=self.partition, first=self.first, last=self.last)


class PartitionBuffer:
    """The records of one topic-partition read but not yet written.

    Args:
        flush_every: rows per file, at most.
        flush_s: a segment with rows is due this long after its first record.
    """

    def __init__(self, topic: Topic, partition: int, *, flush_every: int, flush_s: float) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.topic, self.partition = topic, partition
        self._flush_every, self._flush_s = flush_every, flush_s
        self._open: Segment | None = None
        self._closed: list[Segment] = []

    def add(self, offset: int, table: Table, day: str, row: Row | None, now: float) -> None:
        """Add the record at ``offset`` (the next one of the partition); ``row`` None: a dropped duplicate."""
        segment = self._open
        if segment is None or (row is not None and segment.rows and (segment.table, segment.day) != (table, day)):
            self._close()
            segment = self._open = Segment(self.topic, self.partition, table, day, first=offset, opened=now)
        segment.last = offset
        if row is None:
            segment.duplicates += 1
            return
        if not segment.rows:  # a segment of duplicates only goes where its first row goes
            segment.table, segment.day = table, day
        segment.rows.append(row)
        if len(segment.rows) >= self._flush_every:
            self._close()

    def take_due(self, now: float) -> list[Segment]:
        """Remove and return the segments to write now, in offset order.

        A segment of dropped duplicates only is never due: it would make a file without rows, and
        it waits for the partition's next row instead.
        """
        open_ = self._open
        if open_ is not None and open_.rows and now - open_.opened >= self._flush_s:
            self._close()
        due, self._closed = self._closed, []
        return due

    def _close(self) -> None:
        if self._open is not None and self._open.rows:
            self._closed.append(self._open)
            self._open = None


class SeenIds:
    """The event ids archived (or buffered) in this run, in a bounded window, to drop re-emissions.

    A record is a duplicate when its event id was seen at another offset of the same topic;
    reading the same record again (after a rebalance seeks back) is not a duplicate.
    """

    def __init__(self, window: int = 1_000_000) -> None:
        self._window = window
        self._seen: OrderedDict[tuple[Topic, str], tuple[int, int]] = OrderedDict()

    def is_duplicate(self, key: PartitionKey, offset: int, event_id: str) -> bool:
        topic, partition = key
        where = self._seen.setdefault((topic, event_id), (partition, offset))
        if where != (partition, offset):
            return True
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
        return False


class Pending:
    """Every topic-partition's buffered records, and the event ids this run has seen.

    Args:
        flush_every: rows per file, at most.
        flush_s: a partition's records are due this long after the first of them was read.
    """

    def __init__(self, *, flush_every: int, flush_s: float) -> None:
        self._flush_every, self._flush_s = flush_every, flush_s
        self._buffers: dict[PartitionKey, PartitionBuffer] = {}
        self._seen = SeenIds()

    def add(self, record: Record, now: float) -> Entry:
        """Buffer ``record`` (the next one of its partition) and return where it goes."""
        key = (record.topic, record.partition)
        entry = entry_of(record)
        duplicate = (
            entry.event_id is not None
            and record.topic in EFFECT_TOPICS
            and self._seen.is_duplicate(key, record.offset, entry.event_id)
        )
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = PartitionBuffer(*key, flush_every=self._flush_every, flush_s=self._flush_s)
        buffer.add(record.offset, entry.table, entry.day, None if duplicate else entry.row, now)
        return entry

    def take_due(self, now: float) -> list[Segment]:
        """Remove and return the segments to write now, each partition's in offset order."""
        return [segment for buffer in self._buffers.values() for segment in buffer.take_due(now)]

    def drop(self, key: PartitionKey) -> None:
        """Forget what is buffered for ``key`` (revoked: its next owner reads it again)."""
        self._buffers.pop(key, None)


def write_segment(out: Path, segment: Segment) -> Path:
    """Write ``segment`` as its file (``layout.write_file``), with the duplicates it dropped in the
    file's metadata; returns the path."""
    metadata = {DUPLICATES_KEY: str(segment.duplicates)}
    data = to_table(segment.table, segment.rows, metadata=metadata)
    return write_file(out, segment.table, segment.day, segment.name, data)
