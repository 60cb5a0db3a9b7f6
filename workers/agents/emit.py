"""Publishing the moderator's effects to Kafka through the faust app's producer."""

from __future__ import annotations

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
        key = effect.conversation_id.encode() if effect.conversation_id else None
        await self._app.producer.send_and_wait(self._names[type(effect)], key, codec.encode(effect), None, None, None)
