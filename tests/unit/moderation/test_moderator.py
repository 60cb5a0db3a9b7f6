"""The moderator against fakes: effects, their order, the token log, cut-offs, and failure handling."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from tests.fakes import FakeBackend
from topics.events import (
    Action,
    ControlEvent,
    DeadLetter,
    Message,
    PromptEvent,
    Risk,
    Role,
    Stage,
    TokenChunkEvent,
    VerdictEvent,
    VerdictStatus,
)
from workers.backends.base import PromptRequest, PromptScores, ResponseRequest, ResponseScores
from workers.engine.debounce import Policy
from workers.engine.jobs import SequenceTooLong
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import Outcome, Work
from workers.moderation.moderator import Moderator, ModeratorConfig
from workers.moderation.sink import RecordingSink
from workers.state.base import ApplyStatus, StoreUnavailable, TurnState
from workers.state.memory_store import MemoryStore

CONFIG = ModeratorConfig(worker_id="w-test", default_policy=Policy.STRICT, dlq_payload_bytes=1024)


class Harness:
    def __init__(self, store: MemoryStore | None = None, backend: FakeBackend | None = None) -> None:
        self.backend = backend or FakeBackend()
        self.store = store or MemoryStore()
        self.sink = RecordingSink()
        self.moderator = Moderator(self.backend, self.store, self.sink, CONFIG)
        self.acks = 0
        self.offset = 0

    async def feed(self, event: PromptEvent | TokenChunkEvent, *, offset: int | None = None) -> Outcome:
        """Hand ``event`` over as the next record, or as the record at ``offset`` seen again."""
        if offset is None:
            self.offset += 1
            offset = self.offset

        async def ack() -> None:
            self.acks += 1

        topic = "guard.prompts" if isinstance(event, PromptEvent) else "guard.tokens"
        delivery = Delivery(topic, 0, offset, event.conversation_id.encode(), b"{}", time.perf_counter())
        (outcome,) = await self.moderator.handle([Work(event=event, delivery=delivery, ack=ack)])
        return outcome

    async def prompt(self, cid: str, text: str = "Hello there", policy: str | None = None) -> Outcome:
        return await self.feed(
            PromptEvent(
                conversation_id=cid, message_id="m1", messages=(Message(role=Role.USER, content=text),), policy=policy
            )
        )

    async def chunk(self, cid: str, seq: int, text: str, final: bool = False) -> Outcome:
        return await self.feed(TokenChunkEvent(conversation_id=cid, message_id="m1", seq=seq, text=text, final=final))

    def verdicts(self, stage: Stage | None = None) -> list[VerdictEvent]:
        return [v for v in self.sink.of_type(VerdictEvent) if stage is None or v.stage is stage]


async def test_safe_prompt_and_answer() -> None:
    h = Harness()
    assert await h.prompt("c") is Outcome.APPLIED
    pieces = ["The river ", "flows to ", "the sea", "."]
    for seq, piece in enumerate(pieces):
        assert await h.chunk("c", seq, piece) is Outcome.APPLIED
    assert await h.chunk("c", len(pieces), "", final=True) is Outcome.APPLIED
    (prompt,) = h.verdicts(Stage.PROMPT)
    assert (prompt.risk, prompt.action, prompt.model_id, prompt.worker_id) == (
        Risk.SAFE,
        Action.ALLOW,
        "fake",
        "w-test",
    )
    chunks = h.verdicts(Stage.RESPONSE)
    assert [v.seq for v in chunks] == [0, 1, 2, 3, 4]
    assert chunks[0].token_start == 0
    assert [v.token_start for v in chunks[1:]] == [v.token_end for v in chunks[:-1]]
    assert h.acks == 6 and not h.sink.of_type(ControlEvent) and not h.sink.of_type(DeadLetter)

    # The token log is exactly: rendered prompt, scaffold, the whole answer tokenised at once, end of turn.
    chat = h.backend.chat
    text = "".join(pieces)
    expected = (
        chat.render_prompt([Message(role=Role.USER, content="Hello there")])
        + list(chat.response_prefix)
        + chat.encode_text(text)
        + list(chat.response_suffix)
    )
    assert await h.store.read_log("c") == expected
    assert chunks[-1].token_end == len(chat.encode_text(text)) + len(chat.response_suffix)
    assert h.backend.history_calls == 0  # the cache stayed warm: no rebuilds
    assert h.backend.released == ["c\x1fm1"]


async def test_unsafe_answer_is_cut_once_and_later_chunks_are_acknowledged() -> None:
    h = Harness()
    await h.prompt("c")
    await h.chunk("c", 0, "Sure, here is how: ")
    await h.chunk("c", 1, "BAD BAD things happen")
    await h.chunk("c", 2, " and more")
    await h.chunk("c", 3, "", final=True)
    (control,) = h.sink.of_type(ControlEvent)
    assert (control.seq, control.stage, control.risk, control.category) == (1, Stage.RESPONSE, Risk.UNSAFE, "Violent")
    chunks = h.verdicts(Stage.RESPONSE)
    assert chunks[1].action is Action.CUTOFF and chunks[1].flagged_token == control.token_index
    assert [v.status for v in chunks[2:]] == [VerdictStatus.AFTER_CUTOFF] * 2
    assert all(v.action is Action.CUTOFF and v.risk is Risk.UNSAFE for v in chunks[2:])
    assert len(h.backend.responses) == 2  # nothing after the cut was scored
    assert h.acks == 5


async def test_controversial_answer_flags_under_loose_policy() -> None:
    h = Harness()
    await h.prompt("c", policy="loose")
    await h.chunk("c", 0, "Well MEH MEH maybe")
    (v,) = h.verdicts(Stage.RESPONSE)
    assert (v.risk, v.action, v.policy) == (Risk.CONTROVERSIAL, Action.FLAG, "loose")
    assert not h.sink.of_type(ControlEvent)


async def test_unsafe_prompt_is_cut_and_answer_not_scored() -> None:
    h = Harness()
    await h.prompt("c", text="do BAD things")
    await h.chunk("c", 0, "ok")
    (control,) = h.sink.of_type(ControlEvent)
    assert control.stage is Stage.PROMPT
    (v,) = h.verdicts(Stage.RESPONSE)
    assert v.status is VerdictStatus.AFTER_CUTOFF
    assert not h.backend.responses


async def test_chunk_before_prompt_waits_and_gaps_wait() -> None:
    h = Harness()
    assert await h.chunk("c", 0, "early") is Outcome.WAIT_PROMPT
    await h.prompt("c")
    assert await h.chunk("c", 1, "ahead") is Outcome.WAIT_SEQ
    assert await h.chunk("c", 0, "early") is Outcome.APPLIED
    assert await h.chunk("c", 1, "ahead") is Outcome.APPLIED
    assert h.acks == 3


async def test_duplicates_are_dead_lettered_not_re_moderated(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    await h.prompt("c")
    await h.chunk("c", 0, "one ")
    with caplog.at_level(logging.WARNING, logger="workers.moderation.moderator"):
        assert await h.chunk("c", 0, "one ") is Outcome.DONE
    assert await h.prompt("c") is Outcome.DONE
    reasons = [d.reason for d in h.sink.of_type(DeadLetter)]
    assert reasons == ["duplicate_seq", "duplicate_prompt"]
    assert len(h.verdicts()) == 2
    assert h.acks == 4
    # The log line names the record it is about, as keys a JSON log carries (log_format: json).
    line, _ = [r for r in caplog.records if "dead-lettering" in r.getMessage()]
    assert vars(line)["conversation_id"] == "c" and isinstance(vars(line)["kafka_offset"], int)
    assert vars(line)["kafka_topic"] == h.sink.of_type(DeadLetter)[0].source_topic


async def test_a_redelivered_record_is_acknowledged_not_dead_lettered_or_re_moderated() -> None:
    """After a crash or a rebalance, records already applied come again (their offsets were not
    committed yet); unlike a producer's second send, they are only acknowledged."""
    store = MemoryStore()
    h = Harness(store)
    prompt = PromptEvent(conversation_id="c", message_id="m1", messages=(Message(role=Role.USER, content="Hi"),))
    await h.feed(prompt)
    prompt_at = h.offset
    for seq, text in enumerate(["one ", "two "]):
        await h.chunk("c", seq, text)
    again = Harness(store)  # a fresh worker: nothing cached, all from the store
    again.offset = h.offset
    assert await again.feed(prompt, offset=prompt_at) is Outcome.DONE
    for seq, text in enumerate(["one ", "two "]):
        chunk = TokenChunkEvent(conversation_id="c", message_id="m1", seq=seq, text=text)
        assert await again.feed(chunk, offset=prompt_at + 1 + seq) is Outcome.DONE
    assert again.acks == 3 and not again.sink.effects and not again.backend.responses
    assert await again.chunk("c", 1, "two ") is Outcome.DONE  # the same seq at a new offset: a second send
    assert [d.reason for d in again.sink.of_type(DeadLetter)] == ["duplicate_seq"]


class LostReplyStore(MemoryStore):
    """A MemoryStore whose next ``lose`` writes are applied but answered with a lost connection, as
    when Redis shuts down between running a script and sending its reply."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 0

    async def apply_chunk(self, *args: Any, **kwargs: Any) -> ApplyStatus:
        status = await super().apply_chunk(*args, **kwargs)
        if self.lose > 0:
            self.lose -= 1
            raise StoreUnavailable("Redis unreachable: ConnectionError: Connection closed by server.")
        return status

    async def open_turn(self, state: TurnState, prompt_ids: Sequence[int]) -> ApplyStatus:
        status = await super().open_turn(state, prompt_ids)
        if self.lose > 0:
            self.lose -= 1
            raise StoreUnavailable("Redis unreachable: ConnectionError: Connection closed by server.")
        return status


async def test_a_write_whose_reply_was_lost_is_recognised_on_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.moderation.moderator.STORE_RETRY_FIRST_S", 0.001)
    store = LostReplyStore()
    h = Harness(store)
    store.lose = 1
    assert await h.prompt("c") is Outcome.DONE  # applied by the first attempt
    for seq in range(3):
        store.lose = 1
        assert await h.chunk("c", seq, f"word{seq} ") is Outcome.DONE
    assert await h.chunk("c", 3, "", final=True) is Outcome.APPLIED
    assert not h.sink.of_type(DeadLetter)
    assert h.acks == 5
    assert {v.seq for v in h.verdicts(Stage.RESPONSE)} == {0, 1, 2, 3}
    state = await store.load("c")
    assert state is not None and state.next_seq == 4 and state.final


async def test_a_commit_answered_duplicate_for_its_own_write_is_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py retries a command whose connection dropped: the first attempt may have run, and
    the retry then reports DUPLICATE for the worker's own write."""
    h = Harness()
    await h.prompt("c")
    original = h.store.apply_chunk

    async def run_twice(*args: Any, **kwargs: Any) -> ApplyStatus:
        await original(*args, **kwargs)
        return await original(*args, **kwargs)

    monkeypatch.setattr(h.store, "apply_chunk", run_twice)
    assert await h.chunk("c", 0, "one ") is Outcome.APPLIED
    assert await h.chunk("c", 1, "two ") is Outcome.APPLIED
    assert not h.sink.of_type(DeadLetter) and h.acks == 3
    assert [v.seq for v in h.verdicts(Stage.RESPONSE)] == [0, 1]


async def test_another_worker_resumes_from_the_store() -> None:
    store = MemoryStore()
    first = Harness(store)
    await first.prompt("c")
    await first.chunk("c", 0, "Rivers are long and ")
    # A new owner: fresh caches, fresh engine; it must rebuild from the token log.
    second = Harness(store)
    await second.moderator.on_assigned([0])
    await second.chunk("c", 1, "wet. BAD BAD and more words")
    assert second.backend.history_calls == 1
    (control,) = second.sink.of_type(ControlEvent)
    (v,) = second.verdicts(Stage.RESPONSE)
    first_v = first.verdicts(Stage.RESPONSE)[0]
    assert v.token_start == first_v.token_end
    assert control.token_index is not None and control.token_index >= v.token_start


async def test_stale_owner_is_fenced() -> None:
    store = MemoryStore()
    old, new = Harness(store), Harness(store)
    await old.moderator.on_assigned([0])
    await old.prompt("c")
    await new.moderator.on_assigned([0])  # the partition moved: newer epoch
    await new.chunk("c", 0, "from the new owner ")
    assert await old.chunk("c", 0, "from the old owner ") is Outcome.DONE  # refused by the store, acknowledged
    state = await store.load("c")
    assert state is not None and state.next_seq == 1 and state.epoch == 2
    assert not old.sink.of_type(DeadLetter)


async def test_bad_policy_and_malformed_token_ids_are_dead_lettered() -> None:
    h = Harness()
    await h.prompt("a", policy="bogus")
    await h.feed(PromptEvent(conversation_id="b", message_id="m1", token_ids=(1, 2, 3)))
    letters = h.sink.of_type(DeadLetter)
    assert [(d.reason, d.field) for d in letters] == [("invalid_value", "policy"), ("invalid_value", "token_ids")]
    assert all(d.source_topic == "guard.prompts" and d.worker_id == "w-test" for d in letters)
    assert not h.verdicts() and h.acks == 2


async def _boom(request: object) -> object:
    raise RuntimeError("device lost")


async def test_a_guard_failure_on_a_chunk_cuts_the_message_off_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    await h.prompt("c")
    assert await h.chunk("c", 0, "The river ") is Outcome.APPLIED
    monkeypatch.setattr(h.backend, "score_response", _boom)
    assert await h.chunk("c", 1, "some words to score") is Outcome.APPLIED
    monkeypatch.undo()
    failed = h.verdicts(Stage.RESPONSE)[-1]
    assert (failed.seq, failed.status, failed.risk, failed.action) == (
        1,
        VerdictStatus.GUARD_ERROR,
        Risk.UNSAFE,
        Action.CUTOFF,
    )
    (control,) = h.sink.of_type(ControlEvent)
    assert control.seq == 1 and control.token_index == failed.token_start and "device lost" in control.reason
    assert not h.sink.of_type(DeadLetter)  # an outcome the producer learns of, not a dead letter
    # The rest of the message is answered after_cutoff; the next conversation is judged normally.
    assert await h.chunk("c", 2, "more") is Outcome.APPLIED
    assert h.verdicts(Stage.RESPONSE)[-1].status is VerdictStatus.AFTER_CUTOFF
    await h.prompt("d")
    assert await h.chunk("d", 0, "fine") is Outcome.APPLIED
    assert h.verdicts(Stage.RESPONSE)[-1].status is VerdictStatus.MODERATED
    assert h.acks == 6


async def test_a_guard_failure_on_a_prompt_blocks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    monkeypatch.setattr(h.backend, "score_prompt", _boom)
    assert await h.prompt("c") is Outcome.APPLIED
    monkeypatch.undo()
    (verdict,) = h.verdicts(Stage.PROMPT)
    assert (verdict.status, verdict.risk, verdict.action) == (VerdictStatus.GUARD_ERROR, Risk.UNSAFE, Action.CUTOFF)
    (control,) = h.sink.of_type(ControlEvent)
    assert control.stage is Stage.PROMPT and "device lost" in control.reason
    assert await h.chunk("c", 0, "an answer") is Outcome.APPLIED
    assert h.verdicts(Stage.RESPONSE)[-1].status is VerdictStatus.AFTER_CUTOFF


async def test_on_error_flag_flags_and_keeps_judging(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    h.moderator = Moderator(h.backend, h.store, h.sink, replace(CONFIG, on_error=Action.FLAG))
    await h.prompt("c")
    monkeypatch.setattr(h.backend, "score_response", _boom)
    assert await h.chunk("c", 0, "some words ") is Outcome.APPLIED
    monkeypatch.undo()
    failed = h.verdicts(Stage.RESPONSE)[-1]
    assert (failed.status, failed.action) == (VerdictStatus.GUARD_ERROR, Action.FLAG)
    assert not h.sink.of_type(ControlEvent)
    # The failed chunk's tokens are in the log: the next chunk is judged in their context.
    assert await h.chunk("c", 1, "to score") is Outcome.APPLIED
    after = h.verdicts(Stage.RESPONSE)[-1]
    assert after.status is VerdictStatus.MODERATED and after.token_start == failed.token_end


class FlakyStore(MemoryStore):
    """A MemoryStore that is unreachable for its first ``outage`` writes."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    def _maybe_down(self) -> None:
        if self.outage > 0:
            self.outage -= 1
            raise StoreUnavailable("Redis unreachable: ConnectionError: connection refused")

    async def open_turn(self, state: TurnState, prompt_ids: Sequence[int]) -> ApplyStatus:
        self._maybe_down()
        return await super().open_turn(state, prompt_ids)

    async def apply_chunk(self, *args: Any, **kwargs: Any) -> ApplyStatus:
        self._maybe_down()
        return await super().apply_chunk(*args, **kwargs)


async def test_an_unreachable_store_holds_the_event_and_retries_instead_of_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("workers.moderation.moderator.STORE_RETRY_FIRST_S", 0.001)
    h = Harness(store=FlakyStore(outage=3))
    assert await h.prompt("c") is Outcome.APPLIED  # three refused writes, then it went through
    assert h.acks == 1 and h.moderator.store_outage.healthy
    h.store.outage = 2  # type: ignore[attr-defined]
    assert await h.chunk("c", 0, "The river ") is Outcome.APPLIED
    assert await h.chunk("c", 1, "flows", final=True) is Outcome.APPLIED
    assert not h.sink.of_type(DeadLetter)
    assert h.acks == 3
    # Verdicts re-published by a retry carry the same id: one effective verdict per chunk.
    assert {v.seq for v in h.verdicts(Stage.RESPONSE)} == {0, 1}
    assert len({v.event_id for v in h.verdicts(Stage.RESPONSE)}) == 2


async def test_store_outage_is_tracked_until_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.moderation.moderator.STORE_RETRY_FIRST_S", 0.001)
    h = Harness(store=FlakyStore(outage=0))
    await h.prompt("c")
    seen: list[bool] = []
    original = h.store.apply_chunk

    async def down_twice(*args: Any, **kwargs: Any) -> ApplyStatus:
        seen.append(h.moderator.store_outage.healthy)
        if len(seen) <= 2:
            raise StoreUnavailable("down")
        return await original(*args, **kwargs)

    monkeypatch.setattr(h.store, "apply_chunk", down_twice)
    assert await h.chunk("c", 0, "words") is Outcome.APPLIED
    assert seen == [True, False, False] and h.moderator.store_outage.healthy


async def test_a_chunk_without_context_gets_an_explicit_cut_off() -> None:
    h = Harness()
    assert await h.chunk("lost", 3, "an answer whose prompt never came") is Outcome.WAIT_PROMPT
    work = Work(
        event=TokenChunkEvent(conversation_id="lost", message_id="m1", seq=3, text="x"),
        delivery=Delivery("guard.tokens", 0, 99, b"lost", b"{}", time.perf_counter()),
        ack=_count_ack(h),
    )
    await h.moderator.expire(work, Outcome.WAIT_PROMPT, "waited 5s")
    (verdict,) = h.verdicts(Stage.RESPONSE)
    assert (verdict.status, verdict.risk, verdict.action, verdict.seq) == (
        VerdictStatus.CONTEXT_LOST,
        Risk.UNSAFE,
        Action.CUTOFF,
        3,
    )
    (control,) = h.sink.of_type(ControlEvent)
    assert control.seq == 3 and "no context" in control.reason and "waited 5s" in control.reason
    assert not h.sink.of_type(DeadLetter) and h.acks == 1


def _count_ack(h: Harness) -> Any:
    async def ack() -> None:
        h.acks += 1

    return ack


async def _feed_run(h: Harness, events: Sequence[TokenChunkEvent]) -> list[Outcome]:
    works = []
    for event in events:
        h.offset += 1

        async def ack() -> None:
            h.acks += 1

        delivery = Delivery("guard.tokens", 0, h.offset, event.conversation_id.encode(), b"{}", time.perf_counter())
        works.append(Work(event=event, delivery=delivery, ack=ack))
    return await h.moderator.handle(works)


def _effects(h: Harness) -> list[Any]:
    """The published effects without their clock readings."""
    return [
        replace(e, ts_ms=0, latency_ms=0.0) if isinstance(e, VerdictEvent) else replace(e, ts_ms=0)
        for e in h.sink.effects
    ]


@pytest.mark.parametrize(
    ("pieces", "policy"),
    [
        (["The river ", "flows to ", "the sea", ".", ""], "strict"),
        (["Some ", "MEH ", "MEH words ", "and ", "more"], "loose"),
        (["Fine ", "so far, ", "then BAD ", "BAD BAD ", "and ", "after", ""], "strict"),
        (["é", "\u00e9t\u00e9 ", "\u4e2d", "\u6587 ", "BAD BAD"], "strict"),
    ],
)
async def test_a_run_of_chunks_gets_the_verdicts_of_its_chunks_one_at_a_time(pieces: list[str], policy: str) -> None:
    events = [
        TokenChunkEvent(conversation_id="c", message_id="m1", seq=i, text=p, final=i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    ]
    one, run = Harness(), Harness()
    for h in (one, run):
        await h.prompt("c", policy=policy)
    for event in events:
        await one.feed(event)
    # The first chunk alone, then the rest as one run: a run may start anywhere in a message.
    await _feed_run(run, events[:1])
    outcomes = await _feed_run(run, events[1:])
    assert all(o in (Outcome.APPLIED, Outcome.DONE) for o in outcomes) and len(outcomes) == len(events) - 1
    assert _effects(run) == _effects(one)
    assert await run.store.read_log("c") == await one.store.read_log("c")
    assert await run.store.load("c") == await one.store.load("c")
    assert run.acks == one.acks == len(events) + 1
    assert len(run.backend.responses) <= 2  # one engine request per run


async def test_a_run_is_one_engine_request_and_one_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    await h.prompt("c")
    commits: list[tuple[int, int | None]] = []
    apply = h.store.apply_chunk

    async def counting(*args: Any, **kwargs: Any) -> ApplyStatus:
        commits.append((kwargs["seq"], kwargs.get("last_seq")))
        return await apply(*args, **kwargs)

    monkeypatch.setattr(h.store, "apply_chunk", counting)
    events = [TokenChunkEvent(conversation_id="c", message_id="m1", seq=i, text=f"word{i} ") for i in range(6)]
    assert await _feed_run(h, events) == [Outcome.APPLIED] * 6
    assert len(h.backend.responses) == 1 and commits == [(0, 5)]
    assert [v.seq for v in h.verdicts(Stage.RESPONSE)] == list(range(6))
    state = await h.store.load("c")
    assert state is not None and state.next_seq == 6


async def test_a_run_that_cannot_start_waits_whole() -> None:
    h = Harness()
    events = [TokenChunkEvent(conversation_id="c", message_id="m1", seq=i, text="x ") for i in range(3)]
    assert await _feed_run(h, events) == [Outcome.WAIT_PROMPT] * 3
    await h.prompt("c")
    assert await _feed_run(h, events[1:]) == [Outcome.WAIT_SEQ] * 2
    assert await _feed_run(h, events) == [Outcome.APPLIED] * 3


class ShortContextBackend(FakeBackend):
    """A FakeBackend whose model has only ``limit`` positions, checked as the engine checks them."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        if len(request.token_ids) > self.limit:
            raise SequenceTooLong(request.key, len(request.token_ids), self.limit)
        return await super().score_prompt(request)

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        if request.offset + len(request.new_ids) > self.limit:
            raise SequenceTooLong(request.key, request.offset + len(request.new_ids), self.limit)
        return await super().score_response(request)


async def _run(h: Harness, events: Sequence[TokenChunkEvent]) -> list[Outcome]:
    """Hand ``events`` to the moderator as one run, as a lane does, until all are processed."""

    async def ack() -> None:
        h.acks += 1

    works = []
    for event in events:
        h.offset += 1
        delivery = Delivery("guard.tokens", 0, h.offset, event.conversation_id.encode(), b"{}", time.perf_counter())
        works.append(Work(event=event, delivery=delivery, ack=ack))
    outcomes: list[Outcome] = []
    while works:
        done = await h.moderator.handle(works)
        outcomes += done
        works = works[len(done) :]
    return outcomes


@pytest.mark.parametrize("on_error", [Action.CUTOFF, Action.FLAG])
async def test_a_message_that_outgrows_the_context_is_closed_with_an_explicit_cut_off(on_error: Action) -> None:
    h = Harness(backend=ShortContextBackend(limit=40))
    h.moderator = Moderator(h.backend, h.store, h.sink, replace(CONFIG, on_error=on_error))
    await h.prompt("c")
    prompt_len = len(await h.store.read_log("c"))
    filler = h.backend.chat.encode_text(" bread")
    # One run: the first two chunks fit, the third would pass the limit, the fourth comes after it.
    room = 40 - prompt_len - len(h.backend.chat.response_prefix)
    chunks = [
        TokenChunkEvent(conversation_id="c", message_id="m1", seq=0, token_ids=tuple(filler * 2)),
        TokenChunkEvent(conversation_id="c", message_id="m1", seq=1, token_ids=tuple(filler * 2)),
        TokenChunkEvent(conversation_id="c", message_id="m1", seq=2, token_ids=tuple(filler * room)),
        TokenChunkEvent(conversation_id="c", message_id="m1", seq=3, token_ids=tuple(filler), final=True),
    ]
    await _run(h, chunks)

    verdicts = h.verdicts(Stage.RESPONSE)
    assert [(v.seq, v.status, v.action) for v in verdicts] == [
        (0, VerdictStatus.MODERATED, Action.ALLOW),  # judged one by one, as if they had come alone
        (1, VerdictStatus.MODERATED, Action.ALLOW),
        (2, VerdictStatus.GUARD_ERROR, Action.CUTOFF),  # whatever guard.on_error says
        (3, VerdictStatus.AFTER_CUTOFF, Action.CUTOFF),
    ]
    assert verdicts[2].risk is Risk.UNSAFE and verdicts[2].token_start == verdicts[2].token_end
    (control,) = h.sink.of_type(ControlEvent)
    assert control.seq == 2 and "outgrew the guard's context" in control.reason and "40 positions" in control.reason
    # The chunk that did not fit never entered the log: it stays within the context.
    assert len(await h.store.read_log("c")) <= 40
    assert h.acks == 5 and not h.sink.of_type(DeadLetter)


async def test_a_prompt_beyond_the_context_is_blocked_whatever_on_error_says() -> None:
    h = Harness(backend=ShortContextBackend(limit=10))
    h.moderator = Moderator(h.backend, h.store, h.sink, replace(CONFIG, on_error=Action.FLAG))
    assert await h.prompt("c", "a long prompt " * 20) is Outcome.APPLIED
    (prompt,) = h.verdicts(Stage.PROMPT)
    assert (prompt.status, prompt.action, prompt.risk) == (VerdictStatus.GUARD_ERROR, Action.CUTOFF, Risk.UNSAFE)
    (control,) = h.sink.of_type(ControlEvent)
    assert "outgrew the guard's context" in control.reason
    await h.chunk("c", 0, "Sure")
    assert h.verdicts(Stage.RESPONSE)[-1].status is VerdictStatus.AFTER_CUTOFF


async def test_a_chunk_with_a_token_id_outside_the_vocabulary_is_dead_lettered_and_scores_nothing() -> None:
    h = Harness()
    await h.prompt("c")
    vocab = len(h.backend.chat.tokenizer)
    filler = tuple(h.backend.chat.encode_text(" bread"))
    outcomes = await _run(
        h,
        [
            TokenChunkEvent(conversation_id="c", message_id="m1", seq=0, token_ids=filler),
            TokenChunkEvent(conversation_id="c", message_id="m1", seq=1, token_ids=(*filler, vocab + 300)),
        ],
    )
    assert outcomes == [Outcome.APPLIED, Outcome.DONE]
    assert [v.seq for v in h.verdicts(Stage.RESPONSE)] == [0]  # the run's first chunk was judged
    (letter,) = h.sink.of_type(DeadLetter)
    assert (letter.reason, letter.field) == ("invalid_value", "token_ids")
    assert str(vocab + 300) in letter.detail
    assert all(vocab + 300 not in r.new_ids for r in h.backend.responses)
