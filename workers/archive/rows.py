"""Kafka records as rows of the archive's tables, and rows as Arrow tables.

Every row carries the Kafka coordinates of its record (``kafka_partition``, ``kafka_offset``). A
record that does not decode as its topic's event becomes a row of ``undecodable`` with its raw key
and value and the codec's reason, so nothing read is lost; ``verdict_of`` and its siblings turn a
row back into the event it was made from. A prompt's ``messages`` is a list of
``{role, content}`` structs; ``token_ids`` columns are lists of integers (null where the event
carried text instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from topics import codec
from topics.errors import DecodeError
from topics.events import (
    Action,
    ControlAction,
    ControlEvent,
    Event,
    Message,
    PromptEvent,
    Risk,
    RiskProbs,
    Role,
    Stage,
    TokenChunkEvent,
    VerdictEvent,
    VerdictStatus,
)
from topics.names import Topic
from workers.archive.layout import ARCHIVED_TOPICS, Table, day_of

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

PROMPT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("conversation_id", pa.string()),
        ("message_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("token_ids", pa.list_(pa.int64())),
        ("tenant", pa.string()),
        ("policy", pa.string()),
        *_KAFKA_COLUMNS,
    ]
)

CHUNK_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("conversation_id", pa.string()),
        ("message_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("seq", pa.int64()),
        ("text", pa.string()),
        ("token_ids", pa.list_(pa.int64())),
        ("final", pa.bool_()),
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
    Table.PROMPTS: PROMPT_SCHEMA,
    Table.CHUNKS: CHUNK_SCHEMA,
    Table.UNDECODABLE: UNDECODABLE_SCHEMA,
}

_EVENT_TYPES: Mapping[Topic, type[VerdictEvent | ControlEvent | PromptEvent | TokenChunkEvent]] = {
    Topic.VERDICTS: VerdictEvent,
    Topic.CONTROL: ControlEvent,
    Topic.PROMPTS: PromptEvent,
    Topic.TOKENS: TokenChunkEvent,
}
"""The event each archived topic carries."""

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


def prompt_row(prompt: PromptEvent, record: Record) -> Row:
    """A prompt as a row of ``PROMPT_SCHEMA``: the conversation so far, as the producer sent it."""
    row = {**asdict(prompt), **_coordinates(record)}
    row["messages"] = [{"role": m.role.value, "content": m.content} for m in prompt.messages]
    row["token_ids"] = None if prompt.token_ids is None else list(prompt.token_ids)
    return {name: row.get(name) for name in PROMPT_SCHEMA.names}


def chunk_row(chunk: TokenChunkEvent, record: Record) -> Row:
    """A response chunk as a row of ``CHUNK_SCHEMA``: its text delta or token ids, as sent."""
    row = {**asdict(chunk), **_coordinates(record)}
    row["token_ids"] = None if chunk.token_ids is None else list(chunk.token_ids)
    return {name: row.get(name) for name in CHUNK_SCHEMA.names}


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

    An event files under the UTC day of its ``ts_ms``; an undecodable record under the day of its
    Kafka timestamp.
    """
    try:
        event = codec.decode(record.value or b"", _EVENT_TYPES[record.topic])
    except DecodeError as exc:
        row = undecodable_row(record, exc)
        return Entry(table=Table.UNDECODABLE, day=day_of(record.timestamp_ms), row=row, event_id=None)
    table, row = ARCHIVED_TOPICS[record.topic], _row_of(event, record)
    return Entry(table=table, day=day_of(event.ts_ms), row=row, event_id=event.event_id)


def _row_of(event: Event, record: Record) -> Row:
    if isinstance(event, VerdictEvent):
        return verdict_row(event, record)
    if isinstance(event, ControlEvent):
        return cutoff_row(event, record)
    if isinstance(event, PromptEvent):
        return prompt_row(event, record)
    if isinstance(event, TokenChunkEvent):
        return chunk_row(event, record)
    raise TypeError(f"no archive table holds {type(event).__name__}")


def to_table(table: Table, rows: Sequence[Row], *, metadata: Mapping[str, str] | None = None) -> pa.Table:
    """``rows`` as an Arrow table with ``table``'s schema (and ``metadata`` as its key-value metadata)."""
    schema = SCHEMAS[table]
    if metadata:
        schema = schema.with_metadata(dict(metadata))
    return pa.Table.from_pylist(list(rows), schema=schema)


_COORDINATES = frozenset(name for name, _ in _KAFKA_COLUMNS)


def _event_fields(row: Row, schema: pa.Schema) -> Row:
    return {name: row[name] for name in schema.names if name not in _COORDINATES}


def verdict_of(row: Row) -> VerdictEvent:
    """The verdict a ``VERDICT_SCHEMA`` row was made from (``verdict_row``'s inverse)."""
    fields = _event_fields(row, VERDICT_SCHEMA)
    probs = (fields.pop("p_safe"), fields.pop("p_controversial"), fields.pop("p_unsafe"))
    fields["probs"] = None if None in probs else RiskProbs(safe=probs[0], controversial=probs[1], unsafe=probs[2])
    fields["stage"], fields["risk"] = Stage(fields["stage"]), Risk(fields["risk"])
    fields["action"], fields["status"] = Action(fields["action"]), VerdictStatus(fields["status"])
    return VerdictEvent(**fields)


def cutoff_of(row: Row) -> ControlEvent:
    """The cut-off a ``CUTOFF_SCHEMA`` row was made from (``cutoff_row``'s inverse)."""
    fields = _event_fields(row, CUTOFF_SCHEMA)
    fields["action"], fields["stage"] = ControlAction(fields["action"]), Stage(fields["stage"])
    fields["risk"] = Risk(fields["risk"])
    return ControlEvent(**fields)


def prompt_of(row: Row) -> PromptEvent:
    """The prompt a ``PROMPT_SCHEMA`` row was made from (``prompt_row``'s inverse)."""
    fields = _event_fields(row, PROMPT_SCHEMA)
    fields["messages"] = tuple(Message(role=Role(m["role"]), content=m["content"]) for m in fields["messages"] or ())
    fields["token_ids"] = None if fields["token_ids"] is None else tuple(fields["token_ids"])
    return PromptEvent(**fields)


def chunk_of(row: Row) -> TokenChunkEvent:
    """The chunk a ``CHUNK_SCHEMA`` row was made from (``chunk_row``'s inverse)."""
    fields = _event_fields(row, CHUNK_SCHEMA)
    fields["token_ids"] = None if fields["token_ids"] is None else tuple(fields["token_ids"])
    return TokenChunkEvent(**fields)
