"""``streamwarden bench prefilter``: per-prompt latency and batched throughput of the prefilter on CPU.

Everything is measured in one run against a baseline measured in the same run: the plain
sentence-transformers path (``SentenceTransformer.encode`` in float32, then the head) is the
baseline for one-prompt latency, and one-prompt-at-a-time throughput is the baseline for batched
throughput. Prompts are real user prompts (ToxicChat test, a seeded sample), one at a time after
a warm-up.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.backends.base import PromptRequest
from workers.backends.encoder import load_path
from workers.backends.prefilter import PrefilterBackend
from workers.backends.prefilter_model import Prefilter, TextScores, head_probabilities
from workers.guards.datasets.records import Purpose
from workers.guards.datasets.registry import load
from workers.guards.evaluation import sample
from workers.settings import Settings


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-call wall time of one path, in milliseconds."""

    name: str
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def of(cls, name: str, seconds: Sequence[float]) -> Latency:
        ms = np.array(seconds) * 1e3
        return cls(name, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean()))


def _time_each(call: Callable[[str], object], prompts: Sequence[str], warmup: int) -> list[float]:
    for text in prompts[:warmup]:
        call(text)
    times = []
    for text in prompts:
        start = time.perf_counter()
        call(text)
        times.append(time.perf_counter() - start)
    return times


def bench_prompts(root: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` ToxicChat test prompts (a seeded sample): real user prompts of realistic length."""
    return [r.text for r in sample(load("toxic_chat", Purpose.EVAL, root), count, seed)]


def cpu_name() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo``), else the platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def _backend_latencies(settings: Settings, prompts: Sequence[str], warmup: int) -> list[float]:
    backend = PrefilterBackend(settings)
    await backend.start()
    try:
        times = []
        for index, text in enumerate([*prompts[:warmup], *prompts]):
            start = time.perf_counter()
            await backend.score_prompt(PromptRequest(key=f"bench:{index}", token_ids=(), text=text))
            if index >= warmup:
                times.append(time.perf_counter() - start)
        return times
    finally:
        await backend.close()


def run(settings: Settings, root: Path, *, count: int = 500, batch_size: int = 64, warmup: int = 20) -> dict[str, Any]:
    """Measure every path on the same prompts; returns numbers and ratios (see module docstring)."""
    from sentence_transformers import SentenceTransformer

    prompts = bench_prompts(root, count)
    prefilter = Prefilter.load(settings.guard.prefilter_model, encoder=settings.guard.prefilter_encoder)
    plain = SentenceTransformer(load_path(prefilter.encoder.name), device="cpu").eval()

    def baseline(text: str) -> TextScores:
        return head_probabilities(
            prefilter.head, plain.encode([text], convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        )

    lengths = [prefilter.encoder.token_count(text) for text in prompts]
    base = Latency.of("sentence-transformers encode, float32 (baseline)", _time_each(baseline, prompts, warmup))
    fast = Latency.of(
        f"Prefilter.score, {prefilter.encoder.dtype}",
        _time_each(lambda t: prefilter.score([t]), prompts, warmup),
    )
    served = Latency.of(
        "PrefilterBackend.score_prompt (asyncio + thread)",
        asyncio.run(_backend_latencies(settings, prompts, warmup)),
    )

    start = time.perf_counter()
    batched = prefilter.score(prompts, batch_size=batch_size)
    batched_rate = len(prompts) / (time.perf_counter() - start)
    single_rate = 1e3 / fast.mean_ms
    reference = np.concatenate([baseline(t).risk for t in prompts])
    agreement = float(np.mean(np.argmax(reference, axis=1) == np.argmax(batched.risk, axis=1)))
    return {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_1min": os.getloadavg()[0],  # other work on the machine inflates the numbers
        },
        "prompts": {
            "count": len(prompts),
            "tokens_median": statistics.median(lengths),
            "tokens_p99": float(np.percentile(lengths, 99)),
        },
        "latency": [base, fast, served],
        "speedup_p50_vs_baseline": base.p50_ms / fast.p50_ms,
        "throughput": {
            "single_per_s": single_rate,
            "batched_per_s": batched_rate,
            "batch_size": batch_size,
            "batched_vs_single": batched_rate / single_rate,
        },
        "argmax_agreement_with_float32_baseline": agreement,
    }
