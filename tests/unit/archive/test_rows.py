"""Kafka records as rows of the archive's tables, and back out of Parquet unchanged."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from tests.unit.archive.events import DAY_MS, TS_MS, cutoff, record, verdict, verdict_record
from topics import codec
from topics.events import Message, PromptEvent, Role, TokenChunkEvent
from topics.names import Topic
from workers.archive import Table, to_table
from workers.archive.rows import (
    CUTOFF_SCHEMA,
    UNDECODABLE_SCHEMA,
    VERDICT_SCHEMA,
    chunk_of,
    cutoff_of,
    entry_of,
    prompt_of,
    verdict_of,
)


def test_verdicts_keep_the_earlier_columns_and_gain_their_kafka_coordinates() -> None:
    earlier = VERDICT_SCHEMA.names[: VERDICT_SCHEMA.names.index("flagged_token") + 1]
    assert earlier[:4] == ["event_id", "conversation_id", "message_id", "ts_ms"]
    assert VERDICT_SCHEMA.names == [*earlier, "kafka_partition", "kafka_offset"]
    assert {"kafka_partition", "kafka_offset"} <= set(CUTOFF_SCHEMA.names) & set(UNDECODABLE_SCHEMA.names)


def test_verdict_rows_round_trip_through_parquet(tmp_path: Path) -> None:
    events = [verdict(n) for n in range(12)]
    rows = [entry_of(record(100 + i, codec.encode(v), partition=3)).row for i, v in enumerate(events)]
    pq.write_table(to_table(Table.VERDICTS, rows), tmp_path / "v.parquet")

    back = pq.read_table(tmp_path / "v.parquet")

    assert back.schema.equals(VERDICT_SCHEMA)
    assert back.to_pylist() == rows
    first, fifth = back.to_pylist()[0], back.to_pylist()[5]
    assert first["event_id"] == "v0" and first["kafka_partition"] == 3 and first["kafka_offset"] == 100
    assert (first["risk"], first["action"], first["stage"]) == ("unsafe", "cutoff", "response")
    assert (first["p_safe"], first["p_controversial"], first["p_unsafe"]) == (0.25, 0.25, 0.5)
    assert fifth["category"] == "Violent" and back.to_pylist()[1]["category"] is None
    assert [r["seq"] for r in back.to_pylist()] == list(range(12))


def test_cutoff_rows_round_trip_through_parquet(tmp_path: Path) -> None:
    entries = [entry_of(record(n, codec.encode(cutoff(n)), topic=Topic.CONTROL, partition=1)) for n in range(3)]
    assert {e.table for e in entries} == {Table.CUTOFFS}
    pq.write_table(to_table(Table.CUTOFFS, [e.row for e in entries]), tmp_path / "c.parquet")

    back = pq.read_table(tmp_path / "c.parquet").to_pylist()

    assert back == [e.row for e in entries]
    assert back[2] == {
        "event_id": "k2",
        "conversation_id": "c2",
        "message_id": "m1",
        "ts_ms": TS_MS,
        "action": "cutoff",
        "stage": "response",
        "seq": 2,
        "token_index": 8,
        "risk": "unsafe",
        "category": "Violent",
        "policy": "strict",
        "reason": "unsafe answer",
        "kafka_partition": 1,
        "kafka_offset": 2,
    }


def test_a_record_files_under_the_utc_day_of_its_event() -> None:
    entry = entry_of(verdict_record(0, ts_ms=TS_MS + DAY_MS))
    assert (entry.table, entry.day, entry.event_id) == (Table.VERDICTS, "2026-01-02", "v0")


@pytest.mark.parametrize(
    ("value", "topic", "reason", "field"),
    [
        (b"\x00\xffnot json", Topic.VERDICTS, "invalid_json", None),
        (b"", Topic.CONTROL, "invalid_json", None),  # a tombstone
        (codec.encode(cutoff(1)), Topic.VERDICTS, "unknown_kind", "kind"),  # a cut-off on the verdicts topic
        (
            {**orjson.loads(codec.encode(verdict(1))), "schema_version": 99},
            Topic.VERDICTS,
            "unsupported_schema_version",
            "schema_version",
        ),
        ({**orjson.loads(codec.encode(verdict(1))), "risk": "dire"}, Topic.VERDICTS, "invalid_value", "risk"),
    ],
)
def test_an_undecodable_record_keeps_its_bytes_and_the_reason(
    value: bytes | dict[str, object], topic: Topic, reason: str, field: str | None, tmp_path: Path
) -> None:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    entry = entry_of(record(7, raw, topic=topic, partition=2))

    assert entry.table is Table.UNDECODABLE and entry.event_id is None and entry.day == "2026-01-01"
    pq.write_table(to_table(Table.UNDECODABLE, [entry.row]), tmp_path / "u.parquet")
    (row,) = pq.read_table(tmp_path / "u.parquet").to_pylist()
    assert row["payload"] == raw and row["payload_size"] == len(raw) and row["kafka_key"] == b"key"
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (topic.full_name("t"), 2, 7)
    assert (row["reason"], row["field"]) == (reason, field) and row["detail"]


def test_prompts_and_chunks_round_trip_through_parquet_and_back_to_their_events(tmp_path: Path) -> None:
    prompt = PromptEvent(
        conversation_id="c1",
        message_id="m1",
        ts_ms=TS_MS,
        messages=(Message(role=Role.SYSTEM, content="Be brief."), Message(role=Role.USER, content="Hello?")),
        policy="loose",
        tenant="acme",
    )
    chunks = [
        TokenChunkEvent(conversation_id="c1", message_id="m1", ts_ms=TS_MS, seq=0, text="Hi "),
        TokenChunkEvent(conversation_id="c1", message_id="m1", ts_ms=TS_MS, seq=1, token_ids=(9, 10), final=True),
    ]
    prompt_entry = entry_of(record(0, codec.encode(prompt), topic=Topic.PROMPTS))
    chunk_entries = [entry_of(record(n, codec.encode(c), topic=Topic.TOKENS)) for n, c in enumerate(chunks)]
    assert (prompt_entry.table, {e.table for e in chunk_entries}) == (Table.PROMPTS, {Table.CHUNKS})
    pq.write_table(to_table(Table.PROMPTS, [prompt_entry.row]), tmp_path / "p.parquet")
    pq.write_table(to_table(Table.CHUNKS, [e.row for e in chunk_entries]), tmp_path / "c.parquet")

    (prompt_back,) = pq.read_table(tmp_path / "p.parquet").to_pylist()
    chunks_back = pq.read_table(tmp_path / "c.parquet").to_pylist()

    assert prompt_back == prompt_entry.row
    assert prompt_back["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"},
    ]
    assert [c["token_ids"] for c in chunks_back] == [None, [9, 10]]
    assert prompt_of(prompt_back) == prompt
    assert [chunk_of(c) for c in chunks_back] == chunks


def test_verdicts_and_cutoffs_come_back_out_of_their_rows() -> None:
    v, k = verdict(5), cutoff(2)
    assert verdict_of(entry_of(record(0, codec.encode(v))).row) == v
    assert cutoff_of(entry_of(record(1, codec.encode(k), topic=Topic.CONTROL)).row) == k
