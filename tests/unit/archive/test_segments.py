"""Buffering: a file per topic-partition and contiguous offset range, flushed by size or time."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tests.unit.archive.events import DAY_MS, TS_MS, cutoff, record, verdict_record
from topics import codec
from topics.events import TokenChunkEvent
from topics.names import Topic
from workers.archive import FileName, Table, scan
from workers.archive.segments import DUPLICATES_KEY, PartitionBuffer, Pending, SeenIds, Segment, write_segment


def ranges(segments: list[Segment]) -> list[tuple[int, int]]:
    return [(s.first, s.last) for s in segments]


def test_records_of_two_partitions_make_files_of_one_partition_and_contiguous_offsets(tmp_path: Path) -> None:
    pending = Pending(flush_every=40, flush_s=60.0)
    offsets = {0: itertools.count(), 1: itertools.count()}
    for n in range(250):
        partition = n % 3 % 2  # uneven: partition 0 gets two thirds
        offset = next(offsets[partition])
        day_shift = DAY_MS if offset >= 100 else 0  # partition 0 crosses midnight at offset 100
        pending.add(
            verdict_record(offset, partition=partition, ts_ms=TS_MS + day_shift, event_id=f"p{partition}-{offset}"), 0.0
        )
    for segment in pending.take_due(now=60.0):
        write_segment(tmp_path, segment)

    per_partition: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for path in sorted(tmp_path.rglob("*.parquet")):
        name = FileName.parse(path.name)
        assert name is not None
        rows = pq.read_table(path).to_pylist()
        assert {r["kafka_partition"] for r in rows} == {name.partition}
        assert [r["kafka_offset"] for r in rows] == list(range(name.first, name.last + 1))
        assert len(rows) <= 40
        assert {path.parent.name} == {
            f"date={'2026-01-02' if r['kafka_offset'] >= 100 else '2026-01-01'}" for r in rows
        }
        per_partition[name.partition].append((name.first, name.last))
    for partition, spans in per_partition.items():
        spans.sort()
        # Consecutive files tile the partition's offsets: no gap, no overlap, nothing left out.
        assert spans[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans))
        assert spans[-1][1] == next(offsets[partition]) - 1
    assert [first for first, _ in per_partition[0]] == [0, 40, 80, 100, 140]  # cut at 40 rows and at midnight
    assert scan(tmp_path) == {(Topic.VERDICTS, 0): 166, (Topic.VERDICTS, 1): 82}
    dataset = ds.dataset(tmp_path / "verdicts", format="parquet", partitioning="hive")
    assert dataset.count_rows() == 250
    assert dataset.to_table(filter=ds.field("date") == "2026-01-02").num_rows == 67


def test_a_segment_is_due_by_size_at_once_and_by_age_after_flush_seconds() -> None:
    buffer = PartitionBuffer(Topic.VERDICTS, 0, flush_every=3, flush_s=5.0)
    for offset in range(4):
        buffer.add(offset, Table.VERDICTS, "2026-01-01", {"n": offset}, now=100.0)
    assert ranges(buffer.take_due(now=100.0)) == [(0, 2)]
    assert buffer.take_due(now=104.9) == []
    assert ranges(buffer.take_due(now=105.0)) == [(3, 3)]
    assert buffer.take_due(now=1_000.0) == []


def test_an_undecodable_record_cuts_the_run_into_a_file_of_its_own() -> None:
    pending = Pending(flush_every=100, flush_s=1.0)
    pending.add(verdict_record(0), 0.0)
    pending.add(verdict_record(1), 0.0)
    pending.add(record(2, b"garbage"), 0.0)
    pending.add(verdict_record(3), 0.0)
    segments = pending.take_due(now=1.0)
    assert [(s.table, s.first, s.last, len(s.rows)) for s in segments] == [
        (Table.VERDICTS, 0, 1, 2),
        (Table.UNDECODABLE, 2, 2, 1),
        (Table.VERDICTS, 3, 3, 1),
    ]


def test_a_duplicate_is_dropped_inside_its_files_range_and_counted(tmp_path: Path) -> None:
    pending = Pending(flush_every=100, flush_s=1.0)
    pending.add(verdict_record(0, event_id="a"), 0.0)
    pending.add(verdict_record(1, event_id="b"), 0.0)
    pending.add(verdict_record(2, event_id="a"), 0.0)  # re-emitted after a redelivery
    pending.add(record(3, codec.encode(cutoff(0)), topic=Topic.CONTROL), 0.0)  # its own topic and table
    verdicts, cutoffs = pending.take_due(now=1.0)

    assert (verdicts.first, verdicts.last, verdicts.duplicates) == (0, 2, 1)
    assert [r["event_id"] for r in verdicts.rows] == ["a", "b"]
    assert (cutoffs.table, cutoffs.first, cutoffs.last) == (Table.CUTOFFS, 3, 3)
    path = write_segment(tmp_path, verdicts)
    assert path.name == "verdicts-p0-00000000000000000000-00000000000000000002.parquet"
    assert pq.read_schema(path).metadata[DUPLICATES_KEY.encode()] == b"1"


def test_a_run_of_duplicates_waits_for_the_next_row_and_goes_where_it_goes() -> None:
    pending = Pending(flush_every=100, flush_s=1.0)
    pending.add(verdict_record(0, event_id="a"), 0.0)
    assert [s.first for s in pending.take_due(now=1.0)] == [0]
    pending.add(verdict_record(1, event_id="a"), 1.0)
    assert pending.take_due(now=10.0) == []  # no file without rows
    pending.add(record(2, b"garbage"), 10.0)
    (segment,) = pending.take_due(now=11.0)
    assert (segment.table, segment.first, segment.last, segment.duplicates, len(segment.rows)) == (
        Table.UNDECODABLE,
        1,
        2,
        1,
        1,
    )


def test_reading_the_same_record_again_is_not_a_duplicate() -> None:
    seen = SeenIds(window=2)
    key = (Topic.VERDICTS, 0)
    assert not seen.is_duplicate(key, 10, "a")
    assert not seen.is_duplicate(key, 10, "a")  # re-read after a rebalance sought back
    assert seen.is_duplicate(key, 11, "a")
    assert not seen.is_duplicate((Topic.CONTROL, 0), 11, "a")  # another topic's id space
    assert not seen.is_duplicate(key, 12, "b")  # the window forgets "a" (the oldest)
    assert not seen.is_duplicate(key, 13, "a")


def test_a_dropped_partition_is_read_again_from_scratch() -> None:
    pending = Pending(flush_every=100, flush_s=1.0)
    for offset in range(3):
        pending.add(verdict_record(offset), 0.0)
    pending.drop((Topic.VERDICTS, 0))
    assert pending.take_due(now=5.0) == []
    for offset in range(1, 3):  # the next owner's seek: after the files, not after the buffer
        pending.add(verdict_record(offset), 5.0)
    (segment,) = pending.take_due(now=6.0)
    assert (segment.first, segment.last, segment.duplicates) == (1, 2, 0)


def test_a_prompt_or_chunk_sent_twice_is_kept_twice() -> None:
    pending = Pending(flush_every=100, flush_s=1.0)
    sent = codec.encode(TokenChunkEvent(event_id="x", conversation_id="c", message_id="m1", seq=0, text="hi"))
    pending.add(record(0, sent, topic=Topic.TOKENS), 0.0)
    pending.add(record(1, sent, topic=Topic.TOKENS), 0.0)  # the producer sent it again
    (chunks,) = pending.take_due(now=1.0)

    assert (chunks.table, chunks.first, chunks.last, chunks.duplicates) == (Table.CHUNKS, 0, 1, 0)
    assert [r["kafka_offset"] for r in chunks.rows] == [0, 1]
