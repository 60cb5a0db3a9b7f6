"""Where the moderator's effects go: verdicts, cut-offs and dead letters.

``publish`` returns once the record is durably written (the broker acknowledged it): the worker
acknowledges the source message only after that, which is the at-least-once guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from topics.events import ControlEvent, DeadLetter, VerdictEvent

Effect = VerdictEvent | ControlEvent | DeadLetter
T = TypeVar("T")


class EffectSink(Protocol):
    async def publish(self, effect: Effect) -> None:
        """Durably publish ``effect`` (keyed by its conversation id)."""

    async def publish_many(self, effects: Sequence[Effect]) -> None:
        """Durably publish ``effects``, sent in order; returns once the broker acknowledged all."""


class RecordingSink:
    """An in-memory sink for unit tests: keeps every published effect in order."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []

    async def publish(self, effect: Effect) -> None:
        self.effects.append(effect)

    async def publish_many(self, effects: Sequence[Effect]) -> None:
        self.effects.extend(effects)

    def of_type(self, kind: type[T]) -> list[T]:
        return [e for e in self.effects if isinstance(e, kind)]
