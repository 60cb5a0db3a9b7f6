"""Lanes: per-conversation order, cross-conversation concurrency, parking and expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

from topics.events import Message, PromptEvent, Role, TokenChunkEvent
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import ConversationRouter, Outcome, Work


def _delivery(offset: int = 0) -> Delivery:
    return Delivery(topic="t", partition=0, offset=offset, key=b"c", value=b"{}", received=time.perf_counter())


def prompt(cid: str) -> PromptEvent:
    return PromptEvent(conversation_id=cid, message_id="m", messages=(Message(role=Role.USER, content="hi"),))


def chunk(cid: str, seq: int, *, message: str = "m", final: bool = False) -> TokenChunkEvent:
    return TokenChunkEvent(conversation_id=cid, message_id=message, seq=seq, text="x", final=final)


class ScriptedHandler:
    """Applies prompts, then chunks strictly in seq order; records what it did and the runs it got.

    It processes a run's events one by one and stops after the first one it cannot apply, or after
    ``take`` events (the rest must come back from the lane)."""

    def __init__(self, delay: float = 0.0, take: int | None = None) -> None:
        self.applied: list[tuple[str, int]] = []
        self.expired: list[tuple[str, int, Outcome, str]] = []
        self.acked = 0
        self.opened: set[str] = set()
        self.next_seq: dict[str, int] = {}
        self.delay = delay
        self.concurrent = 0
        self.max_concurrent = 0
        self.runs: list[list[int]] = []
        self.take = take

    async def handle(self, run: Sequence[Work]) -> list[Outcome]:
        self.runs.append([w.event.seq if isinstance(w.event, TokenChunkEvent) else -1 for w in run])
        outcomes = []
        for work in run[: self.take]:
            outcomes.append(await self.handle_one(work))
            if outcomes[-1] is not Outcome.APPLIED:
                break
        return outcomes

    async def handle_one(self, work: Work) -> Outcome:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(self.delay)
            cid = work.conversation_id
            if isinstance(work.event, PromptEvent):
                self.opened.add(cid)
                self.next_seq[cid] = 0
                self.applied.append((cid, -1))
            else:
                if cid not in self.opened:
                    return Outcome.WAIT_PROMPT
                if work.event.seq != self.next_seq[cid]:
                    return Outcome.WAIT_SEQ
                self.next_seq[cid] += 1
                self.applied.append((cid, work.event.seq))
            await work.ack()
            return Outcome.APPLIED
        finally:
            self.concurrent -= 1

    async def expire(self, work: Work, outcome: Outcome, why: str) -> None:
        seq = work.event.seq if isinstance(work.event, TokenChunkEvent) else -1
        self.expired.append((work.conversation_id, seq, outcome, why))
        await work.ack()


def router(handler: ScriptedHandler, **kw: float) -> ConversationRouter:
    opts = {"max_in_flight": 100, "prompt_wait_s": 0.2, "reorder_window": 4, "reorder_wait_s": 0.2} | kw
    return ConversationRouter(handler, **opts)  # type: ignore[arg-type]


async def submit(r: ConversationRouter, h: ScriptedHandler, event: PromptEvent | TokenChunkEvent) -> None:
    async def ack() -> None:
        h.acked += 1

    await r.submit(Work(event=event, delivery=_delivery(), ack=ack))


async def test_chunks_before_prompt_and_out_of_order_are_applied_in_order() -> None:
    h = ScriptedHandler()
    r = router(h)
    for ev in [chunk("a", 2), chunk("a", 0), chunk("a", 1), prompt("a"), chunk("a", 3)]:
        await submit(r, h, ev)
    assert await r.drain(2.0)
    assert h.applied == [("a", -1), ("a", 0), ("a", 1), ("a", 2), ("a", 3)]
    assert h.acked == 5 and not h.expired


async def test_conversations_run_concurrently() -> None:
    h = ScriptedHandler(delay=0.05)
    r = router(h)
    start = time.monotonic()
    for i in range(20):
        await submit(r, h, prompt(f"c{i}"))
    assert await r.drain(2.0)
    assert time.monotonic() - start < 0.5  # 20 x 50 ms serially would take 1 s
    assert h.max_concurrent > 1


async def test_one_conversation_is_serial() -> None:
    h = ScriptedHandler(delay=0.01)
    r = router(h)
    await submit(r, h, prompt("a"))
    for s in range(5):
        await submit(r, h, chunk("a", s))
    assert await r.drain(2.0)
    assert h.max_concurrent == 1
    assert [s for _, s in h.applied] == [-1, 0, 1, 2, 3, 4]


async def test_missing_prompt_expires() -> None:
    h = ScriptedHandler()
    r = router(h, prompt_wait_s=0.05)
    await submit(r, h, chunk("a", 0))
    assert await r.drain(2.0)
    assert h.expired == [("a", 0, Outcome.WAIT_PROMPT, "waited too long")]
    assert h.acked == 1


async def test_gap_expires_in_seq_order_and_window_is_bounded() -> None:
    h = ScriptedHandler()
    r = router(h, reorder_wait_s=0.05, reorder_window=2)
    await submit(r, h, prompt("a"))
    for s in (3, 2, 5):  # seq 0 never arrives
        await submit(r, h, chunk("a", s))
    assert await r.drain(2.0)
    # The third parked chunk overflows the window of 2 at once; the others expire later, by seq.
    assert [(s, why) for _, s, _, why in h.expired] == [
        (5, "more than 2 events waiting"),
        (2, "waited too long"),
        (3, "waited too long"),
    ]
    assert h.acked == 4


async def test_in_flight_bound_backpressures_submit() -> None:
    h = ScriptedHandler(delay=0.05)
    r = router(h, max_in_flight=2)
    await submit(r, h, prompt("a"))
    await submit(r, h, prompt("b"))
    t = asyncio.create_task(submit(r, h, prompt("c")))
    await asyncio.sleep(0.01)
    assert not t.done()  # two events open: the third waits for room
    await asyncio.wait_for(t, 1.0)
    assert await r.drain(2.0)
    assert h.acked == 3


async def test_handler_crash_does_not_stop_other_lanes() -> None:
    class Crashing(ScriptedHandler):
        async def handle_one(self, work: Work) -> Outcome:
            if work.conversation_id == "bad":
                raise RuntimeError("boom")
            return await super().handle_one(work)

    h = Crashing()
    r = router(h)
    await submit(r, h, prompt("bad"))
    await submit(r, h, prompt("good"))
    assert await r.drain(2.0)
    assert h.applied == [("good", -1)]


async def test_queued_chunks_are_handed_over_as_one_run() -> None:
    h = ScriptedHandler()
    r = router(h)
    await submit(r, h, prompt("a"))
    for s in range(5):
        await submit(r, h, chunk("a", s))
    assert await r.drain(2.0)
    assert h.runs == [[-1], [0, 1, 2, 3, 4]]
    assert [s for _, s in h.applied] == [-1, 0, 1, 2, 3, 4]
    assert h.acked == 6


async def test_a_run_ends_at_a_gap_a_final_chunk_another_message_and_max_run() -> None:
    class Accepting(ScriptedHandler):
        async def handle_one(self, work: Work) -> Outcome:
            await work.ack()
            return Outcome.APPLIED

    h = Accepting()
    r = ConversationRouter(h, max_in_flight=100, prompt_wait_s=0.2, reorder_window=8, reorder_wait_s=0.2, max_run=3)
    events = [chunk("a", s) for s in (0, 1, 3, 4)]  # a gap after 1
    events += [chunk("a", 5, final=True), chunk("a", 6)]  # nothing follows a final chunk in a run
    events += [chunk("a", 7, message="other"), *(chunk("a", s) for s in range(8, 13))]
    for ev in events:
        await submit(r, h, ev)
    assert await r.drain(2.0)
    assert h.runs == [[0, 1], [3, 4, 5], [6], [7], [8, 9, 10], [11, 12]]


async def test_what_the_handler_leaves_of_a_run_comes_back_in_order() -> None:
    h = ScriptedHandler(take=1)
    r = router(h)
    await submit(r, h, prompt("a"))
    for s in range(4):
        await submit(r, h, chunk("a", s))
    assert await r.drain(2.0)
    assert h.runs == [[-1], [0, 1, 2, 3], [1, 2, 3], [2, 3], [3]]
    assert [s for _, s in h.applied] == [-1, 0, 1, 2, 3]
    assert h.acked == 5


async def test_a_run_that_cannot_start_is_parked_whole() -> None:
    h = ScriptedHandler()
    r = router(h, reorder_window=8)
    for s in range(3):
        await submit(r, h, chunk("a", s))
    await asyncio.sleep(0.01)
    await submit(r, h, prompt("a"))
    assert await r.drain(2.0)
    assert h.runs[0] == [0, 1, 2]
    assert [s for _, s in h.applied] == [-1, 0, 1, 2]
    assert not h.expired and h.acked == 4


async def test_a_gap_waits_while_the_log_behind_it_is_still_being_read() -> None:
    """A backlog does not eat into the reorder wait: while the worker is still reading records
    published within the wait after the parked chunk, the chunk stays parked past the worker-clock
    wait, and applies when its predecessor arrives."""
    h = ScriptedHandler()
    r = router(h, reorder_wait_s=0.05)
    published = time.time()

    def timed(offset: int, produced: float) -> Delivery:
        return replace(_delivery(offset), produced=produced)

    async def ack() -> None:
        h.acked += 1

    await submit(r, h, prompt("a"))
    await r.submit(Work(event=chunk("a", 1), delivery=timed(1, published), ack=ack))
    for i in range(15):  # 0.3 s of backlog, six times the wait, all published within the wait
        r.observe(timed(2 + i, published + 0.001 * i))
        await asyncio.sleep(0.02)
    assert not h.expired
    await r.submit(Work(event=chunk("a", 0), delivery=timed(20, published + 0.02), ack=ack))
    assert await r.drain(2.0)
    assert h.applied == [("a", -1), ("a", 0), ("a", 1)] and not h.expired


async def test_a_gap_expires_once_the_log_has_moved_past_the_wait() -> None:
    h = ScriptedHandler()
    r = router(h, reorder_wait_s=0.05)
    published = time.time()
    await submit(r, h, prompt("a"))

    async def ack() -> None:
        h.acked += 1

    await r.submit(Work(event=chunk("a", 1), delivery=replace(_delivery(1), produced=published), ack=ack))
    r.observe(replace(_delivery(2), produced=published + 1.0))
    assert await r.drain(2.0)
    assert h.expired == [("a", 1, Outcome.WAIT_SEQ, "waited too long")]
