"""Engine verdicts and debounce positions equal the reference loop's on the same checkpoint.

The reference loop is the official streaming semantics done the slow way: one token per call, a
full forward over the whole prefix each time. The engine scores the same conversations in random
chunks, batched with each other. Labels (argmax), categories and the debounce trigger (official
``consecutive_unsafe`` over the reference labels vs. the engine's chunked ``decide_chunk``) must
agree exactly; probabilities to 1e-4.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Sequence

import numpy as np

from topics.events import Risk
from workers.engine.debounce import DebounceCarry, Policy, decide_chunk, official_consecutive_unsafe
from workers.engine.jobs import PromptJob, ResponseJob
from workers.engine.model import GuardModel
from workers.engine.reference import ReferenceGuard
from workers.engine.runner import BatchRunner
from workers.engine.scheduler import Scheduler
from workers.engine.scores import Head, HeadScores

PREFIX = (198, 151644, 77091, 198, 151667, 271, 151668, 271)
VOCAB = 151_669


async def _history(ids: Sequence[int]) -> Sequence[int]:
    return ids


async def _engine(
    model: GuardModel, conversations: list[tuple[list[int], list[int]]], rng: random.Random
) -> list[tuple[HeadScores, HeadScores, DebounceCarry]]:
    runner = BatchRunner(model, kv_budget_bytes=1 << 22, page_size=16, attention="paged")
    scheduler = Scheduler(runner, max_batch_tokens=128, max_batch_rows=8, max_wait_s=0.001, response_prefix=PREFIX)
    await scheduler.start()

    async def one(key: str, prompt: list[int], response: list[int]) -> tuple[HeadScores, HeadScores, DebounceCarry]:
        prompt_scores = await scheduler.score_prompt(PromptJob(key, prompt))
        log = [*prompt, *PREFIX]
        carry, parts, position = DebounceCarry(), [], 0
        while position < len(response):
            chunk = response[position : position + rng.randint(1, 12)]
            history = functools.partial(_history, list(log))
            scores = await scheduler.score_response(ResponseJob(key, len(log), chunk, history))
            carry, _ = decide_chunk(carry, scores.risk, scores.category, start=position, policy=Policy.STRICT)
            parts.append(scores)
            log += chunk
            position += len(chunk)
        return prompt_scores, HeadScores.concat(parts), carry

    try:
        return list(await asyncio.gather(*(one(f"c{i}", p, r) for i, (p, r) in enumerate(conversations))))
    finally:
        await scheduler.close()


def test_engine_verdicts_and_debounce_equal_the_reference_loop(tiny_model: GuardModel) -> None:
    rng = random.Random(5)
    conversations = [
        (
            [rng.randrange(VOCAB) for _ in range(rng.randint(2, 40))],
            [rng.randrange(VOCAB) for _ in range(rng.randint(2, 14))],
        )
        for _ in range(16)
    ]
    engine = asyncio.run(_engine(tiny_model, conversations, rng))
    reference = ReferenceGuard(tiny_model)
    triggers = set()
    for (prompt, response), (prompt_scores, response_scores, carry) in zip(conversations, engine, strict=True):
        ref_prompt = reference.score_prompt(prompt)
        assert prompt_scores.labels == ref_prompt.labels
        assert int(prompt_scores.category[0]) == int(ref_prompt.category[0])
        np.testing.assert_allclose(prompt_scores.risk, ref_prompt.risk, atol=1e-4)

        ref = reference.score_response(prompt, PREFIX, response)
        assert response_scores.labels == ref.labels
        np.testing.assert_array_equal(response_scores.category, ref.category)
        np.testing.assert_allclose(response_scores.risk, ref.risk, atol=1e-4)
        np.testing.assert_allclose(response_scores.category_prob, ref.category_prob, atol=1e-4)

        official_risk, official_index = official_consecutive_unsafe(ref.labels)
        trigger = carry.unsafe if carry.unsafe is not None else carry.controversial
        engine_risk = carry.risk
        assert engine_risk == official_risk
        if official_risk is Risk.SAFE:
            assert trigger is None
        else:
            assert trigger is not None and trigger.index == official_index
            assert trigger.category == int(ref.category[official_index])  # token i's category names it
        triggers.add(official_risk)
    # The conversations must exercise every debounce outcome, not only one path.
    assert triggers == {Risk.SAFE, Risk.UNSAFE, Risk.CONTROVERSIAL}


def test_the_reference_loop_is_the_full_forward_at_each_position(tiny_model: GuardModel) -> None:
    reference = ReferenceGuard(tiny_model)
    prompt, response = [5, 6, 7, 151645], [100, 200, 300, 400]
    one_by_one = reference.score_response(prompt, PREFIX, response)
    whole = reference.all_positions([*prompt, *PREFIX, *response], Head.RESPONSE).slice(-len(response), None)
    np.testing.assert_allclose(one_by_one.risk_logits, whole.risk_logits, atol=1e-5)
    assert len(reference.score_response(prompt, PREFIX, [])) == 0
