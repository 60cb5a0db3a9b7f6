"""The scheduler with a fake forward: batching by size or deadline, cache resolution, failures.

The fake keeps what each conversation's cache would hold and answers, at every output position,
a digest of all tokens up to it. A wrong position, a lost or duplicated token, a missing scaffold
or a stale cache therefore shows up as a wrong digest.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.engine.jobs import (
    HistoryMismatch,
    PromptJob,
    ResponseJob,
    SchedulerClosed,
    SchedulerFailed,
    SequenceTooLong,
    StepPlan,
)
from workers.engine.kv import KVBudgetError, KVLayout, KVPool
from workers.engine.scheduler import Scheduler
from workers.engine.scores import Head, HeadScores

PREFIX = (90, 91, 92)


def digest(ids: Sequence[int]) -> int:
    value = 7
    for token in ids:
        value = (value * 31 + token + 1) % 1_000_003
    return value


class Launched:
    def __init__(self, executor: FakeExecutor, results: list[HeadScores | None]) -> None:
        self.executor = executor
        self.results = results

    def wait(self) -> list[HeadScores | None]:
        executor = self.executor
        executor.events.append("wait")
        if executor.wait_gate is not None:
            assert executor.wait_gate.wait(5)
        if executor.fail_wait is not None:
            error, executor.fail_wait = executor.fail_wait, None
            raise error
        return self.results


class FakeExecutor:
    """A ``StepExecutor`` whose scores are digests of the cached tokens.

    Like a device, it applies a forward's cache writes in launch order; ``wait`` only hands the
    results over, so a pipelined scheduler (``pipeline_depth`` 2) can launch the next forward first.
    """

    def __init__(self, pages: int = 64, page_size: int = 4, max_positions: int = 10_000, depth: int = 1) -> None:
        layout = KVLayout(layers=1, kv_heads=1, head_dim=1, dtype_bytes=1, page_size=page_size)
        self.pool = KVPool(layout, pages * layout.bytes_per_page)
        self.max_positions = max_positions
        self.pipeline_depth = depth
        self.plans: list[StepPlan] = []
        self.events: list[str] = []
        self.content: dict[str, list[int]] = {}
        self.fail_next: Exception | None = None
        self.fail_wait: Exception | None = None
        self.gate: threading.Event | None = None
        self.wait_gate: threading.Event | None = None
        self.entered = threading.Event()

    def num_categories(self, head: Head) -> int:
        return 2

    def launch(self, plan: StepPlan) -> Launched:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        self.plans.append(plan)
        self.events.append("launch")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        assert len({row.key for row in plan.rows}) == len(plan.rows)
        results: list[HeadScores | None] = []
        for row in plan.rows:
            cached = self.content.get(row.key, []) if row.start else []
            assert len(cached) >= row.start, "a row continues a cache that does not exist"
            tokens = [*cached[: row.start], *row.ids]
            self.content[row.key] = tokens
            end = len(tokens)
            positions = range(end - row.outputs, end)
            values = [[p, digest(tokens[: p + 1]), 0 if row.head is Head.RESPONSE else 1] for p in positions]
            logits = np.asarray(values, np.float32).reshape(-1, 3)
            results.append(
                None
                if not row.outputs
                else HeadScores(
                    risk=np.full((row.outputs, 3), 1 / 3, np.float32),
                    risk_logits=logits,
                    category=np.zeros(row.outputs, np.int64),
                    category_prob=np.ones(row.outputs, np.float32),
                    category_logits=np.zeros((row.outputs, 2), np.float32),
                )
            )
        return Launched(self, results)


def expected(tokens: Sequence[int], count: int) -> list[int]:
    return [digest(tokens[: p + 1]) for p in range(len(tokens) - count, len(tokens))]


def digests(scores: HeadScores) -> list[int]:
    return [int(v) for v in scores.risk_logits[:, 1]]


class History:
    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self.calls = 0

    async def __call__(self) -> Sequence[int]:
        self.calls += 1
        return self.ids


async def started(executor: FakeExecutor, **overrides: float) -> Scheduler:
    options: dict[str, float] = {"max_batch_tokens": 64, "max_batch_rows": 8, "max_wait_s": 0.002, **overrides}
    scheduler = Scheduler(
        executor,
        max_batch_tokens=int(options["max_batch_tokens"]),
        max_batch_rows=int(options["max_batch_rows"]),
        max_wait_s=options["max_wait_s"],
        response_prefix=PREFIX,
    )
    await scheduler.start()
    return scheduler


async def test_a_full_batch_runs_without_waiting_for_the_deadline() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor, max_batch_rows=4, max_wait_s=10.0)
    began = time.perf_counter()
    results = await asyncio.gather(*(scheduler.score_prompt(PromptJob(f"k{i}", [i, i + 1])) for i in range(4)))
    assert time.perf_counter() - began < 2.0
    assert len(executor.plans) == 1 and len(executor.plans[0].rows) == 4
    for i, scores in enumerate(results):
        assert digests(scores) == expected([i, i + 1], 1)
        assert scores.risk_logits[0, 2] == 1  # the query head answered
    await scheduler.close()


async def test_a_lone_request_waits_for_the_deadline_and_company_joins_it() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor, max_wait_s=0.05)
    began = time.perf_counter()
    await scheduler.score_prompt(PromptJob("alone", [1, 2, 3]))
    assert time.perf_counter() - began >= 0.045
    jobs = [scheduler.score_prompt(PromptJob(f"k{i}", [i])) for i in range(3)]
    await asyncio.gather(*jobs)
    assert [len(plan.rows) for plan in executor.plans] == [1, 3]
    await scheduler.close()


async def test_token_limit_splits_long_prompts_over_forwards() -> None:
    executor = FakeExecutor(pages=64)
    scheduler = await started(executor, max_batch_tokens=10, max_batch_rows=4)
    prompt = list(range(100, 125))
    short = [scheduler.score_prompt(PromptJob(f"s{i}", [i] * 6)) for i in range(2)]
    results = await asyncio.gather(scheduler.score_prompt(PromptJob("long", prompt)), *short)
    # The long prompt gets at most the budget per forward; the short ones go whole, beside it.
    assert all(len(row.ids) <= 10 for plan in executor.plans for row in plan.rows)
    assert digests(results[0]) == expected(prompt, 1)
    assert sum(len(row.ids) for plan in executor.plans for row in plan.rows if row.key == "long") == 25
    await scheduler.close()


async def test_a_conversation_gets_one_row_per_forward_in_order() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor)
    await scheduler.score_prompt(PromptJob("a", [1, 2]))
    log = [1, 2, *PREFIX]
    first = ResponseJob("a", len(log), [5, 6], History(log))
    second = ResponseJob("a", len(log) + 2, [7], History([*log, 5, 6]))
    one, two = await asyncio.gather(scheduler.score_response(first), scheduler.score_response(second))
    assert digests(one) == expected([*log, 5, 6], 2)
    assert digests(two) == expected([*log, 5, 6, 7], 1)
    assert first.history.calls == second.history.calls == 0  # type: ignore[attr-defined]
    await scheduler.close()


async def test_the_scaffold_is_fed_after_a_prompt_without_a_history_fetch() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor)
    await scheduler.score_prompt(PromptJob("a", [1, 2, 3]))
    history = History([1, 2, 3, *PREFIX])
    scores = await scheduler.score_response(ResponseJob("a", 6, [8, 9], history))
    assert digests(scores) == expected([1, 2, 3, *PREFIX, 8, 9], 2)
    assert history.calls == 0 and scheduler.stats.rebuilds == 0
    await scheduler.close()


async def test_unknown_conversations_are_rebuilt_from_their_history() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor)
    history = History(list(range(40, 60)))
    scores = await scheduler.score_response(ResponseJob("new", 20, [1, 2, 3], history))
    assert digests(scores) == expected([*range(40, 60), 1, 2, 3], 3)
    assert history.calls == 1 and scheduler.stats.rebuilds == 1
    with pytest.raises(HistoryMismatch, match="history has 20 ids, the request sits at 21"):
        await scheduler.score_response(ResponseJob("other", 21, [1], History(list(range(20)))))
    await scheduler.close()


async def test_a_gap_after_the_cache_is_filled_from_history() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor)
    await scheduler.score_prompt(PromptJob("a", [1, 2]))
    log = [1, 2, 50, 51, 52, 53]
    history = History(log)
    scores = await scheduler.score_response(ResponseJob("a", len(log), [9], history))
    assert digests(scores) == expected([*log, 9], 1)
    assert history.calls == 1 and scheduler.stats.rebuilds == 0  # continued, not rebuilt
    await scheduler.close()


async def test_a_redelivered_chunk_is_rescored_from_its_offset() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor)
    await scheduler.score_prompt(PromptJob("a", [1, 2]))
    job = ResponseJob("a", 2, [5, 6, 7], History([1, 2]))
    first = await scheduler.score_response(job)
    again = await scheduler.score_response(job)
    assert digests(first) == digests(again) == expected([1, 2, 5, 6, 7], 3)
    await scheduler.close()


async def test_evicted_conversations_are_rebuilt_on_their_next_chunk() -> None:
    executor = FakeExecutor(pages=6, page_size=4)  # 24 tokens: two 10-token conversations at most
    scheduler = await started(executor, max_batch_rows=1)
    logs = {key: [ord(key)] * 9 for key in "abc"}
    for key, log in logs.items():
        await scheduler.score_prompt(PromptJob(key, log))
    assert "a" not in executor.pool  # evicted for "c"
    for key in "abc":
        log = logs[key]
        scores = await scheduler.score_response(ResponseJob(key, len(log), [1], History(log)))
        assert digests(scores) == expected([*log, 1], 1)
        log.append(1)
    assert executor.pool.stats.evictions >= 2 and scheduler.stats.rebuilds >= 1
    await scheduler.close()


async def test_a_request_larger_than_the_budget_fails_alone() -> None:
    executor = FakeExecutor(pages=4, page_size=4)
    scheduler = await started(executor)
    with pytest.raises(KVBudgetError):
        await scheduler.score_prompt(PromptJob("huge", list(range(17))))
    assert digests(await scheduler.score_prompt(PromptJob("ok", [1]))) == expected([1], 1)
    await scheduler.close()


async def test_requests_past_the_position_limit_are_refused() -> None:
    scheduler = await started(FakeExecutor(max_positions=8))
    with pytest.raises(SequenceTooLong, match="9 tokens exceed the model's 8 positions"):
        await scheduler.score_response(ResponseJob("a", 6, [1, 2, 3], History([0] * 6)))
    assert len(await scheduler.score_response(ResponseJob("a", 6, [], History([0] * 6)))) == 0
    await scheduler.close()


async def test_a_failed_forward_fails_its_requests_and_the_loop_goes_on() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor)
    await scheduler.score_prompt(PromptJob("a", [1, 2]))
    executor.fail_next = RuntimeError("device lost")
    with pytest.raises(RuntimeError, match="device lost"):
        await scheduler.score_response(ResponseJob("a", 2, [3], History([1, 2])))
    assert "a" not in executor.pool  # its cache may be half written: dropped
    history = History([1, 2])
    assert digests(await scheduler.score_response(ResponseJob("a", 2, [3], history))) == expected([1, 2, 3], 1)
    assert history.calls == 1
    await scheduler.close()


async def test_a_dead_loop_fails_every_pending_request() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor, max_wait_s=0.05)

    def broken() -> list[object]:
        raise RuntimeError("planner bug")

    scheduler._select = broken  # type: ignore[method-assign, assignment]
    results = await asyncio.gather(
        *(scheduler.score_prompt(PromptJob(f"k{i}", [i])) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, SchedulerFailed) for r in results)
    assert isinstance(results[0].__cause__, RuntimeError)  # type: ignore[union-attr]
    assert scheduler.failure is not None and "planner bug" in scheduler.failure  # what /healthz reports
    with pytest.raises(SchedulerFailed):
        await scheduler.score_prompt(PromptJob("later", [1]))
    await scheduler.close()


async def test_close_fails_pending_requests_cleanly() -> None:
    executor = FakeExecutor()
    executor.gate = threading.Event()
    scheduler = await started(executor)
    in_flight = asyncio.ensure_future(scheduler.score_prompt(PromptJob("a", [1])))
    await asyncio.to_thread(executor.entered.wait, 5)
    queued = asyncio.ensure_future(scheduler.score_prompt(PromptJob("b", [2])))
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(scheduler.close())
    await asyncio.sleep(0.01)
    executor.gate.set()
    await closing
    for future in (in_flight, queued):
        with pytest.raises(SchedulerClosed):
            await future
    with pytest.raises(SchedulerClosed):
        await scheduler.score_prompt(PromptJob("c", [3]))


async def test_release_waits_for_the_forward_using_the_conversation() -> None:
    executor = FakeExecutor()
    executor.gate = threading.Event()
    scheduler = await started(executor)
    scoring = asyncio.ensure_future(scheduler.score_prompt(PromptJob("a", [1, 2])))
    await asyncio.to_thread(executor.entered.wait, 5)
    scheduler.release("a")
    assert "a" in executor.pool  # still being written
    executor.gate.set()
    await scoring
    await asyncio.sleep(0)
    assert "a" not in executor.pool
    await scheduler.close()


async def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    executor = FakeExecutor()
    scheduler = await started(executor, max_wait_s=0.05)
    doomed = asyncio.ensure_future(scheduler.score_prompt(PromptJob("x", [1])))
    kept = asyncio.ensure_future(scheduler.score_prompt(PromptJob("y", [2])))
    await asyncio.sleep(0)
    doomed.cancel()
    assert digests(await kept) == expected([2], 1)
    assert all(row.key != "x" for plan in executor.plans for row in plan.rows)
    await scheduler.close()


async def test_a_pipelined_executor_gets_the_next_forward_before_the_first_is_waited_for() -> None:
    for depth, order in ((1, ["launch", "wait", "launch", "wait"]), (2, ["launch", "launch", "wait", "wait"])):
        executor = FakeExecutor(depth=depth)
        scheduler = await started(executor, max_batch_rows=1, max_wait_s=0.0)
        results = await asyncio.gather(*(scheduler.score_prompt(PromptJob(f"k{i}", [i, 7])) for i in range(2)))
        assert executor.events == order
        assert [digests(r) for r in results] == [expected([0, 7], 1), expected([1, 7], 1)]
        await scheduler.close()


async def test_pipelined_conversations_with_evictions_and_rebuilds_stay_exact() -> None:
    executor = FakeExecutor(pages=10, page_size=4, depth=2)
    scheduler = await started(executor, max_batch_rows=2, max_batch_tokens=12)
    logs = {f"c{i}": [i + 1] * (3 + i) for i in range(5)}
    await asyncio.gather(*(scheduler.score_prompt(PromptJob(k, v)) for k, v in logs.items()))

    async def converse(key: str) -> None:
        log = logs[key]
        for step in range(6):
            chunk = [100 + step] * (1 + step % 3)
            scores = await scheduler.score_response(ResponseJob(key, len(log), chunk, History(list(log))))
            assert digests(scores) == expected([*log, *chunk], len(chunk))
            log.extend(chunk)
            if step == 2 and key == "c1":
                scheduler.release(key)

    await asyncio.gather(*(converse(k) for k in logs))
    assert executor.pool.stats.evictions > 0 and scheduler.stats.rebuilds > 0
    await scheduler.close()


async def test_a_failed_wait_fails_only_its_forward() -> None:
    executor = FakeExecutor(depth=2)
    scheduler = await started(executor)
    await scheduler.score_prompt(PromptJob("a", [1]))
    executor.fail_wait = RuntimeError("device error")
    with pytest.raises(RuntimeError, match="device error"):
        await scheduler.score_prompt(PromptJob("b", [2]))
    assert "b" not in executor.pool and "a" in executor.pool
    assert digests(await scheduler.score_prompt(PromptJob("b", [2]))) == expected([2], 1)
    await scheduler.close()


async def test_rebuilds_larger_than_half_the_budget_finish_without_preempting_older_ones() -> None:
    """Pipelined rebuilds that cannot all fit: the oldest always progresses, none is restarted forever.

    Three conversations must be rebuilt from long histories (more than half the pool each) in
    8-token slices, two forwards in flight. A request that waits for pages must not be preempted
    by a younger one (which then gets preempted by it in turn: a livelock that never finishes).
    """
    executor = FakeExecutor(pages=76, page_size=1, depth=2)
    scheduler = await started(executor, max_batch_rows=4, max_batch_tokens=8, max_wait_s=0.0)
    histories = {"c2": [3] * 59, "c0": [1] * 58, "c1": [2] * 51}
    chunks = {"c2": [30] * 6, "c0": [10] * 1, "c1": [20] * 2}

    async def chunk(key: str) -> None:
        log, new = histories[key], chunks[key]
        scores = await scheduler.score_response(ResponseJob(key, len(log), new, History(log)))
        assert digests(scores) == expected([*log, *new], len(new))

    for _ in range(2):  # the second round starts from whatever the first left in the pool
        await asyncio.wait_for(asyncio.gather(*(chunk(key) for key in histories)), 30)
        for key, new in chunks.items():
            histories[key] = [*histories[key], *new]
    # Feeding every token once per round is 2 x ~190 tokens in 8-token slices; thrashing needs far more.
    assert scheduler.stats.steps < 150, scheduler.stats
    await scheduler.close()


@st.composite
def _workloads(draw: st.DrawFn) -> dict[str, object]:
    count = draw(st.integers(1, 4))
    talks = []
    for index in range(count):
        prompt = draw(st.lists(st.integers(0, 50), min_size=1, max_size=40))
        chunks = draw(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=12), min_size=1, max_size=10))
        marks = st.none() | st.integers(0, len(chunks) - 1)
        talks.append((f"c{index}", prompt, chunks, draw(marks), draw(marks)))
    page_size = draw(st.sampled_from([1, 2, 4]))
    longest = max(len(p) + len(PREFIX) + sum(map(len, c)) for _, p, c, _, _ in talks)
    needed = -(-longest // page_size) + 1
    return {
        "talks": talks,
        "page_size": page_size,
        # Mostly tight: conversations evict each other and long rebuilds compete for pages.
        "pages": draw(st.integers(needed, needed * 2) | st.integers(needed, needed * (count + 1))),
        "max_batch_tokens": draw(st.sampled_from([4, 8, 16, 64])),
        "max_batch_rows": draw(st.integers(1, 4)),
        "depth": draw(st.sampled_from([1, 2])),
    }


@settings(max_examples=150, deadline=None)
@given(workload=_workloads())
def test_any_workload_completes_with_exact_scores(workload: dict[str, Any]) -> None:
    """Random conversations under tight budgets, pipelined or not: every request finishes (no
    livelock, no lost request) with the scores of its whole token sequence."""

    async def run() -> None:
        executor = FakeExecutor(pages=workload["pages"], page_size=workload["page_size"], depth=workload["depth"])
        scheduler = await started(
            executor,
            max_batch_rows=workload["max_batch_rows"],
            max_batch_tokens=workload["max_batch_tokens"],
            max_wait_s=0.0,
        )

        async def talk(
            key: str, prompt: list[int], chunks: list[list[int]], rescore: int | None, release: int | None
        ) -> None:
            assert digests(await scheduler.score_prompt(PromptJob(key, prompt))) == expected(prompt, 1)
            log = [*prompt, *PREFIX]
            for index, chunk in enumerate(chunks):
                job = ResponseJob(key, len(log), chunk, History(list(log)))
                want = expected([*log, *chunk], len(chunk))
                assert digests(await scheduler.score_response(job)) == want
                if index == rescore:
                    assert digests(await scheduler.score_response(job)) == want
                log.extend(chunk)
                if index == release:
                    scheduler.release(key)
                await asyncio.sleep(0)

        try:
            await asyncio.wait_for(asyncio.gather(*(talk(*t) for t in workload["talks"])), 20)
        finally:
            await scheduler.close()

    asyncio.run(run())


async def test_a_release_during_a_split_prefill_restarts_it() -> None:
    """Released while partly fed (its cache is dropped after the forward in flight): the request
    starts over instead of waiting forever for a cache that is gone."""
    executor = FakeExecutor()
    executor.wait_gate = threading.Event()
    scheduler = await started(executor, max_batch_tokens=4)
    prompt = list(range(20))
    task = asyncio.create_task(scheduler.score_prompt(PromptJob("a", prompt)))
    assert await asyncio.to_thread(executor.entered.wait, 5)  # the first 4 tokens are in flight
    scheduler.release("a")
    executor.wait_gate.set()
    assert digests(await asyncio.wait_for(task, 5)) == expected(prompt, 1)
    await scheduler.close()


async def _long_prompt_then_chunks(
    scheduler: Scheduler, executor: FakeExecutor, chunks: int
) -> tuple[list[int], list[HeadScores]]:
    """Open ``chunks`` conversations c0.. (one-token prompts), then queue a 40-token prompt and one
    5-token chunk (scaffold + 2 ids) for each in the same instant; the plans start afterwards."""
    for i in range(chunks):
        await scheduler.score_prompt(PromptJob(f"c{i}", [i + 1]))
    executor.plans.clear()
    prompt = list(range(100, 140))
    jobs = [scheduler.score_prompt(PromptJob("long", prompt))]
    jobs += [
        scheduler.score_response(ResponseJob(f"c{i}", 1 + len(PREFIX), [7, 8], History([]))) for i in range(chunks)
    ]
    return prompt, list(await asyncio.gather(*jobs))


def _check_results(prompt: list[int], results: list[HeadScores]) -> None:
    assert digests(results[0]) == expected(prompt, 1)
    for i, scores in enumerate(results[1:]):
        assert digests(scores) == expected([i + 1, *PREFIX, 7, 8], 2)


async def test_chunks_are_served_before_a_long_prefill_that_came_first() -> None:
    executor = FakeExecutor(pages=64)
    scheduler = await started(executor, max_batch_tokens=24, max_batch_rows=8, max_wait_s=0.01)
    prompt, results = await _long_prompt_then_chunks(scheduler, executor, 3)
    first = executor.plans[0]
    # Every chunk is in the first forward, and the prefill takes what is left of the budget there.
    assert {row.key for row in first.rows} == {"c0", "c1", "c2", "long"}
    assert [len(row.ids) for row in first.rows if row.key == "long"] == [24 - 3 * (2 + len(PREFIX))]
    assert all(plan.tokens <= 24 for plan in executor.plans)
    _check_results(prompt, results)
    await scheduler.close()


async def test_a_prefill_progresses_however_many_chunks_fill_the_budget() -> None:
    executor = FakeExecutor(pages=64)
    scheduler = await started(executor, max_batch_tokens=8, max_batch_rows=8, max_wait_s=0.01)
    prompt, results = await _long_prompt_then_chunks(scheduler, executor, 4)
    first = executor.plans[0]
    # Four chunks of 5 tokens overrun the budget of 8 and all go; the prompt still gets a quarter.
    assert sorted(row.key for row in first.rows) == ["c0", "c1", "c2", "c3", "long"]
    assert [len(row.ids) for row in first.rows if row.key == "long"] == [2]
    _check_results(prompt, results)
    await scheduler.close()
