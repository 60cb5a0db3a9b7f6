"""Where a message came from, and how dead letters are built from it."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from topics.events import DeadLetter


@dataclass(frozen=True, slots=True)
class Delivery:
    """One consumed Kafka record, before or after decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    received: float  # time.perf_counter() when the worker got it
    produced: float | None = None  # the record's Kafka timestamp (seconds since the epoch), if it has one

    def log_extra(self, conversation_id: str | None = None, message_id: str | None = None) -> dict[str, object]:
        """The ``extra`` of a log call about this record: its coordinates, which JSON logs carry as
        keys (``workers.logs``); ids that are None are left out."""
        extra: dict[str, object] = {"kafka_topic": self.topic, "kafka_partition": self.partition}
        extra["kafka_offset"] = self.offset
        if conversation_id is not None:
            extra["conversation_id"] = conversation_id
        if message_id is not None:
            extra["message_id"] = message_id
        return extra


def dead_letter(
    delivery: Delivery,
    *,
    reason: str,
    detail: str,
    field: str | None = None,
    conversation_id: str | None = None,
    payload_limit: int,
    worker_id: str,
) -> DeadLetter:
    """A dead letter for ``delivery`` carrying at most ``payload_limit`` bytes of its payload."""
    raw = delivery.value
    payload, encoding = _payload_text(raw[:payload_limit], truncated=len(raw) > payload_limit)
    if conversation_id is None and delivery.key:
        conversation_id = delivery.key.decode("utf-8", errors="replace")
    return DeadLetter(
        source_topic=delivery.topic,
        source_partition=delivery.partition,
        source_offset=delivery.offset,
        conversation_id=conversation_id,
        reason=reason,
        field=field,
        detail=detail,
        payload=payload,
        payload_encoding=encoding,
        payload_size=len(raw),
        payload_truncated=len(raw) > payload_limit,
        worker_id=worker_id,
    )


def _payload_text(kept: bytes, *, truncated: bool) -> tuple[str, str]:
    """The kept bytes as text when they are UTF-8 (a cut may split one character), else base64."""
    for cut in range(4 if truncated else 1):
        try:
            return kept[: len(kept) - cut].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(kept).decode("ascii"), "base64"
