"""One conversation out of the archive: its prompts, chunks, verdicts and cut-offs, as events.

The tables are read with ``pyarrow.dataset``, filtered by ``conversation_id`` (Parquet statistics
let it skip most row groups). Each record is taken once, as the worker took it: a verdict or
cut-off archived twice (a re-emission whose first copy an earlier archiver run wrote) is its
first copy by ``(kafka_partition, kafka_offset)``; of a prompt sent twice for one message, or a
chunk sent twice for one ``seq``, the first copy is the one the worker judged (it dead-lettered
the others as ``duplicate_prompt`` / ``duplicate_seq``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow.compute as pc
import pyarrow.dataset as ds

from topics.events import ControlEvent, PromptEvent, TokenChunkEvent, VerdictEvent
from workers.archive.layout import Table
from workers.archive.rows import Row, chunk_of, cutoff_of, prompt_of, verdict_of

E = TypeVar("E")


class ConversationNotArchived(LookupError):
    """The archive holds no record of the conversation (or there is no archive at the path)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedConversation:
    """Everything the archive holds of one conversation, each record once, in Kafka order.

    ``has_text``: the archive holds the input tables (it was written without ``--no-text``), so an
    empty ``prompts`` means none was archived, not that none was kept. ``undecodable``: records keyed
    by this conversation that did not decode (their bytes are in the ``undecodable`` table).
    """

    conversation_id: str
    prompts: tuple[PromptEvent, ...]
    chunks: tuple[TokenChunkEvent, ...]
    verdicts: tuple[VerdictEvent, ...]
    cutoffs: tuple[ControlEvent, ...]
    undecodable: int
    has_text: bool


def read_conversation(archive: Path, conversation_id: str) -> ArchivedConversation:
    """Read ``conversation_id`` from the archive at ``archive``.

    Raises:
        ConversationNotArchived: ``archive`` holds no verdict, cut-off, prompt or chunk of it.
    """
    if not any((archive / table.value).is_dir() for table in Table):
        tables = ", ".join(f"{t.value}/" for t in Table)
        raise ConversationNotArchived(f"{archive} is not an archive: it holds none of {tables}")
    has_text = (archive / Table.PROMPTS.value).is_dir() or (archive / Table.CHUNKS.value).is_dir()
    found = ArchivedConversation(
        conversation_id=conversation_id,
        prompts=_first_of_each(_rows(archive, Table.PROMPTS, conversation_id), "message_id", prompt_of),
        chunks=_first_of_each(_rows(archive, Table.CHUNKS, conversation_id), ("message_id", "seq"), chunk_of),
        verdicts=_first_of_each(_rows(archive, Table.VERDICTS, conversation_id), "event_id", verdict_of),
        cutoffs=_first_of_each(_rows(archive, Table.CUTOFFS, conversation_id), "event_id", cutoff_of),
        undecodable=_undecodable(archive, conversation_id),
        has_text=has_text,
    )
    if not (found.prompts or found.chunks or found.verdicts or found.cutoffs):
        raise ConversationNotArchived(f"conversation {conversation_id!r} is not in the archive at {archive}")
    return found


def _dataset(archive: Path, table: Table) -> ds.Dataset | None:
    """The table's dataset; None while it has no file (its folders may hold a temporary one)."""
    root = archive / table.value
    if not root.is_dir():
        return None
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    return dataset if dataset.files else None


def _rows(archive: Path, table: Table, conversation_id: str) -> list[Row]:
    """The table's rows of the conversation, in Kafka order (partition, then offset)."""
    dataset = _dataset(archive, table)
    if dataset is None:
        return []
    data = dataset.to_table(filter=pc.field("conversation_id") == conversation_id)
    rows: list[Row] = data.to_pylist()
    return sorted(rows, key=lambda row: (row["kafka_partition"], row["kafka_offset"]))


def _first_of_each(rows: list[Row], key: str | tuple[str, ...], build: Callable[[Row], E]) -> tuple[E, ...]:
    """The first row of each distinct ``key``, built into its event, in the rows' order."""
    names = (key,) if isinstance(key, str) else key
    seen: set[Hashable] = set()
    events: list[E] = []
    for row in rows:
        identity = tuple(row[name] for name in names)
        if identity not in seen:
            seen.add(identity)
            events.append(build(row))
    return tuple(events)


def _undecodable(archive: Path, conversation_id: str) -> int:
    dataset = _dataset(archive, Table.UNDECODABLE)
    if dataset is None:
        return 0
    keyed = pc.field("kafka_key") == conversation_id.encode()
    return int(dataset.count_rows(filter=keyed))
