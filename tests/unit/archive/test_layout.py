"""The archive on disk: file names, the offset scan, temporary files, durable writes, where to resume."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from topics.names import Topic
from workers.archive import FileName, Table, remove_temporaries, resume_at, scan, write_file
from workers.archive.layout import day_of, folder_of


def name(topic: Topic, partition: int, first: int, last: int) -> FileName:
    return FileName(topic=topic, partition=partition, first=first, last=last)


def touch(out: Path, table: Table, day: str, filename: str) -> Path:
    path = folder_of(out, table, day) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_a_file_name_encodes_its_topic_partition_and_offset_range() -> None:
    n = name(Topic.CONTROL, 3, 120, 4_567)
    assert n.final == "control-p3-00000000000000000120-00000000000000004567.parquet"
    assert n.temporary == ".control-p3-00000000000000000120-00000000000000004567.parquet.tmp"
    assert FileName.parse(n.final) == n
    assert FileName.parse_temporary(n.temporary) == n
    assert FileName.parse(n.temporary) is None and FileName.parse_temporary(n.final) is None


@pytest.mark.parametrize(
    "filename",
    [
        "verdicts-1767225600000000000-a1b2c3.parquet",  # the earlier layout
        "dlq-p0-00000000000000000000-00000000000000000009.parquet",  # not an archived topic
        "verdicts-p0-00000000000000000009-00000000000000000001.parquet",  # first > last
        "verdicts-p0-0-9.parquet",
        "verdicts-p0-00000000000000000000-00000000000000000009.parquet.bak",
    ],
)
def test_names_the_archive_does_not_write_are_not_parsed(filename: str) -> None:
    assert FileName.parse(filename) is None


def test_the_day_is_the_utc_day_of_the_timestamp() -> None:
    assert day_of(1_767_225_599_999) == "2025-12-31"
    assert day_of(1_767_225_600_000) == "2026-01-01"
    assert day_of(10**18) == "9999-12-31" and day_of(-(10**18)) == "0001-01-01"


def test_scan_finds_the_highest_archived_offset_of_each_partition(tmp_path: Path) -> None:
    touch(tmp_path, Table.VERDICTS, "2026-01-01", name(Topic.VERDICTS, 0, 0, 99).final)
    touch(tmp_path, Table.VERDICTS, "2026-01-02", name(Topic.VERDICTS, 0, 100, 149).final)
    touch(tmp_path, Table.UNDECODABLE, "2026-01-02", name(Topic.VERDICTS, 0, 150, 150).final)
    touch(tmp_path, Table.VERDICTS, "2026-01-01", name(Topic.VERDICTS, 1, 0, 41).final)
    touch(tmp_path, Table.CUTOFFS, "2026-01-01", name(Topic.CONTROL, 1, 0, 7).final)
    # Neither a half-written file nor a foreign one counts as archived.
    touch(tmp_path, Table.VERDICTS, "2026-01-02", name(Topic.VERDICTS, 1, 42, 900).temporary)
    touch(tmp_path, Table.VERDICTS, "2026-01-02", "verdicts-p1-notes.parquet")
    assert scan(tmp_path) == {(Topic.VERDICTS, 0): 150, (Topic.VERDICTS, 1): 41, (Topic.CONTROL, 1): 7}


def test_scan_of_an_empty_or_missing_directory_finds_nothing(tmp_path: Path) -> None:
    assert scan(tmp_path / "absent") == {}
    assert scan(tmp_path) == {}


def test_recovery_deletes_the_leftover_temporary_files_of_the_owned_partitions(tmp_path: Path) -> None:
    kept = touch(tmp_path, Table.VERDICTS, "2026-01-01", name(Topic.VERDICTS, 0, 0, 9).final)
    mine = touch(tmp_path, Table.VERDICTS, "2026-01-01", name(Topic.VERDICTS, 0, 10, 19).temporary)
    mine_too = touch(tmp_path, Table.UNDECODABLE, "2026-01-02", name(Topic.CONTROL, 2, 3, 3).temporary)
    theirs = touch(tmp_path, Table.VERDICTS, "2026-01-01", name(Topic.VERDICTS, 1, 0, 9).temporary)
    foreign = touch(tmp_path, Table.VERDICTS, "2026-01-01", ".notes.tmp")

    removed = remove_temporaries(tmp_path, {(Topic.VERDICTS, 0), (Topic.CONTROL, 2)})

    assert sorted(removed) == sorted([mine, mine_too])
    assert not mine.exists() and not mine_too.exists()
    assert kept.exists() and theirs.exists() and foreign.exists()
    assert remove_temporaries(tmp_path) == [theirs]


def test_write_file_puts_a_complete_file_under_its_final_name(tmp_path: Path) -> None:
    out = tmp_path / "archive"  # created by the write
    data = pa.table({"kafka_offset": pa.array([5, 6, 7], pa.int64())})
    n = name(Topic.VERDICTS, 2, 5, 7)

    path = write_file(out, Table.VERDICTS, "2026-01-01", n, data)

    assert path == out / "verdicts" / "date=2026-01-01" / n.final
    assert pq.read_table(path).equals(data)
    assert [p.name for p in path.parent.iterdir()] == [n.final]  # no temporary left behind
    assert scan(out) == {(Topic.VERDICTS, 2): 7}


@pytest.mark.parametrize(
    ("archived_last", "committed", "expected"),
    [
        (None, None, None),  # nothing anywhere: from the beginning
        (99, None, 100),  # a fresh group: the files alone
        (99, 40, 100),  # crashed between a rename and its commit: the files are ahead
        (99, 100, 100),
        (None, 40, 40),  # files moved away (or the earlier layout): the commit carries on
        (99, 250, 250),
    ],
)
def test_a_partition_resumes_after_its_archived_files(
    archived_last: int | None, committed: int | None, expected: int | None
) -> None:
    assert resume_at(archived_last, committed) == expected
