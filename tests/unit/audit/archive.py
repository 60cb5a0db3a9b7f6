"""Small archives for the audit's unit tests, written with the archive's own row builders and layout."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from topics import codec
from topics.events import (
    Action,
    ControlEvent,
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
from workers.archive.layout import FileName, write_file
from workers.archive.rows import Record, entry_of, to_table

TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CID = "conv-1"
Event = PromptEvent | TokenChunkEvent | VerdictEvent | ControlEvent
_TOPICS = {
    PromptEvent: Topic.PROMPTS,
    TokenChunkEvent: Topic.TOKENS,
    VerdictEvent: Topic.VERDICTS,
    ControlEvent: Topic.CONTROL,
}


def write_archive(out: Path, events: Sequence[Event | bytes], *, partition: int = 0) -> Path:
    """Write ``events`` as the archiver would have: each topic's in order at offsets 0, 1, ..., one
    file per run of records bound for the same table and day. ``bytes`` are undecodable verdicts
    keyed by ``CID``."""
    offsets = {topic: itertools.count() for topic in Topic}
    entries = []
    for event in events:
        topic = Topic.VERDICTS if isinstance(event, bytes) else _TOPICS[type(event)]
        value = event if isinstance(event, bytes) else codec.encode(event)
        record = Record(
            topic=topic,
            topic_name=topic.full_name("t"),
            partition=partition,
            offset=next(offsets[topic]),
            timestamp_ms=TS_MS,
            key=CID.encode(),
            value=value,
        )
        entries.append((record, entry_of(record)))
    for (topic, table, day), group in itertools.groupby(entries, key=lambda e: (e[0].topic, e[1].table, e[1].day)):
        run = list(group)
        name = FileName(topic=topic, partition=partition, first=run[0][0].offset, last=run[-1][0].offset)
        write_file(out, table, day, name, to_table(table, [entry.row for _, entry in run]))
    return out


def prompt(text: str = "Tell me a story.", *, message_id: str = "m1", policy: str | None = None) -> PromptEvent:
    return PromptEvent(
        conversation_id=CID,
        message_id=message_id,
        ts_ms=TS_MS,
        messages=(Message(role=Role.SYSTEM, content="Be kind."), Message(role=Role.USER, content=text)),
        policy=policy,
    )


def chunk(seq: int, text: str | None, *, final: bool = False, message_id: str = "m1") -> TokenChunkEvent:
    return TokenChunkEvent(
        conversation_id=CID, message_id=message_id, ts_ms=TS_MS + seq + 1, seq=seq, text=text, final=final
    )


def verdict(
    seq: int | None,
    *,
    span: tuple[int, int] = (0, 0),
    risk: Risk = Risk.SAFE,
    action: Action = Action.ALLOW,
    status: VerdictStatus = VerdictStatus.MODERATED,
    category: str | None = None,
    p_unsafe: float = 0.0,
    flagged: int | None = None,
    worker: str = "w1",
    model: str = "planted",
    message_id: str = "m1",
) -> VerdictEvent:
    stage = Stage.PROMPT if seq is None else Stage.RESPONSE
    return VerdictEvent(
        event_id=f"v-{message_id}-{stage.value}-{seq}",
        conversation_id=CID,
        message_id=message_id,
        ts_ms=TS_MS + (seq or 0) + 1,
        stage=stage,
        seq=seq,
        token_start=span[0],
        token_end=span[1],
        risk=risk,
        category=category,
        probs=RiskProbs(safe=1.0 - p_unsafe, controversial=0.0, unsafe=p_unsafe),
        action=action,
        status=status,
        tier="stream",
        model_id=model,
        model_revision="r1",
        policy="strict",
        worker_id=worker,
        latency_ms=2.5,
        flagged_token=flagged,
    )


def cutoff(seq: int, token_index: int, *, message_id: str = "m1") -> ControlEvent:
    return ControlEvent(
        event_id=f"k-{message_id}",
        conversation_id=CID,
        message_id=message_id,
        ts_ms=TS_MS + seq + 2,
        stage=Stage.RESPONSE,
        seq=seq,
        token_index=token_index,
        risk=Risk.UNSAFE,
        category="Violent",
        policy="strict",
        reason="response judged unsafe under the strict policy",
    )


def cut_off_conversation() -> list[Event]:
    """A story (probabilities exact in float32, as Parquet keeps them) that turns unsafe in its second chunk and is cut off there; the third chunk came late.

    Token ranges count words (the tests' tokenizer splits on spaces): "Once upon a " is tokens 0-3,
    "time BAD " 3-5, and the debounce fired at token 4, "BAD".
    """
    return [
        prompt(),
        verdict(None, p_unsafe=0.125),
        chunk(0, "Once upon a "),
        verdict(0, span=(0, 3), p_unsafe=0.25),
        chunk(1, "time BAD "),
        verdict(
            1,
            span=(3, 5),
            risk=Risk.UNSAFE,
            action=Action.CUTOFF,
            category="Violent",
            p_unsafe=0.75,
            flagged=4,
            worker="w2",
        ),
        cutoff(1, 4),
        chunk(2, "things "),
        verdict(2, span=(5, 5), risk=Risk.UNSAFE, action=Action.CUTOFF, status=VerdictStatus.AFTER_CUTOFF, worker="w2"),
    ]


def words(chunks: Sequence[TokenChunkEvent]) -> list[str]:
    """The tests' ``TokenTexts``: one token per space-separated word."""
    return "".join(c.text or "" for c in chunks).split()
