"""``audit --replay``: re-judge an archived conversation with another guard.

The archived prompts and chunks go, message by message and in ``seq`` order, through the worker's
own ``Moderator`` over the given guard backend, with an in-memory state store and a sink that
keeps what it publishes. So the replay decides exactly as a worker running that guard would have
(the same tokenisation, debounce, policy and cut-off rules), and its verdicts are events of the
same shape as the archived ones. Each message is judged under the policy its original prompt
verdict names (the one the worker resolved), unless a policy is given for the whole replay.

A message whose prompt is not in the archive cannot be replayed (the answer has no context), and
a message's replay stops at a ``seq`` missing from the archive; both are reported as notes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from topics import codec
from topics.events import Action, ControlEvent, DeadLetter, PromptEvent, Stage, TokenChunkEvent, VerdictEvent
from topics.names import Topic
from workers.audit.read import ArchivedConversation
from workers.backends.base import GuardBackend
from workers.engine.debounce import Policy
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import Outcome, Work
from workers.moderation.moderator import Moderator, ModeratorConfig
from workers.moderation.sink import RecordingSink
from workers.settings import Settings
from workers.state.memory_store import MemoryStore

REPLAY_WORKER_ID = "audit-replay"
"""The ``worker_id`` of the replay's verdicts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Replayed:
    """The replay's verdicts and cut-offs, and a note for each message it could not replay whole."""

    conversation: ArchivedConversation
    """The archived conversation with the replay's verdicts and cut-offs in place of the archived ones."""
    notes: tuple[str, ...]


@asynccontextmanager
async def guard_backend(settings: Settings, checkpoint: str) -> AsyncIterator[GuardBackend]:
    """The configured guard backend (``guard.backend``) over ``checkpoint``, started and closed."""
    from workers.backends import make_backend

    guard = settings.guard.model_copy(update={"checkpoint": checkpoint})
    backend = make_backend(settings.model_copy(update={"guard": guard}))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def replay(
    backend: GuardBackend, conversation: ArchivedConversation, settings: Settings, *, policy: Policy | None = None
) -> Replayed:
    """Re-judge ``conversation`` with ``backend`` (started), under ``policy`` or each message's own."""
    sink = RecordingSink()
    moderator = Moderator(backend, MemoryStore(), sink, _config(settings))
    notes: list[str] = []
    for prompt in conversation.prompts:
        chunks = sorted((c for c in conversation.chunks if c.message_id == prompt.message_id), key=lambda c: c.seq)
        judged_under = policy or _original_policy(conversation, prompt)
        event = prompt if judged_under is None else replace(prompt, policy=judged_under.value)
        note = await _replay_message(moderator, event, chunks, settings)
        if note:
            notes.append(note)
    prompted = {p.message_id for p in conversation.prompts}
    notes += [
        f"message {m}: its prompt is not in the archive, so its answer cannot be re-judged"
        for m in dict.fromkeys(c.message_id for c in conversation.chunks if c.message_id not in prompted)
    ]
    notes += [
        f"the replay rejected a record of {d.source_topic} ({d.reason}: {d.detail})" for d in sink.of_type(DeadLetter)
    ]
    judged = replace(
        conversation, verdicts=tuple(sink.of_type(VerdictEvent)), cutoffs=tuple(sink.of_type(ControlEvent))
    )
    return Replayed(conversation=judged, notes=tuple(notes))


async def _replay_message(
    moderator: Moderator, prompt: PromptEvent, chunks: list[TokenChunkEvent], settings: Settings
) -> str | None:
    """Judge one message's prompt, then its chunks one at a time; a note when it stopped early."""
    prefix = settings.kafka.topic_prefix
    await moderator.handle([_work(prompt, Topic.PROMPTS.full_name(prefix))])
    for chunk in chunks:
        (outcome,) = await moderator.handle([_work(chunk, Topic.TOKENS.full_name(prefix))])
        if outcome is Outcome.WAIT_SEQ:
            return f"message {prompt.message_id}: seq {chunk.seq - 1} is not in the archive; replayed up to it"
        if outcome is Outcome.WAIT_PROMPT:  # the prompt was rejected (a dead letter says why)
            return f"message {prompt.message_id}: its prompt could not be judged, so neither could its answer"
    return None


def _original_policy(conversation: ArchivedConversation, prompt: PromptEvent) -> Policy | None:
    """The policy the original prompt verdict was decided under (None: use the prompt's own)."""
    verdict = next(
        (v for v in conversation.verdicts if v.message_id == prompt.message_id and v.stage is Stage.PROMPT), None
    )
    try:
        return Policy(verdict.policy) if verdict is not None else None
    except ValueError:
        return None


def _config(settings: Settings) -> ModeratorConfig:
    guard = settings.guard
    return ModeratorConfig(
        worker_id=REPLAY_WORKER_ID,
        default_policy=Policy(guard.policy),
        dlq_payload_bytes=settings.kafka.dlq_payload_bytes,
        on_error=Action(guard.on_error),
        on_state_loss=Action(guard.on_state_loss),
    )


def _work(event: PromptEvent | TokenChunkEvent, topic_name: str) -> Work:
    """``event`` as the moderator receives it from a lane (nothing to acknowledge in a replay)."""
    delivery = Delivery(
        topic=topic_name,
        partition=0,
        offset=0,
        key=event.conversation_id.encode(),
        value=codec.encode(event),
        received=time.perf_counter(),
    )
    return Work(event=event, delivery=delivery, ack=_nothing)


async def _nothing() -> None:
    return None
