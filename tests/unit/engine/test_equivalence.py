"""Batched incremental scoring equals a full forward of each conversation alone (fp32, <= 1e-4).

Random conversations run concurrently through the real scheduler and runner (``harness``):
random chunkings, very different lengths in one batch, tiny KV budgets that force evictions and
rebuilds from the token history, releases, re-scored chunks (redelivery), long prompts split over
several forwards, the response scaffold sent inside the first chunk or left to the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.harness import (
    RESPONSE_PREFIX,
    VOCAB,
    Conversation,
    Scenario,
    check_scenario,
    make_runner,
    random_scenario,
    run_scenario,
)
from workers.engine.model import GuardModel
from workers.engine.runner import Attention


@st.composite
def conversations(draw: st.DrawFn, index: int) -> Conversation:
    prompt_len = draw(st.integers(1, 48))
    response_len = draw(st.integers(1, 48))
    ids = st.integers(0, VOCAB - 1)
    cuts = sorted(draw(st.sets(st.integers(1, response_len - 1), max_size=6))) if response_len > 1 else []
    bounds = [0, *cuts, response_len]
    chunks = tuple(b - a for a, b in itertools.pairwise(bounds))
    maybe_chunk = st.none() | st.integers(0, len(chunks) - 1)
    return Conversation(
        key=f"c{index}",
        prompt=tuple(draw(st.lists(ids, min_size=prompt_len, max_size=prompt_len))),
        response=tuple(draw(st.lists(ids, min_size=response_len, max_size=response_len))),
        chunks=chunks,
        prefix_in_first_chunk=draw(st.booleans()),
        rescore=draw(maybe_chunk),
        release_after=draw(maybe_chunk),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(1, 5))
    convs = tuple(draw(conversations(i)) for i in range(count))
    page_size = draw(st.sampled_from([1, 4, 16]))
    longest = max(len(c.prompt) + len(RESPONSE_PREFIX) + len(c.response) for c in convs)
    needed = -(-longest // page_size) + 1
    return Scenario(
        conversations=convs,
        page_size=page_size,
        # From "one conversation barely fits" (constant eviction) to "everything fits".
        budget_pages=draw(st.integers(needed, needed * (count + 1))),
        max_batch_tokens=draw(st.sampled_from([8, 24, 64, 512])),
        max_batch_rows=draw(st.integers(1, 6)),
        seed=draw(st.integers(0, 2**16)),
        # A second forward planned while the first is in flight (as on CUDA).
        pipeline_depth=draw(st.sampled_from([1, 2])),
    )


@pytest.mark.parametrize("attention", ["paged", "padded"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_batched_incremental_equals_full_forward(
    tiny_model: GuardModel, attention: Attention, scenario: Scenario
) -> None:
    runner = make_runner(tiny_model, scenario, attention)
    results = asyncio.run(run_scenario(runner, scenario))
    check_scenario(tiny_model, scenario, results)


@pytest.mark.parametrize("attention", ["paged", "padded"])
def test_very_different_lengths_share_forwards(tiny_model: GuardModel, attention: Attention) -> None:
    """A 700-token conversation next to 1-token chunks, with evictions and a split prefill."""
    rng = random.Random(7)
    convs = []
    for index, (prompt_len, response_len) in enumerate([(600, 100), (1, 1), (3, 40), (250, 5), (1, 120)]):
        response = tuple(rng.randrange(VOCAB) for _ in range(response_len))
        sizes, left = [], response_len
        while left:
            sizes.append(min(left, rng.choice([1, 1, 3, 16, 64])))
            left -= sizes[-1]
        convs.append(
            Conversation(
                key=f"long{index}",
                prompt=tuple(rng.randrange(VOCAB) for _ in range(prompt_len)),
                response=response,
                chunks=tuple(sizes),
                prefix_in_first_chunk=index % 2 == 0,
                rescore=len(sizes) // 2,
                release_after=None,
            )
        )
    scenario = Scenario(
        tuple(convs), page_size=16, budget_pages=60, max_batch_tokens=256, max_batch_rows=4, seed=3, pipeline_depth=2
    )
    runner = make_runner(tiny_model, scenario, attention)
    results = asyncio.run(run_scenario(runner, scenario))
    check_scenario(tiny_model, scenario, results)
    assert runner.pool.stats.evictions > 0  # the budget (960 tokens) forced rebuilds


def test_the_llama_backbone_is_equivalent_too(llama_checkpoint: object) -> None:
    import torch

    from workers.engine.checkpoint import open_checkpoint
    from workers.engine.model import load_guard_model

    model = load_guard_model(
        open_checkpoint(llama_checkpoint, allow_test_checkpoint=True),  # type: ignore[arg-type]
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    rng = random.Random(11)
    convs = tuple(
        Conversation(
            key=f"l{i}",
            prompt=tuple(rng.randrange(VOCAB) for _ in range(rng.randint(1, 60))),
            response=tuple(rng.randrange(VOCAB) for _ in range(12)),
            chunks=(5, 1, 6),
            prefix_in_first_chunk=bool(i % 2),
            rescore=1,
            release_after=0,
        )
        for i in range(4)
    )
    scenario = Scenario(convs, page_size=4, budget_pages=200, max_batch_tokens=64, max_batch_rows=3, seed=1)
    for attention in ("paged", "padded"):
        check_scenario(model, scenario, asyncio.run(run_scenario(make_runner(model, scenario, attention), scenario)))


@pytest.mark.parametrize("attention", ["paged", "padded"])
def test_uninitialised_kv_memory_never_reaches_a_score(tiny_model: GuardModel, attention: Attention) -> None:
    """The pool's memory starts uninitialised; pages are zeroed on first use, so even NaN there is harmless."""
    rng = random.Random(4)
    for _ in range(3):
        scenario = random_scenario(rng)
        runner = make_runner(tiny_model, scenario, attention)
        for tensor in (*runner.storage.keys, *runner.storage.values):
            tensor.fill_(float("nan"))
        check_scenario(tiny_model, scenario, asyncio.run(run_scenario(runner, scenario)))
