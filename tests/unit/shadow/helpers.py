"""Shared doubles for the shadow guard's unit tests."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from topics.events import Message, PromptEvent, Role, TokenChunkEvent, VerdictEvent
from workers.metrics import NullSensor
from workers.moderation.delivery import Delivery
from workers.state.memory_store import MemoryStore


class CountingSensor(NullSensor):
    """Counts every hook call by name and first argument."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    def on_verdict(self, stage: str, risk: str, action: str, latency_s: float, tier: str = "") -> None:
        self.calls["verdict", stage] += 1

    def on_cutoff(self, stage: str, category: str | None = None) -> None:
        self.calls["cutoff", stage] += 1

    def on_lag(self, stage: str, lag_s: float) -> None:
        self.calls["lag", stage] += 1

    def on_shadow_event(self, outcome: str) -> None:
        self.calls["shadow_event", outcome] += 1

    def on_shadow_verdict(self, stage: str, latency_s: float) -> None:
        self.calls["shadow_verdict", stage] += 1

    def on_shadow_discard(self, kind: str) -> None:
        self.calls["shadow_discard", kind] += 1


class RecordingPublisher:
    def __init__(self) -> None:
        self.verdicts: list[VerdictEvent] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def publish_many(self, verdicts: Sequence[VerdictEvent]) -> None:
        self.verdicts.extend(verdicts)


class PingableStore(MemoryStore):
    async def ping(self) -> bool:
        return True


def prompt(cid: str, text: str = "Hello there", mid: str = "m1", policy: str | None = None) -> PromptEvent:
    return PromptEvent(
        conversation_id=cid, message_id=mid, messages=(Message(role=Role.USER, content=text),), policy=policy
    )


def chunk(cid: str, seq: int, text: str, *, final: bool = False, mid: str = "m1") -> TokenChunkEvent:
    return TokenChunkEvent(conversation_id=cid, message_id=mid, seq=seq, text=text, final=final)


def delivery(event: PromptEvent | TokenChunkEvent, offset: int = 0) -> Delivery:
    topic = "guard.prompts" if isinstance(event, PromptEvent) else "guard.tokens"
    return Delivery(topic, 0, offset, event.conversation_id.encode(), b"{}", time.perf_counter(), time.time())
