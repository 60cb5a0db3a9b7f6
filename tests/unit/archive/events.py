"""Verdicts, cut-offs and Kafka records for the archive's unit tests."""

from __future__ import annotations

from topics import codec
from topics.events import Action, ControlEvent, Risk, RiskProbs, Stage, VerdictEvent
from topics.names import Topic
from workers.archive.rows import Record

DAY_MS = 24 * 3600 * 1000
TS_MS = 1_767_225_600_000 + 3_600_000  # 2026-01-01T01:00:00Z


def verdict(n: int, *, ts_ms: int = TS_MS, event_id: str | None = None) -> VerdictEvent:
    return VerdictEvent(
        event_id=event_id or f"v{n}",
        conversation_id=f"c{n % 7}",
        message_id="m1",
        ts_ms=ts_ms,
        stage=Stage.RESPONSE,
        seq=n,
        token_start=n,
        token_end=n + 3,
        risk=Risk.UNSAFE if n % 5 == 0 else Risk.SAFE,
        category="Violent" if n % 5 == 0 else None,
        probs=RiskProbs(safe=0.25, controversial=0.25, unsafe=0.5),
        action=Action.CUTOFF if n % 5 == 0 else Action.ALLOW,
        tier="stream",
        model_id="planted",
        policy="strict",
        worker_id="w1",
        latency_ms=1.5,
        flagged_token=n + 1 if n % 5 == 0 else None,
    )


def cutoff(n: int, *, ts_ms: int = TS_MS) -> ControlEvent:
    return ControlEvent(
        event_id=f"k{n}",
        conversation_id=f"c{n}",
        message_id="m1",
        ts_ms=ts_ms,
        stage=Stage.RESPONSE,
        seq=n,
        token_index=4 * n,
        risk=Risk.UNSAFE,
        category="Violent",
        policy="strict",
        reason="unsafe answer",
    )


def record(offset: int, value: bytes, *, topic: Topic = Topic.VERDICTS, partition: int = 0) -> Record:
    return Record(
        topic=topic,
        topic_name=topic.full_name("t"),
        partition=partition,
        offset=offset,
        timestamp_ms=TS_MS,
        key=b"key",
        value=value,
    )


def verdict_record(offset: int, *, partition: int = 0, ts_ms: int = TS_MS, event_id: str | None = None) -> Record:
    event = verdict(offset, ts_ms=ts_ms, event_id=event_id)
    return record(offset, codec.encode(event), partition=partition)
