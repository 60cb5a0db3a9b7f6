"""The shadow's feed: never waits, drops beyond its bound, counts every offer, skips broken messages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.unit.shadow.helpers import CountingSensor, chunk, delivery, prompt
from topics.events import PromptEvent, TokenChunkEvent
from workers.moderation.lanes import Work
from workers.shadow.feed import ShadowFeed


class _Shadow:
    """Takes what the feed hands over; ``gate`` closed makes it as slow as a saturated shadow."""

    def __init__(self) -> None:
        self.taken: list[Work] = []
        self.log: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def submit(self, work: Work) -> None:
        await self.gate.wait()
        self.taken.append(work)
        event = work.event
        self.log.append(f"{event.conversation_id}:{getattr(event, 'seq', 'p')}")

    async def assigned(self, partitions: Sequence[int]) -> None:
        self.log.append(f"assigned {list(partitions)}")


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_full_queue_drops_and_counts_and_the_rest_of_that_message_is_skipped() -> None:
    shadow, sensor = _Shadow(), CountingSensor()
    feed = ShadowFeed(shadow.submit, shadow.assigned, capacity=3, sensor=sensor)
    shadow.gate.clear()  # the shadow cannot keep up
    feed.start()
    events: list[PromptEvent | TokenChunkEvent] = [
        prompt("a"),
        chunk("a", 0, "one "),
        prompt("b"),
        chunk("a", 1, "two "),  # the feed task holds one event at the gate: three queued after it
        chunk("b", 0, "uno "),  # dropped: the queue is full
        chunk("b", 1, "dos "),  # skipped: its message lost seq 0
    ]
    for n, event in enumerate(events):
        feed.offer(event, delivery(event, n))  # synchronous: the live path never awaits the shadow
        await _settle()
    stats = feed.stats
    assert (stats.offered, stats.queued, stats.dropped, stats.skipped) == (6, 4, 1, 1)
    assert sensor.calls["shadow_event", "queued"] == 4
    assert sensor.calls["shadow_event", "dropped"] == sensor.calls["shadow_event", "skipped"] == 1

    shadow.gate.set()
    await _settle()
    assert shadow.log == ["a:p", "a:0", "b:p", "a:1"]
    assert feed.stats.waiting == 0
    # Room again: a new message of the same conversation is judged; the broken one stays skipped.
    for event in (prompt("b", mid="m2"), chunk("b", 2, "tres ")):
        feed.offer(event, delivery(event))
    await _settle()
    assert shadow.log[-1] == "b:p" and feed.stats.skipped == 2
    await feed.aclose()


async def test_assignment_goes_before_later_events_and_policy_is_replaced() -> None:
    shadow = _Shadow()
    feed = ShadowFeed(shadow.submit, shadow.assigned, capacity=10, sensor=CountingSensor(), policy="loose")
    first = prompt("a", policy="strict")
    feed.offer(first, delivery(first))
    feed.assign([0, 1])
    later = prompt("b")
    feed.offer(later, delivery(later))
    feed.start()
    await _settle()
    assert shadow.log == ["assigned [0, 1]", "a:p", "b:p"]
    taken = [w.event for w in shadow.taken]
    assert all(isinstance(e, PromptEvent) and e.policy == "loose" for e in taken)
    assert [e.event_id for e in taken] == [first.event_id, later.event_id]
    await taken_ack(shadow.taken)
    await feed.aclose()


async def taken_ack(works: list[Work]) -> None:
    for work in works:
        await work.ack()  # a no-op: the live worker owns the offsets


async def test_a_failing_shadow_does_not_stop_the_feed() -> None:
    calls: list[str] = []

    async def submit(work: Work) -> None:
        calls.append(work.event.conversation_id)
        if work.event.conversation_id == "bad":
            raise RuntimeError("boom")

    async def assigned(partitions: Sequence[int]) -> None:
        pass

    feed = ShadowFeed(submit, assigned, capacity=10, sensor=CountingSensor())
    feed.start()
    for cid in ("bad", "good"):
        event = prompt(cid)
        feed.offer(event, delivery(event))
    await _settle()
    assert calls == ["bad", "good"]
    await feed.aclose()
