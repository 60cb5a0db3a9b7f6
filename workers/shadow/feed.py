"""The hand-off from the live ingest to the shadow guard: a bounded queue that never waits.

``offer`` is called by the live ingest for every decoded prompt and chunk, in the order the live
worker takes them; it only appends to a queue (no await, no lock), so the live path never waits for
the shadow. One task, ``run``, hands the queued events to the shadow's lanes; when the shadow's
lanes are full (``shadow.max_in_flight``) that task waits, the queue fills, and from
``shadow.queue_size`` events on further events are dropped.

A dropped event marks its message incomplete: the message's later events are skipped, because the
shadow judging a message without one of its chunks (or without its prompt) would publish verdicts
that are wrong rather than missing. Every offer is counted once, as ``queued``, ``dropped`` or
``skipped`` (``Sensor.on_shadow_event``), so the gap between live and shadow verdicts is explained.

A partition assignment reaches the shadow's moderator (new owner epochs in the shadow's own state)
before any event queued after it; it never delays the live worker's own assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from topics.events import PromptEvent, TokenChunkEvent
from workers.metrics import Sensor
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import Work

logger = logging.getLogger(__name__)

INCOMPLETE_TURNS_KEPT = 100_000
"""Messages remembered as incomplete (oldest forgotten first): far more than are ever open at once."""


@dataclass(frozen=True, slots=True)
class FeedStats:
    """Counts since start; ``offered == queued + dropped + skipped``."""

    offered: int
    queued: int
    dropped: int
    skipped: int
    waiting: int
    """Events in the queue now."""


async def _no_ack() -> None:
    """The shadow acknowledges nothing: the live worker owns the records' offsets."""


class ShadowFeed:
    """Bounded, never-blocking queue of events for the shadow, with drop accounting."""

    def __init__(
        self,
        submit: Callable[[Work], Awaitable[None]],
        on_assigned: Callable[[Sequence[int]], Awaitable[None]],
        *,
        capacity: int,
        sensor: Sensor,
        policy: str | None = None,
    ) -> None:
        """``submit`` hands one event to the shadow's lanes (it may wait for room); ``on_assigned``
        applies a partition assignment; ``policy``, when set, replaces every prompt's policy."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._submit = submit
        self._on_assigned = on_assigned
        self._capacity = capacity
        self._sensor = sensor
        self._policy = policy
        self._queue: deque[Work] = deque()
        self._incomplete: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._assignment: list[int] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._queued = self._dropped = self._skipped = 0

    @property
    def stats(self) -> FeedStats:
        return FeedStats(
            offered=self._queued + self._dropped + self._skipped,
            queued=self._queued,
            dropped=self._dropped,
            skipped=self._skipped,
            waiting=len(self._queue),
        )

    def offer(self, event: PromptEvent | TokenChunkEvent, delivery: Delivery) -> None:
        """Queue ``event`` for the shadow, or drop it when the queue is full; returns at once."""
        turn = (event.conversation_id, event.message_id)
        if turn in self._incomplete:
            self._skipped += 1
            self._sensor.on_shadow_event("skipped")
            return
        if len(self._queue) >= self._capacity:
            self._dropped += 1
            self._sensor.on_shadow_event("dropped")
            self._incomplete[turn] = None
            if len(self._incomplete) > INCOMPLETE_TURNS_KEPT:
                self._incomplete.popitem(last=False)
            return
        if self._policy is not None and isinstance(event, PromptEvent) and event.policy != self._policy:
            event = replace(event, policy=self._policy)
        self._queue.append(Work(event=event, delivery=delivery, ack=_no_ack))
        self._queued += 1
        self._sensor.on_shadow_event("queued")
        self._wake.set()

    def assign(self, partitions: Sequence[int]) -> None:
        """Apply a new partition assignment before the events offered after it; returns at once."""
        self._assignment = list(partitions)
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="shadow-feed")

    async def aclose(self) -> None:
        """Stop handing events over; what is still queued is dropped (best effort, see the package)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Until cancelled: assignments first, then queued events in order, to the shadow."""
        while True:
            try:
                if self._assignment is not None:
                    partitions, self._assignment = self._assignment, None
                    await self._on_assigned(partitions)
                elif self._queue:
                    await self._submit(self._queue.popleft())
                else:
                    self._wake.clear()
                    await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # the shadow must never stop, nor take the worker down
                logger.exception("the shadow guard failed to take an event; carrying on")
