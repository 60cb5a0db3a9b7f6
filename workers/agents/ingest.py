"""Input agents: prompts and token chunks, decoded at the boundary and handed to the lanes.

Consumes ``<prefix>.prompts`` and ``<prefix>.tokens`` (co-partitioned by conversation id) with
acknowledgement turned off in faust: a record is acknowledged only when the moderator has
published its verdict (and cut-off) and committed the conversation state, or has dead-lettered it.
faust then commits offsets up to the first record not yet acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from topics import codec
from topics.errors import DecodeError
from topics.events import PromptEvent, TokenChunkEvent
from workers.metrics import Sensor
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import ConversationRouter, Work
from workers.moderation.moderator import Moderator

if TYPE_CHECKING:
    import faust

logger = logging.getLogger(__name__)

InputEvent = type[PromptEvent] | type[TokenChunkEvent]
Tap = Callable[[PromptEvent | TokenChunkEvent, Delivery], None]


class Ingest:
    """Turns faust events into lane work, or into dead letters when they cannot be decoded."""

    def __init__(
        self,
        moderator: Moderator,
        router: ConversationRouter,
        *,
        max_bytes: int,
        sensor: Sensor,
        tap: Tap | None = None,
    ) -> None:
        """``tap`` (the shadow guard's ``offer``) sees every decoded event before the lanes do; it
        must return at once."""
        self._moderator = moderator
        self._router = router
        self._max_bytes = max_bytes
        self._sensor = sensor
        self._tap = tap

    async def consume(self, stream: faust.StreamT[Any], kind: InputEvent) -> None:
        """The agent body: runs for the life of the worker."""
        manual = stream.noack()  # type: ignore[attr-defined]  # missing from faust's StreamT
        async for event in manual.events():
            await self.accept(event, manual, kind)

    async def accept(self, event: faust.EventT[Any], stream: faust.StreamT[Any], kind: InputEvent) -> None:
        message = event.message
        delivery = Delivery(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value if isinstance(message.value, bytes) else bytes(message.value or b""),
            received=time.perf_counter(),
            produced=message.timestamp if message.timestamp else None,
        )
        self._sensor.on_record(delivery.topic)
        self._router.observe(delivery)

        async def ack() -> None:
            await stream.ack(event)

        try:
            decoded = codec.decode(delivery.value, kind, max_bytes=self._max_bytes)
        except DecodeError as exc:
            await self._moderator.reject_delivery(delivery, exc.reason, exc.detail, field=exc.field)
            await ack()
            return
        # A record without a key lands on any partition, so its conversation's events could be
        # applied by two workers, out of order: it is refused like a wrong key.
        if delivery.key != decoded.conversation_id.encode():
            await self._moderator.reject_delivery(
                delivery,
                "key_mismatch",
                f"the record key must be the conversation_id (it decides the partition); the record has "
                f"{'no key' if delivery.key is None else 'another key'}, the event names {decoded.conversation_id!r}",
                field="conversation_id",
            )
            await ack()
            return
        if self._tap is not None:
            self._tap(decoded, delivery)
        await self._router.submit(Work(event=decoded, delivery=delivery, ack=ack))
