"""Wire events: what producers, workers and compliance consumers exchange over Kafka.

Every event is a frozen, slotted, keyword-only dataclass. Each serialises with a ``kind`` tag and a
``schema_version``; the Kafka key is always ``conversation_id`` (the dead letter keys by the source
message's key when it had one). Fields are only ever added with defaults; a breaking change bumps
``SCHEMA_VERSION``.

A conversation's turn is one ``message_id``: the ``PromptEvent`` that opens it and the
``TokenChunkEvent`` stream of the assistant's answer share it. At most one ``ControlEvent`` is ever
published per ``(conversation_id, message_id)``.
"""

from __future__ import annotations

import time
import typing
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from topics.errors import InvalidValue

SCHEMA_VERSION = 1
"""The schema version this code writes; it reads every version up to this one."""


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class Risk(StrEnum):
    """Risk levels of Qwen3Guard-Stream, in increasing severity."""

    SAFE = "safe"
    CONTROVERSIAL = "controversial"
    UNSAFE = "unsafe"


class Action(StrEnum):
    ALLOW = "allow"
    FLAG = "flag"
    CUTOFF = "cutoff"


class Stage(StrEnum):
    PROMPT = "prompt"
    RESPONSE = "response"


class VerdictStatus(StrEnum):
    """Why a verdict exists: the chunk was judged, it arrived after its message was cut off, the
    guard failed on it (the verdict then says ``unsafe`` and carries the action of the worker's
    ``guard.on_error``: a cut-off by default, never a silent pass), or it had no context."""

    MODERATED = "moderated"
    AFTER_CUTOFF = "after_cutoff"
    GUARD_ERROR = "guard_error"
    CONTEXT_LOST = "context_lost"
    """No context to judge the chunk in: its prompt never reached the worker within
    ``worker.prompt_wait_s``, or the conversation's state was lost (a Redis restarted empty, an
    expiry mid-turn). The verdict says ``unsafe`` and carries ``guard.on_state_loss``'s action."""


class ControlAction(StrEnum):
    CUTOFF = "cutoff"


MAX_ID_LENGTH = 256
"""Longest conversation or message id accepted (they become Redis keys and Kafka keys)."""


def _require(ok: bool, field_name: str, detail: str) -> None:
    if not ok:
        raise InvalidValue(detail, field=field_name)


def _check_ids(conversation_id: str, message_id: str) -> None:
    for name, value in (("conversation_id", conversation_id), ("message_id", message_id)):
        _require(0 < len(value) <= MAX_ID_LENGTH, name, f"must be 1..{MAX_ID_LENGTH} characters")


def _check_token_ids(token_ids: tuple[int, ...] | None) -> None:
    if token_ids is not None:
        _require(all(0 <= t < 1 << 31 for t in token_ids), "token_ids", "token ids must be in [0, 2**31)")


def new_event_id() -> str:
    """A random event id for events whose identity is not derived from their content."""
    return uuid.uuid4().hex


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One turn of the conversation as the producer saw it."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskProbs:
    """Softmax probabilities of the risk head at one token (they sum to 1)."""

    safe: float
    controversial: float
    unsafe: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptEvent:
    """A user turn to moderate, with the conversation before it as context.

    Exactly one of ``messages`` (rendered by the worker with the guard's chat template) or
    ``token_ids`` (already rendered and tokenised by a producer sharing the guard's tokenizer,
    ending with the user's end-of-turn token) is set. The last user message is the one judged.
    """

    kind: Literal["prompt"] = field(default="prompt", init=False)

    schema_version: int = SCHEMA_VERSION
    event_id: str = field(default_factory=new_event_id)
    conversation_id: str
    message_id: str
    ts_ms: int = field(default_factory=now_ms)
    messages: tuple[Message, ...] = ()
    token_ids: tuple[int, ...] | None = None
    tenant: str | None = None
    policy: str | None = None

    def __post_init__(self) -> None:
        _check_ids(self.conversation_id, self.message_id)
        _check_token_ids(self.token_ids)
        _require(
            (self.token_ids is None) != (not self.messages),
            "messages",
            "exactly one of messages or token_ids must be given",
        )
        if self.messages:
            _require(
                any(m.role is Role.USER for m in self.messages),
                "messages",
                "the conversation has no user message to judge",
            )
        else:
            _require(bool(self.token_ids), "token_ids", "token_ids must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenChunkEvent:
    """The next piece of the assistant's streamed answer.

    ``seq`` counts chunks of one message from 0. Exactly one of ``text`` (a text delta, re-tokenised
    by the worker) or ``token_ids`` is set; the last chunk has ``final`` set and may be empty.
    """

    kind: Literal["token_chunk"] = field(default="token_chunk", init=False)

    schema_version: int = SCHEMA_VERSION
    event_id: str = field(default_factory=new_event_id)
    conversation_id: str
    message_id: str
    ts_ms: int = field(default_factory=now_ms)
    seq: int
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    final: bool = False

    def __post_init__(self) -> None:
        _check_ids(self.conversation_id, self.message_id)
        _check_token_ids(self.token_ids)
        _require(self.seq >= 0, "seq", "seq must be >= 0")
        _require(
            self.text is None or self.token_ids is None,
            "text",
            "a chunk carries text or token_ids, not both",
        )
        _require(
            self.final or self.text is not None or self.token_ids is not None,
            "text",
            "a non-final chunk must carry text or token_ids",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictEvent:
    """The guard's judgement of one prompt or one chunk.

    ``event_id`` derives from ``(conversation_id, message_id, stage, seq)``, so a verdict re-emitted
    after a redelivery carries the same id and consumers can drop it. ``token_start``/``token_end``
    is the half-open range of response-token indices the chunk covered (0/0 for prompts).
    ``flagged_token`` is the response-token index where the debounce fired, when it did.
    """

    kind: Literal["verdict"] = field(default="verdict", init=False)

    schema_version: int = SCHEMA_VERSION
    event_id: str
    conversation_id: str
    message_id: str
    ts_ms: int = field(default_factory=now_ms)
    stage: Stage
    seq: int | None = None
    token_start: int = 0
    token_end: int = 0
    risk: Risk
    category: str | None = None
    probs: RiskProbs | None = None
    action: Action
    status: VerdictStatus = VerdictStatus.MODERATED
    tier: str
    model_id: str
    model_revision: str = ""
    policy: str
    policy_version: int = 1
    worker_id: str = ""
    latency_ms: float = 0.0
    flagged_token: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlEvent:
    """Tells the producer of a message to stop generating it. At most one per message."""

    kind: Literal["control"] = field(default="control", init=False)

    schema_version: int = SCHEMA_VERSION
    event_id: str
    conversation_id: str
    message_id: str
    ts_ms: int = field(default_factory=now_ms)
    action: ControlAction = ControlAction.CUTOFF
    stage: Stage
    seq: int | None = None
    token_index: int | None = None
    risk: Risk
    category: str | None = None
    policy: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message the worker could not apply, with where it came from and why.

    ``payload`` holds the raw message, cut to the configured bound: as text when it was valid
    UTF-8 (``payload_encoding="utf-8"``), else base64.
    """

    kind: Literal["dead_letter"] = field(default="dead_letter", init=False)

    schema_version: int = SCHEMA_VERSION
    event_id: str = field(default_factory=new_event_id)
    ts_ms: int = field(default_factory=now_ms)
    source_topic: str
    source_partition: int
    source_offset: int
    conversation_id: str | None = None
    reason: str
    field: str | None = None
    detail: str
    payload: str
    payload_encoding: str = "utf-8"
    payload_size: int
    payload_truncated: bool = False
    worker_id: str = ""


def kind_of(cls: type[typing.Any]) -> str:
    """The ``kind`` tag an event class writes (slotted dataclasses keep defaults off the class)."""
    return typing.cast(str, cls.__dataclass_fields__["kind"].default)


Event = PromptEvent | TokenChunkEvent | VerdictEvent | ControlEvent | DeadLetter
EVENT_TYPES: tuple[type[Event], ...] = (PromptEvent, TokenChunkEvent, VerdictEvent, ControlEvent, DeadLetter)
