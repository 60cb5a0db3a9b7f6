"""The engine on a CUDA device: the same equivalence as on CPU, the varlen kernel, true sizes.

Run on the GPU machine with ``pytest -m gpu tests/gpu``; every test skips only when CUDA is absent.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.engine.harness import (
    RESPONSE_PREFIX,
    check_scenario,
    make_runner,
    random_scenario,
    run_scenario,
)
from workers.engine.attention import KVStorage, PagedContext, varlen_available
from workers.engine.batch import build_packed
from workers.engine.checkpoint import open_checkpoint
from workers.engine.jobs import StepPlan, StepRow
from workers.engine.model import GuardModel, load_guard_model
from workers.engine.reference import ReferenceGuard
from workers.engine.runner import BatchRunner
from workers.engine.scores import Head
from workers.engine.testing import make_test_checkpoint, random_guard_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
VARLEN = torch.cuda.is_available() and varlen_available(CUDA, torch.bfloat16)
needs_varlen = pytest.mark.skipif(
    not VARLEN, reason="needs CUDA and a torch whose varlen_attn takes paged KV (block_table)"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("gpu") / "tiny")


def _load(path: Path, dtype: torch.dtype) -> GuardModel:
    return load_guard_model(open_checkpoint(path, allow_test_checkpoint=True), device=CUDA, dtype=dtype)


@pytest.mark.parametrize("attention", ["paged", "padded"])
def test_fp32_batched_incremental_equals_full_forward_on_cuda(checkpoint: Path, attention: str) -> None:
    model = _load(checkpoint, torch.float32)
    rng = random.Random(0)
    for _ in range(8):
        scenario = random_scenario(rng)
        runner = make_runner(model, scenario, attention)  # type: ignore[arg-type]
        check_scenario(model, scenario, asyncio.run(run_scenario(runner, scenario)))


def test_auto_attention_is_the_varlen_kernel_in_bf16_where_torch_has_it(checkpoint: Path) -> None:
    runner = BatchRunner(_load(checkpoint, torch.bfloat16), kv_budget_bytes=1 << 24, page_size=16)
    assert runner.attention == ("varlen" if VARLEN else "paged")


@needs_varlen
@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_varlen_kernel_equals_the_sdpa_kernel(page_size: int) -> None:
    """Both kernels on the same pages: a block-table, length or causal-alignment bug shows as O(1)."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    heads, kv_heads, head_dim, layers = 8, 2, 128, 1
    rows = [(0, 37), (5, 1), (130, 16), (1, 1), (700, 64)]  # (past length, new tokens)
    pages_needed = [-(-(past + new) // page_size) for past, new in rows]
    storage = KVStorage.allocate(layers, sum(pages_needed) + 1, page_size, kv_heads, head_dim, device=CUDA,
                                 dtype=torch.bfloat16)  # fmt: skip
    storage.keys[0].copy_(torch.randn(storage.keys[0].shape, generator=generator).to(CUDA, torch.bfloat16))
    storage.values[0].copy_(torch.randn(storage.values[0].shape, generator=generator).to(CUDA, torch.bfloat16))
    permutation = torch.randperm(sum(pages_needed), generator=generator).tolist()  # pages out of order
    plan_rows, first = [], 0
    for index, ((past, new), count) in enumerate(zip(rows, pages_needed, strict=True)):
        pages = tuple(permutation[first : first + count])
        first += count
        plan_rows.append(StepRow(f"r{index}", past, [1] * new, Head.RESPONSE, new, pages))
    plan = StepPlan(tuple(plan_rows))
    total = plan.tokens
    query = torch.randn(1, heads, total, head_dim, generator=generator).to(CUDA, torch.bfloat16)
    key = torch.randn(1, kv_heads, total, head_dim, generator=generator).to(CUDA, torch.bfloat16)
    value = torch.randn(1, kv_heads, total, head_dim, generator=generator).to(CUDA, torch.bfloat16)

    class Layer(torch.nn.Module):
        layer_idx = 0

    outputs = {}
    for kernel in ("sdpa", "varlen"):
        context: PagedContext = build_packed(plan, storage, page_size=page_size, kernel=kernel, device=CUDA).context
        outputs[kernel] = context.attend(Layer(), query, key, value, head_dim**-0.5).float()
    torch.testing.assert_close(outputs["varlen"], outputs["sdpa"], atol=3e-2, rtol=3e-2)


def test_bf16_engine_agrees_with_the_bf16_reference(checkpoint: Path) -> None:
    model = _load(checkpoint, torch.bfloat16)
    rng = random.Random(1)
    for _ in range(4):
        scenario = random_scenario(rng)
        runner = make_runner(model, scenario, "auto")
        check_scenario(model, scenario, asyncio.run(run_scenario(runner, scenario, tolerance=0.1)), tolerance=0.1)


def test_true_size_0_6b_labels_agree_with_the_reference() -> None:
    model = random_guard_model("0.6B", device=CUDA, dtype=torch.bfloat16)
    scenario = random_scenario(random.Random(2), conversations=6, max_len=96)
    runner = make_runner(model, scenario, "auto")
    results = asyncio.run(run_scenario(runner, scenario, tolerance=1.0))
    reference = ReferenceGuard(model)
    agree = total = 0
    for conv, (_, response) in zip(scenario.conversations, results, strict=True):
        full = [*conv.prompt, *RESPONSE_PREFIX, *conv.response]
        want = reference.all_positions(full, Head.RESPONSE).slice(len(full) - len(conv.response), None)
        agree += int(np.sum(np.asarray(response.labels) == np.asarray(want.labels)))
        total += len(conv.response)
        assert np.abs(response.risk - want.risk).max() < 0.3
    # bf16 rounding flips a few near-tied labels; a wrong position or cache flips about half.
    assert agree / total >= 0.9


def test_bench_runs_on_cuda(tmp_path: Path) -> None:
    from workers.bench.engine import BenchConfig, run_bench

    config = BenchConfig(size="tiny", device="cuda", concurrency=(1, 16), answer_tokens=32, prompt_tokens=16,
                         reference_tokens=8, attention=("auto", "paged"))  # fmt: skip
    result = run_bench(config)
    assert {p.attention for p in result.points} == {"varlen" if VARLEN else "paged", "paged"}
    assert all(p.peak_memory_bytes and p.tokens_per_s > 0 for p in result.points)
    assert result.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2
