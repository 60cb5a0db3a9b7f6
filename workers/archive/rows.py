"""Kafka records as rows of the archive's tables, and rows as Arrow tables.

Every row carries the Kafka coordinates of its record (``kafka_partition``, ``kafka_offset``). A
record that does not decode as its topic's event becomes a row of ``undecodable`` with its raw key
and value and the codec's reason, so nothing read is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from topics import codec
from topics.errors import DecodeError
from topics.events import ControlEvent, VerdictEvent
from topics.names import Topic
from workers.archive.layout import Table, day_of

_KAFKA_COLUMNS = [("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())]

VERDICT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("conversation_id", pa.string()),
        ("message_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("stage", pa.string()),
        ("seq", pa.int64()),
        ("token_start", pa.int64()),
        ("token_end", pa.int64()),
        ("risk", pa.string()),
        ("category", pa.string()),
        ("p_safe", pa.float32()),
        ("p_controversial", pa.float32()),
        ("p_unsafe", pa.float32()),
        ("action", pa.string()),
        ("status", pa.string()),
        ("tier", pa.string()),
        ("model_id", pa.string()),
        ("model_revision", pa.string()),
        ("policy", pa.string()),
        ("policy_version", pa.int32()),
        ("worker_id", pa.string()),
        ("latency_ms", pa.float32()),
        ("flagged_token", pa.int64()),
        *_KAFKA_COLUMNS,
    ]
)

CUTOFF_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("conversation_id", pa.string()),
        ("message_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("action", pa.string()),
        ("stage", pa.string()),
        ("seq", pa.int64()),
        ("token_index", pa.int64()),
        ("risk", pa.string()),
        ("category", pa.string()),
        ("policy", pa.string()),
        ("reason", pa.string()),
        *_KAFKA_COLUMNS,
    ]
)

UNDECODABLE_SCHEMA = pa.schema(
    [
        ("kafka_topic", pa.string()),
        *_KAFKA_COLUMNS,
        ("kafka_timestamp_ms", pa.int64()),
        ("kafka_key", pa.binary()),
        ("payload", pa.binary()),
        ("payload_size", pa.int64()),
        ("reason", pa.string()),
        ("field", pa.string()),
        ("detail", pa.string()),
    ]
)

SCHEMAS: Mapping[Table, pa.Schema] = {
    Table.VERDICTS: VERDICT_SCHEMA,
    Table.CUTOFFS: CUTOFF_SCHEMA,
    Table.UNDECODABLE: UNDECODABLE_SCHEMA,
}

Row = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One consumed Kafka record of an archived topic."""

    topic: Topic
    topic_name: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """Where a record goes: its table, its day folder, its row, and its event id when it decoded."""

    table: Table
    day: str
    row: Row
    event_id: str | None


def _coordinates(record: Record) -> Row:
    return {"kafka_partition": record.partition, "kafka_offset": record.offset}


def verdict_row(verdict: VerdictEvent, record: Record) -> Row:
    """A verdict as a row of ``VERDICT_SCHEMA`` (``probs`` flattens to ``p_safe`` ...)."""
    row = asdict(verdict)
    probs = row.pop("probs") or {}
    row["p_safe"] = probs.get("safe")
    row["p_controversial"] = probs.get("controversial")
    row["p_unsafe"] = probs.get("unsafe")
    row.update(_coordinates(record))
    return {name: row.get(name) for name in VERDICT_SCHEMA.names}


def cutoff_row(cutoff: ControlEvent, record: Record) -> Row:
    """A cut-off as a row of ``CUTOFF_SCHEMA``."""
    row = {**asdict(cutoff), **_coordinates(record)}
    return {name: row.get(name) for name in CUTOFF_SCHEMA.names}


def undecodable_row(record: Record, error: DecodeError) -> Row:
    """A record that did not decode, as a row of ``UNDECODABLE_SCHEMA``: its bytes, unchanged."""
    value = record.value or b""
    return {
        "kafka_topic": record.topic_name,
        **_coordinates(record),
        "kafka_timestamp_ms": record.timestamp_ms,
        "kafka_key": record.key,
        "payload": value,
        "payload_size": len(value),
        "reason": error.reason,
        "field": error.field,
        "detail": error.detail,
    }


def entry_of(record: Record) -> Entry:
    """Decode ``record`` as its topic's event and say where its row goes.

    A verdict or cut-off files under the UTC day of its ``ts_ms``; an undecodable record under the
    day of its Kafka timestamp.
    """
    raw = record.value or b""
    event: VerdictEvent | ControlEvent
    try:
        event = codec.decode(raw, VerdictEvent) if record.topic is Topic.VERDICTS else codec.decode(raw, ControlEvent)
    except DecodeError as exc:
        row = undecodable_row(record, exc)
        return Entry(table=Table.UNDECODABLE, day=day_of(record.timestamp_ms), row=row, event_id=None)
    if isinstance(event, VerdictEvent):
        row = verdict_row(event, record)
        return Entry(table=Table.VERDICTS, day=day_of(event.ts_ms), row=row, event_id=event.event_id)
    return Entry(table=Table.CUTOFFS, day=day_of(event.ts_ms), row=cutoff_row(event, record), event_id=event.event_id)


def to_table(table: Table, rows: Sequence[Row], *, metadata: Mapping[str, str] | None = None) -> pa.Table:
    """``rows`` as an Arrow table with ``table``'s schema (and ``metadata`` as its key-value metadata)."""
    schema = SCHEMAS[table]
    if metadata:
        schema = schema.with_metadata(dict(metadata))
    return pa.Table.from_pylist(list(rows), schema=schema)
