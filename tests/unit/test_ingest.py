"""The input agents' boundary: records become lane work, or dead letters that say why."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from tests.fakes import FakeBackend
from topics import codec
from topics.events import DeadLetter, TokenChunkEvent
from workers.agents.ingest import Ingest
from workers.engine.debounce import Policy
from workers.metrics import NullSensor
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import Work
from workers.moderation.moderator import Moderator, ModeratorConfig
from workers.moderation.sink import RecordingSink
from workers.state.memory_store import MemoryStore


class Router:
    def __init__(self) -> None:
        self.submitted: list[Work] = []
        self.observed: list[Delivery] = []

    def observe(self, delivery: Delivery) -> None:
        self.observed.append(delivery)

    async def submit(self, work: Work) -> None:
        self.submitted.append(work)


class Stream:
    def __init__(self) -> None:
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


def _setup() -> tuple[Ingest, RecordingSink, Router]:
    sink = RecordingSink()
    config = ModeratorConfig(worker_id="w", default_policy=Policy.STRICT, dlq_payload_bytes=1024)
    moderator = Moderator(FakeBackend(), MemoryStore(), sink, config)
    router = Router()
    ingest = Ingest(moderator, router, max_bytes=1 << 20, sensor=NullSensor())  # type: ignore[arg-type]
    return ingest, sink, router


def _event(key: bytes | None, value: bytes) -> Any:
    message = SimpleNamespace(topic="guard.tokens", partition=0, offset=5, key=key, value=value, timestamp=time.time())
    return SimpleNamespace(message=message)


async def test_a_record_without_a_key_is_dead_lettered_as_a_key_mismatch() -> None:
    ingest, sink, router = _setup()
    stream = Stream()
    value = codec.encode(TokenChunkEvent(conversation_id="c", message_id="m", seq=0, text="hi"))
    await ingest.accept(_event(None, value), stream, TokenChunkEvent)  # type: ignore[arg-type]
    (letter,) = sink.of_type(DeadLetter)
    assert (letter.reason, letter.field, letter.conversation_id) == ("key_mismatch", "conversation_id", None)
    assert "no key" in letter.detail
    assert len(stream.acked) == 1 and not router.submitted
    # A dead-lettered record still moves the log clock of the waits on its partition.
    assert [(d.topic, d.partition, d.offset) for d in router.observed] == [("guard.tokens", 0, 5)]


async def test_a_record_keyed_by_its_conversation_goes_to_the_lanes() -> None:
    ingest, sink, router = _setup()
    stream = Stream()
    value = codec.encode(TokenChunkEvent(conversation_id="c", message_id="m", seq=0, text="hi"))
    await ingest.accept(_event(b"c", value), stream, TokenChunkEvent)  # type: ignore[arg-type]
    assert len(router.submitted) == 1 and not sink.effects and not stream.acked
