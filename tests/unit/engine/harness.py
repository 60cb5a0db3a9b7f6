"""A harness that streams random conversations through the real scheduler and checks every score.

Conversations run concurrently; each scores its prompt, then its answer chunk by chunk, optionally
re-scoring a chunk (a redelivery) and releasing its cache (the engine must rebuild it from the
token log). ``check_scenario`` compares every prompt and response-token score with one plain
transformers forward of the whole conversation alone (no cache, no batching).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.engine.jobs import PromptJob, ResponseJob
from workers.engine.kv import KVLayout
from workers.engine.model import GuardModel
from workers.engine.reference import ReferenceGuard
from workers.engine.runner import Attention, BatchRunner
from workers.engine.scheduler import Scheduler
from workers.engine.scores import Head, HeadScores

TOLERANCE = 1e-4
SCENARIO_TIMEOUT_S = 120.0
VOCAB = 151_669  # ids with a token in the real Qwen3 tokenizer
RESPONSE_PREFIX = (198, 151644, 77091, 198, 151667, 271, 151668, 271)
"""``\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`` in the Qwen3 tokenizer."""


@dataclass(frozen=True)
class Conversation:
    key: str
    prompt: tuple[int, ...]
    response: tuple[int, ...]
    chunks: tuple[int, ...]
    prefix_in_first_chunk: bool
    rescore: int | None
    release_after: int | None


@dataclass(frozen=True)
class Scenario:
    conversations: tuple[Conversation, ...]
    page_size: int
    budget_pages: int
    max_batch_tokens: int
    max_batch_rows: int
    seed: int
    pipeline_depth: int = 1


async def history_of(ids: list[int]) -> Sequence[int]:
    await asyncio.sleep(0)
    return ids


async def converse(
    scheduler: Scheduler, conv: Conversation, rng: random.Random, tolerance: float = TOLERANCE
) -> tuple[HeadScores, HeadScores]:
    prompt_scores = await scheduler.score_prompt(PromptJob(conv.key, conv.prompt))
    log = list(conv.prompt)
    parts = []
    position = 0
    for index, size in enumerate(conv.chunks):
        chunk = list(conv.response[position : position + size])
        position += size
        if index == 0 and not conv.prefix_in_first_chunk:
            log += RESPONSE_PREFIX  # the engine is expected to feed the scaffold itself
        new_ids = [*RESPONSE_PREFIX, *chunk] if index == 0 and conv.prefix_in_first_chunk else chunk
        job = ResponseJob(conv.key, len(log), new_ids, functools.partial(history_of, list(log)))
        scores = await scheduler.score_response(job)
        assert len(scores) == len(new_ids)
        if index == conv.rescore:
            again = await scheduler.score_response(job)  # a redelivered chunk is scored again
            np.testing.assert_allclose(again.risk_logits, scores.risk_logits, atol=tolerance)
        log += new_ids
        parts.append(scores.slice(len(new_ids) - len(chunk), len(new_ids)))
        if index == conv.release_after:
            scheduler.release(conv.key)
        await asyncio.sleep(rng.random() * 0.002)
    return prompt_scores, HeadScores.concat(parts)


async def run_scenario(
    runner: BatchRunner, scenario: Scenario, tolerance: float = TOLERANCE
) -> list[tuple[HeadScores, HeadScores]]:
    scheduler = Scheduler(
        runner,
        max_batch_tokens=scenario.max_batch_tokens,
        max_batch_rows=scenario.max_batch_rows,
        max_wait_s=0.001,
        response_prefix=RESPONSE_PREFIX,
    )
    await scheduler.start()
    try:
        rng = random.Random(scenario.seed)
        talks = asyncio.gather(*(converse(scheduler, c, rng, tolerance) for c in scenario.conversations))
        # A scenario takes well under a second; a scheduling livelock must fail, not hang the run.
        return list(await asyncio.wait_for(talks, SCENARIO_TIMEOUT_S))
    finally:
        await scheduler.close()


def check_scenario(
    model: GuardModel, scenario: Scenario, results: list[tuple[HeadScores, HeadScores]], tolerance: float = TOLERANCE
) -> None:
    reference = ReferenceGuard(model)
    for conv, (prompt_scores, response_scores) in zip(scenario.conversations, results, strict=True):
        expected_prompt = reference.all_positions(conv.prompt, Head.QUERY).slice(len(conv.prompt) - 1, None)
        full = [*conv.prompt, *RESPONSE_PREFIX, *conv.response]
        expected = reference.all_positions(full, Head.RESPONSE).slice(len(full) - len(conv.response), None)
        for got, want in ((prompt_scores, expected_prompt), (response_scores, expected)):
            assert len(got) == len(want)
            assert np.abs(got.risk_logits - want.risk_logits).max() <= tolerance
            assert np.abs(got.category_logits - want.category_logits).max() <= tolerance
            np.testing.assert_allclose(got.risk, want.risk, atol=tolerance)


def make_runner(model: GuardModel, scenario: Scenario, attention: Attention) -> BatchRunner:
    config = model.backbone_config
    dtype_bytes = next(model.parameters()).element_size()
    layout = KVLayout.from_config(config, dtype_bytes=dtype_bytes, page_size=scenario.page_size)
    return BatchRunner(
        model, kv_budget_bytes=scenario.budget_pages * layout.bytes_per_page, page_size=scenario.page_size,
        attention=attention,
        pipeline_depth=scenario.pipeline_depth,
    )  # fmt: skip


def random_scenario(rng: random.Random, *, conversations: int = 4, max_len: int = 48) -> Scenario:
    """A seeded random scenario (for tests that must not depend on hypothesis, e.g. on a GPU)."""
    convs = []
    for index in range(conversations):
        response = tuple(rng.randrange(VOCAB) for _ in range(rng.randint(1, max_len)))
        sizes, left = [], len(response)
        while left:
            sizes.append(min(left, rng.randint(1, 20)))
            left -= sizes[-1]
        convs.append(
            Conversation(
                key=f"r{index}",
                prompt=tuple(rng.randrange(VOCAB) for _ in range(rng.randint(1, max_len))),
                response=response,
                chunks=tuple(sizes),
                prefix_in_first_chunk=rng.random() < 0.5,
                rescore=rng.choice([None, 0, len(sizes) - 1]),
                release_after=rng.choice([None, 0]),
            )
        )
    page_size = rng.choice([1, 4, 16])
    longest = max(len(c.prompt) + len(RESPONSE_PREFIX) + len(c.response) for c in convs)
    needed = -(-longest // page_size) + 1
    return Scenario(
        conversations=tuple(convs),
        page_size=page_size,
        budget_pages=rng.randint(needed, needed * (conversations + 1)),
        max_batch_tokens=rng.choice([8, 24, 64, 512]),
        max_batch_rows=rng.randint(1, 6),
        seed=rng.randrange(2**16),
        pipeline_depth=rng.choice([1, 2]),
    )


def max_prob_diff(model: GuardModel, reference_model: GuardModel, seed: int) -> float:
    """The largest class-probability difference (risk and category) between ``model`` through the
    real scheduler and ``reference_model``'s full-prefix forwards, over a seeded random scenario."""
    scenario = random_scenario(random.Random(seed), conversations=4, max_len=48)
    # No re-scored chunks: int8 activations are quantised per forward, over the whole batch, so a
    # chunk scored again beside other rows may differ from its first score (within the same bound).
    scenario = dataclasses.replace(
        scenario, conversations=tuple(dataclasses.replace(c, rescore=None) for c in scenario.conversations)
    )
    results = asyncio.run(run_scenario(make_runner(model, scenario, "paged"), scenario))
    reference = ReferenceGuard(reference_model)
    worst = 0.0
    for conv, (prompt_scores, response_scores) in zip(scenario.conversations, results, strict=True):
        want_prompt = reference.all_positions(conv.prompt, Head.QUERY).slice(len(conv.prompt) - 1, None)
        full = [*conv.prompt, *RESPONSE_PREFIX, *conv.response]
        want = reference.all_positions(full, Head.RESPONSE).slice(len(full) - len(conv.response), None)
        for got, expected in ((prompt_scores, want_prompt), (response_scores, want)):
            worst = max(worst, float(np.abs(got.risk - expected.risk).max()))
            got_cat = torch.tensor(got.category_logits).softmax(-1)
            want_cat = torch.tensor(expected.category_logits).softmax(-1)
            worst = max(worst, float((got_cat - want_cat).abs().max()))
    return worst
