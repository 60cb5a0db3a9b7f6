"""The archive on disk: its tables, its file names, the offset scan, and durable writes.

Layout::

    <out>/<table>/date=YYYY-MM-DD/<topic>-p<partition>-<first offset:020d>-<last offset:020d>.parquet

``<topic>`` is the archived topic's ``Topic`` value (``verdicts``, ``control``, ``prompts``,
``tokens``). A file holds
records of one topic-partition only, and its name is the offset range it covers, so the file
names alone say how far each partition is archived (``scan``). A file is written under a hidden
temporary name in its final folder (``.<name>.tmp``, which Parquet readers skip) and renamed
into place only once it is on disk (``write_file``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from topics.names import Topic

PartitionKey = tuple[Topic, int]
"""An archived topic-partition: the logical topic and the partition number."""


class Table(StrEnum):
    """The archive's tables; the value is the table's folder under the output directory."""

    VERDICTS = "verdicts"
    CUTOFFS = "cutoffs"
    PROMPTS = "prompts"
    CHUNKS = "chunks"
    UNDECODABLE = "undecodable"


EFFECT_TOPICS: dict[Topic, Table] = {Topic.VERDICTS: Table.VERDICTS, Topic.CONTROL: Table.CUTOFFS}
"""The workers' output topics (always archived), and the table of each one's decodable records."""

INPUT_TOPICS: dict[Topic, Table] = {Topic.PROMPTS: Table.PROMPTS, Topic.TOKENS: Table.CHUNKS}
"""The conversations' text (archived unless switched off), and the table of each one's records."""

ARCHIVED_TOPICS: dict[Topic, Table] = {**EFFECT_TOPICS, **INPUT_TOPICS}
"""Every topic an archive may hold, and the table each topic's decodable records go to."""

_NAME = re.compile(r"(?P<topic>[a-z]+)-p(?P<partition>\d+)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet")
_TEMPORARY_PREFIX, _TEMPORARY_SUFFIX = ".", ".tmp"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileName:
    """The identity of one archive file: a topic-partition and the offsets ``first..last`` it covers."""

    topic: Topic
    partition: int
    first: int
    last: int

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    @property
    def final(self) -> str:
        return f"{self.topic.value}-p{self.partition}-{self.first:020d}-{self.last:020d}.parquet"

    @property
    def temporary(self) -> str:
        return f"{_TEMPORARY_PREFIX}{self.final}{_TEMPORARY_SUFFIX}"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The file name's identity, or None for a name this archive does not write."""
        match = _NAME.fullmatch(name)
        if match is None or match["topic"] not in {t.value for t in ARCHIVED_TOPICS}:
            return None
        first, last = int(match["first"]), int(match["last"])
        if first > last:
            return None
        return cls(topic=Topic(match["topic"]), partition=int(match["partition"]), first=first, last=last)

    @classmethod
    def parse_temporary(cls, name: str) -> FileName | None:
        """The identity of a temporary file's final name, or None."""
        if not (name.startswith(_TEMPORARY_PREFIX) and name.endswith(_TEMPORARY_SUFFIX)):
            return None
        return cls.parse(name.removeprefix(_TEMPORARY_PREFIX).removesuffix(_TEMPORARY_SUFFIX))


def day_of(ts_ms: int) -> str:
    """The UTC day of a timestamp in milliseconds, ``YYYY-MM-DD``; out-of-range values clamp to
    years 1 and 9999, so every record has a folder."""
    try:
        moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        moment = dt.datetime.max if ts_ms > 0 else dt.datetime.min
    return moment.date().isoformat()


def folder_of(out: Path, table: Table, day: str) -> Path:
    return out / table.value / f"date={day}"


def _files(out: Path) -> list[os.DirEntry[str]]:
    entries: list[os.DirEntry[str]] = []
    for table in Table:
        root = out / table.value
        if not root.is_dir():
            continue
        with os.scandir(root) as days:
            folders = [day.path for day in days if day.is_dir() and day.name.startswith("date=")]
        for folder in folders:
            with os.scandir(folder) as names:
                entries.extend(entry for entry in names if entry.is_file())
    return entries


def scan(out: Path) -> dict[PartitionKey, int]:
    """The highest archived offset of each topic-partition, over every table and day.

    Only complete files count: temporary files and names this archive does not write are skipped.
    """
    highest: dict[PartitionKey, int] = {}
    for entry in _files(out):
        name = FileName.parse(entry.name)
        if name is not None and name.last > highest.get(name.key, -1):
            highest[name.key] = name.last
    return highest


def remove_temporaries(out: Path, owned: Collection[PartitionKey] | None = None) -> list[Path]:
    """Delete the temporary files a killed run left behind; returns their paths.

    Args:
        owned: delete only the temporaries of these topic-partitions (those this archiver was just
            assigned: another archiver sharing the directory may be writing its own); None: all.
    """
    removed: list[Path] = []
    for entry in _files(out):
        name = FileName.parse_temporary(entry.name)
        if name is not None and (owned is None or name.key in owned):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_folder(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each one's entry synced in its parent."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    if not missing:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync_folder(created.parent)


def write_file(out: Path, table: Table, day: str, name: FileName, data: pa.Table) -> Path:
    """Write ``data`` as the file ``name`` of ``table`` on ``day``, durably, and return its path.

    The file is written under its temporary name, flushed and fsynced, renamed to its final name,
    and the folder is fsynced, so once this returns the file survives a crash or a power loss, and
    no reader ever sees it half-written.
    """
    folder = folder_of(out, table, day)
    _ensure_folder(folder)
    temporary, final = folder / name.temporary, folder / name.final
    with temporary.open("wb") as file:
        pq.write_table(data, file, compression="zstd")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, final)
    _fsync_folder(folder)
    return final
