"""What the fuzzer publishes and what it expects back.

A ``Record`` is one Kafka record (raw key and value bytes for one of the input topics) with the
dead-letter reason it must earn, if any. A ``Script`` is one conversation's records in publishing
order together with every verdict and cut-off the conversation must get: the checks hold the
worker to exactly that, no more and no less.
"""

from __future__ import annotations

from dataclasses import dataclass

from topics.events import Action, VerdictStatus
from topics.names import Topic


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish.

    ``dead_letter`` is the reason of the one dead letter the record must get (matched by source
    topic, partition and offset), or None when it must get none. ``field`` is the field path that
    dead letter must name, when the strategy that built the record knows it.
    """

    topic: Topic
    key: bytes | None
    value: bytes
    strategy: str
    dead_letter: str | None = None
    field: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedVerdict:
    """A verdict a conversation must get exactly once (one distinct verdict id)."""

    message_id: str
    seq: int | None  # None: the prompt's verdict
    status: VerdictStatus
    action: Action


@dataclass(frozen=True, slots=True)
class Script:
    """One conversation: its records and everything it must get back.

    ``opening`` records are published (and their verdicts awaited) before the interleaved traffic,
    for scripts whose outcome depends on their prompt having been applied first: prompts and
    chunks travel on different topics, so nothing else orders them. ``verdicts`` lists every
    verdict of the conversation (any other is a failure); ``cutoffs`` counts its control events,
    each of which must contain ``cutoff_reason`` when that is set. ``max_log_tokens`` bounds the
    conversation's token log in the state store once everything is answered. ``good`` scripts are
    the well-formed traffic whose verdicts the fuzzer checks for correctness.
    """

    conversation_id: str
    kind: str
    records: tuple[Record, ...]
    verdicts: tuple[ExpectedVerdict, ...] = ()
    cutoffs: int = 0
    cutoff_reason: str | None = None
    opening: tuple[Record, ...] = ()
    good: bool = False
    max_log_tokens: int | None = None

    @property
    def all_records(self) -> tuple[Record, ...]:
        return self.opening + self.records
