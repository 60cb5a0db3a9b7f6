"""The shadow guard's effect sink: verdicts to the shadow topic, and nothing else anywhere.

The shadow runs the live ``Moderator``, which publishes verdicts, cut-offs and dead letters. Here
its verdicts are marked and handed to the shadow publisher; its cut-offs never reach the control
topic (the producer must not stop on a guard nobody switched on) and its dead letters never reach
the DLQ (the live worker owns it and dead-letters the same records itself); both are counted.

A shadow verdict keeps the live verdict's identity fields (conversation, message, stage, seq), which
the compare command joins on, but carries an ``event_id`` of its own (derived from the live one, so
still stable under redelivery: a consumer of both topics never takes one for the other) and a tier
prefixed with ``shadow:``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from topics.events import ControlEvent, VerdictEvent
from workers.metrics import Sensor
from workers.moderation.sink import Effect

SHADOW_TIER_PREFIX = "shadow:"
_NAMESPACE = uuid.UUID("0b7e4c7a-6a51-4a8e-9a0c-2f5d3b9e61c4")

PublishVerdicts = Callable[[Sequence[VerdictEvent]], Awaitable[None]]


def shadow_verdict_id(live_id: str) -> str:
    """The id of the shadow verdict on the prompt or chunk whose live verdict id is ``live_id``."""
    return uuid.uuid5(_NAMESPACE, live_id).hex


def as_shadow(verdict: VerdictEvent) -> VerdictEvent:
    """``verdict`` marked as the shadow's: its own id, and its tier prefixed with ``shadow:``."""
    return replace(verdict, event_id=shadow_verdict_id(verdict.event_id), tier=SHADOW_TIER_PREFIX + verdict.tier)


def unshadowed_tier(tier: str) -> str:
    """The tier of the guard that decided, without the shadow mark."""
    return tier.removeprefix(SHADOW_TIER_PREFIX)


class ShadowSink:
    """``EffectSink`` of the shadow: publishes only verdicts, through ``publish``."""

    def __init__(self, publish: PublishVerdicts, sensor: Sensor) -> None:
        self._publish = publish
        self._sensor = sensor
        self.discarded_controls = 0
        self.discarded_dead_letters = 0

    async def publish(self, effect: Effect) -> None:
        await self.publish_many((effect,))

    async def publish_many(self, effects: Sequence[Effect]) -> None:
        verdicts = []
        for effect in effects:
            if isinstance(effect, VerdictEvent):
                verdicts.append(as_shadow(effect))
            elif isinstance(effect, ControlEvent):
                self.discarded_controls += 1
                self._sensor.on_shadow_discard("control")
            else:
                self.discarded_dead_letters += 1
                self._sensor.on_shadow_discard("dead_letter")
        if verdicts:
            await self._publish(verdicts)
