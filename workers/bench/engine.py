"""``streamwarden bench engine``: the batched incremental engine against the reference loop.

For each concurrency ``N``: ``N`` conversations (random prompt of ``prompt_tokens`` ids, then an
answer of ``answer_tokens`` ids streamed in chunks of ``chunk_tokens``) run at once through the
scheduler; every conversation submits its next chunk as soon as the previous one is scored.
Reported: moderated answer tokens per second (wall clock of the streaming phase), per-chunk
latency p50 / p99 (submit to scores), forwards and rows per forward, evictions.

The reference loop (one conversation, one token per call, full-prefix recompute, the way the
released ``stream_moderate_from_ids`` works) is measured in the same run on the same model:
``reference_tokens`` tokens in runs of ``chunk_tokens`` consecutive tokens spread evenly over the
answer, so that its per-token cost averages over prefix lengths like the engine's does. Throughput ratios are engine
over reference. Weights are random (speed does not depend on them); nothing is downloaded. With
``checkpoint`` the model is a real checkpoint instead (``default``: the shipped stream guard), and
``layers`` / ``quantize`` cut it to its first layers or quantise it, to measure what serving would
cost that way (ids are then drawn from the checkpoint's vocabulary).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import platform
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.engine.jobs import PromptJob, ResponseJob
from workers.engine.scheduler import Scheduler
from workers.engine.scores import Head

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from workers.engine.model import GuardModel
    from workers.engine.runner import Attention, BatchRunner
    from workers.engine.testing import Size

logger = logging.getLogger(__name__)

VOCAB = 151_669
END_OF_TURN = 151645
RESPONSE_PREFIX = (198, 151644, 77091, 198, 151667, 271, 151668, 271)
"""``\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`` in the Qwen3 tokenizer."""


@dataclass(frozen=True)
class BenchConfig:
    """What one ``bench engine`` run measures."""

    size: Size = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    attention: tuple[Attention, ...] = ("auto",)
    concurrency: tuple[int, ...] = (1, 8, 64, 512)
    answer_tokens: int = 512
    chunk_tokens: int = 16
    prompt_tokens: int = 128
    reference_tokens: int = 64
    max_batch_tokens: int = 8192
    max_batch_rows: int = 512
    max_wait_ms: float = 2.0
    page_size: int = 16
    kv_budget_bytes: int | None = None
    """None: room for every conversation of the largest point (capped by free GPU memory)."""
    threads: int | None = None
    """CPU threads of torch (None: torch's default); both the engine and the reference use them."""
    seed: int = 0
    checkpoint: str | None = None
    """A checkpoint (directory, or ``default``/``auto`` as ``guard.checkpoint``) instead of ``size``."""
    layers: int | None = None
    """Keep only the model's first ``layers`` decoder layers (what heads trained with ``--layers`` read)."""
    quantize: str = "none"
    """``engine.quantize`` for the measured model."""
    vocab_size: int = VOCAB
    """Random ids are drawn below this (set from the model)."""

    def ids(self, ids: Sequence[int]) -> list[int]:
        """Fixed ids of the Qwen3 tokenizer, folded into this model's vocabulary."""
        return [i % self.vocab_size for i in ids]


@dataclass
class PointResult:
    attention: str
    concurrency: int
    answer_tokens: int
    seconds: float
    tokens_per_s: float
    chunk_p50_ms: float
    chunk_p99_ms: float
    prefill_s: float
    forwards: int
    rows_per_forward: float
    tokens_per_forward: float
    evictions: int
    rebuilds: int
    peak_memory_bytes: int | None
    ratio_vs_reference: float = 0.0


@dataclass
class ReferenceResult:
    tokens: int
    seconds: float
    tokens_per_s: float
    chunk_p50_ms: float
    chunk_p99_ms: float


@dataclass
class BenchResult:
    config: dict[str, Any]
    machine: dict[str, Any]
    kv_bytes_per_token: int
    kv_budget_bytes: int
    parameters: int
    reference: ReferenceResult
    points: list[PointResult] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    process_peak_rss_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Conversation:
    key: str
    prompt: list[int]
    answer: list[int]


def conversations(count: int, config: BenchConfig, rng: random.Random, tag: str) -> list[Conversation]:
    """``count`` random conversations; prompts end with the end-of-turn token like real ones."""
    return [
        Conversation(
            key=f"{tag}-{i}",
            prompt=[
                *(rng.randrange(config.vocab_size) for _ in range(config.prompt_tokens - 1)),
                *config.ids([END_OF_TURN]),
            ],
            answer=[rng.randrange(config.vocab_size) for _ in range(config.answer_tokens)],
        )
        for i in range(count)
    ]


async def _history(log: list[int], offset: int) -> Sequence[int]:
    return log[:offset]


async def _stream(
    scheduler: Scheduler, conv: Conversation, chunk_tokens: int, prefix: list[int], latencies: list[float]
) -> None:
    log = list(conv.prompt)
    for start in range(0, len(conv.answer), chunk_tokens):
        chunk = conv.answer[start : start + chunk_tokens]
        new_ids = [*prefix, *chunk] if start == 0 else chunk
        history = functools.partial(_history, log, len(log))  # the log only grows: a prefix stays valid
        began = time.perf_counter()
        await scheduler.score_response(ResponseJob(conv.key, len(log), new_ids, history))
        latencies.append(time.perf_counter() - began)
        log.extend(new_ids)


async def measure_point(runner: BatchRunner, config: BenchConfig, count: int, rng: random.Random) -> PointResult:
    """One concurrency point through a fresh scheduler on ``runner`` (its pool is emptied first)."""
    runner.pool.clear()
    evictions_before = runner.pool.stats.evictions
    scheduler = Scheduler(
        runner,
        max_batch_tokens=config.max_batch_tokens,
        max_batch_rows=min(config.max_batch_rows, config.max_batch_tokens),
        max_wait_s=config.max_wait_ms / 1000.0,
    )
    await scheduler.start()
    try:
        batch = conversations(count, config, rng, f"n{count}")
        _reset_peak_memory(runner.device)
        began = time.perf_counter()
        await asyncio.gather(*(scheduler.score_prompt(PromptJob(c.key, c.prompt)) for c in batch))
        prefill_s = time.perf_counter() - began
        before = (scheduler.stats.steps, scheduler.stats.rows, scheduler.stats.tokens)
        latencies: list[float] = []
        began = time.perf_counter()
        await asyncio.gather(
            *(_stream(scheduler, c, config.chunk_tokens, config.ids(RESPONSE_PREFIX), latencies) for c in batch)
        )
        seconds = time.perf_counter() - began
    finally:
        await scheduler.close()
    forwards = scheduler.stats.steps - before[0]
    tokens = count * config.answer_tokens
    return PointResult(
        attention=runner.attention,
        concurrency=count,
        answer_tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
        chunk_p50_ms=float(np.percentile(latencies, 50) * 1000),
        chunk_p99_ms=float(np.percentile(latencies, 99) * 1000),
        prefill_s=prefill_s,
        forwards=forwards,
        rows_per_forward=(scheduler.stats.rows - before[1]) / max(forwards, 1),
        tokens_per_forward=(scheduler.stats.tokens - before[2]) / max(forwards, 1),
        evictions=runner.pool.stats.evictions - evictions_before,
        rebuilds=scheduler.stats.rebuilds,
        peak_memory_bytes=_peak_memory(runner.device),
    )


def measure_reference(model: GuardModel, config: BenchConfig, rng: random.Random) -> ReferenceResult:
    """The reference loop on ``reference_tokens`` answer tokens, in runs of ``chunk_tokens``."""
    from workers.engine.reference import ReferenceGuard

    reference = ReferenceGuard(model)
    (conv,) = conversations(1, config, rng, "reference")
    context = [*conv.prompt, *config.ids(RESPONSE_PREFIX)]
    run_length = min(config.chunk_tokens, config.answer_tokens)
    runs = max(1, math.ceil(config.reference_tokens / run_length))
    last_start = config.answer_tokens - run_length
    starts = sorted({round(i * last_start / max(runs - 1, 1)) for i in range(runs)})
    reference.last_position(context, Head.RESPONSE)  # warm-up, not timed
    chunk_seconds = []
    for start in starts:
        began = time.perf_counter()
        for position in range(start, start + run_length):
            reference.last_position([*context, *conv.answer[: position + 1]], Head.RESPONSE)
        chunk_seconds.append(time.perf_counter() - began)
    tokens = len(starts) * run_length
    seconds = float(sum(chunk_seconds))
    return ReferenceResult(
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
        chunk_p50_ms=float(np.percentile(chunk_seconds, 50) * 1000),
        chunk_p99_ms=float(np.percentile(chunk_seconds, 99) * 1000),
    )


def run_bench(config: BenchConfig) -> BenchResult:
    """Build the model, measure the reference loop and every (attention, concurrency) point."""
    import torch

    from workers.engine.kv import KVLayout
    from workers.engine.runner import BatchRunner, resolve_device, resolve_dtype

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    rng = random.Random(config.seed)
    model = _model(config, device, dtype)
    config = dataclasses.replace(config, vocab_size=min(VOCAB, int(model.backbone_config.vocab_size)))
    layout = KVLayout.from_config(
        model.backbone_config, dtype_bytes=torch.finfo(dtype).bits // 8, page_size=config.page_size
    )
    budget = config.kv_budget_bytes or _auto_budget(config, layout.bytes_per_token, device)
    reference = measure_reference(model, config, rng)
    logger.info("reference loop: %.1f tokens/s", reference.tokens_per_s)
    result = BenchResult(
        config={**asdict(config), "device": str(device), "dtype": str(dtype).removeprefix("torch.")},
        machine=_machine(device),
        kv_bytes_per_token=layout.bytes_per_token,
        kv_budget_bytes=budget,
        parameters=sum(p.numel() for p in model.parameters()),
        reference=reference,
    )
    for attention in config.attention:
        runner = BatchRunner(model, kv_budget_bytes=budget, page_size=config.page_size, attention=attention)
        asyncio.run(_warm_up(runner, config, rng))
        for count in config.concurrency:
            point = asyncio.run(measure_point(runner, config, count, rng))
            point.ratio_vs_reference = point.tokens_per_s / reference.tokens_per_s
            logger.info(
                "%s x%d: %.0f tokens/s, p99 %.1f ms", point.attention, count, point.tokens_per_s, point.chunk_p99_ms
            )
            result.points.append(point)
        del runner
    result.peak_memory_bytes = max((p.peak_memory_bytes or 0 for p in result.points), default=None) or None
    result.process_peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def _model(config: BenchConfig, device: torch.device, dtype: torch.dtype) -> GuardModel:
    """The measured model: random weights of ``size``, or ``checkpoint``; cut and quantised as asked."""
    from workers.engine.quantize import quantize_backbone
    from workers.engine.testing import random_guard_model

    if config.checkpoint is None:
        model = random_guard_model(config.size, device=device, dtype=dtype, seed=config.seed)
    else:
        from workers.backends.stream import resolve_guard_checkpoint
        from workers.engine.model import load_guard_model

        checkpoint = resolve_guard_checkpoint(config.checkpoint, allow_test_checkpoint=True)
        model = load_guard_model(checkpoint, device=device, dtype=dtype)
    if config.layers is not None:
        model.model.layers = model.model.layers[: config.layers]
        model.model.config.num_hidden_layers = config.layers
    return quantize_backbone(model, "int8" if config.quantize == "int8" else "none")


async def _warm_up(runner: BatchRunner, config: BenchConfig, rng: random.Random) -> None:
    """Run a few small forwards first so one-time costs (allocation, kernel selection) are not timed."""
    small = BenchConfig(
        **{**asdict(config), "answer_tokens": 2 * config.chunk_tokens, "prompt_tokens": 16, "concurrency": (4,)}
    )
    await measure_point(runner, small, 4, rng)


def _auto_budget(config: BenchConfig, bytes_per_token: int, device: torch.device) -> int:
    import torch

    tokens_per_conversation = config.prompt_tokens + len(RESPONSE_PREFIX) + config.answer_tokens + config.page_size
    wanted = max(config.concurrency) * tokens_per_conversation * bytes_per_token
    if device.type == "cuda":
        # Leave room for the activations of one forward (a few GiB at 8192 tokens on 8B).
        free, _ = torch.cuda.mem_get_info(device)
        wanted = min(wanted, max(free - (6 << 30), free // 2))
    return max(wanted, bytes_per_token * config.page_size)


def _reset_peak_memory(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int | None:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def _machine(device: torch.device) -> dict[str, Any]:
    import os

    import torch
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
