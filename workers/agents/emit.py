"""Publishing the moderator's effects to Kafka through the faust app's producer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from topics import codec
from topics.events import ControlEvent, DeadLetter, VerdictEvent
from topics.names import Topic
from workers.moderation.sink import Effect

if TYPE_CHECKING:
    import faust


class KafkaSink:
    """``EffectSink`` on the faust producer; ``publish`` returns once the broker acknowledged."""

    def __init__(self, app: faust.App, prefix: str) -> None:
        self._app = app
        self._names = {
            VerdictEvent: Topic.VERDICTS.full_name(prefix),
            ControlEvent: Topic.CONTROL.full_name(prefix),
            DeadLetter: Topic.DEAD_LETTER.full_name(prefix),
        }

    async def publish(self, effect: Effect) -> None:
        await self.publish_many((effect,))

    async def publish_many(self, effects: Sequence[Effect]) -> None:
        # Each send is queued before the next (so a conversation's records keep their order on a
        # partition); the acknowledgements are awaited together.
        acks = []
        for effect in effects:
            key = effect.conversation_id.encode() if effect.conversation_id else None
            value = codec.encode(effect)
            acks.append(await self._app.producer.send(self._names[type(effect)], key, value, None, None, None))
        await asyncio.gather(*acks)
