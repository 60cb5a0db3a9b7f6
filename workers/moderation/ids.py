"""Deterministic event ids, so that effects re-emitted after a redelivery carry the same identity."""

from __future__ import annotations

import uuid

from topics.events import Stage

_NAMESPACE = uuid.UUID("5d0f3c1e-8f8e-4a59-9d7e-3f1b2c6a7e10")


def verdict_id(conversation_id: str, message_id: str, stage: Stage, seq: int | None) -> str:
    """Id of the verdict on one prompt (``seq`` None) or one chunk."""
    return uuid.uuid5(_NAMESPACE, f"v\x1f{conversation_id}\x1f{message_id}\x1f{stage}\x1f{seq}").hex


def control_id(conversation_id: str, message_id: str) -> str:
    """Id of the (single) cut-off of a message."""
    return uuid.uuid5(_NAMESPACE, f"c\x1f{conversation_id}\x1f{message_id}").hex


def turn_key(conversation_id: str, message_id: str) -> str:
    """The guard backend's cache key for one turn."""
    return f"{conversation_id}\x1f{message_id}"
