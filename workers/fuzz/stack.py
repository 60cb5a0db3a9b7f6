"""The worker a fuzz run targets: its settings, and a whole stack for ``streamwarden fuzz``.

The worker runs the planted checkpoint (known verdicts) through the real engine, with 64 KiB
messages, a reorder window of 8 and the default 5 s prompt and reorder waits. The waits are
measured in the records' own time (``workers.moderation.logclock``), so they must also cover the
publisher: on a loaded two-core machine the fuzzer itself stalls for over a second now and then
(waiting for the broker's acknowledgements), and a chunk published that much after the one
parked for it has, by the worker's rules, come too late.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from workers.engine.planted import make_planted_checkpoint
from workers.engine.template import ChatFormat, packaged_qwen3_tokenizer_dir
from workers.fuzz import drive
from workers.fuzz.checks import Bounds, Report
from workers.fuzz.mutations import Limits
from workers.fuzz.plan import PlanConfig, build_plan
from workers.fuzz.scenarios import Guard
from workers.infra import LocalKafka, LocalRedis, ensure_topics
from workers.runner import WorkerProcess

MAX_MESSAGE_BYTES = 64 << 10
REORDER_WINDOW = 8
WAIT_S = 5.0


def worker_overrides(kafka: str, redis: str, prefix: str, checkpoint: Path, partitions: int) -> dict[str, object]:
    """Settings of the worker under test (dotted keys, as ``WorkerProcess`` takes them)."""
    return {
        "kafka.bootstrap_servers": kafka,
        "kafka.topic_prefix": prefix,
        "kafka.partitions": partitions,
        "kafka.group_id": f"guard-{prefix}",
        "kafka.max_message_bytes": MAX_MESSAGE_BYTES,
        "kafka.session_timeout_s": 6.0,
        "redis.url": redis,
        "redis.namespace": redis_namespace(prefix),
        "guard.backend": "stream",
        "guard.checkpoint": str(checkpoint),
        "guard.allow_test_checkpoint": True,
        "engine.dtype": "float32",  # the planted weights are exact in float32
        "worker.prompt_wait_s": WAIT_S,
        "worker.reorder_wait_s": WAIT_S,
        "worker.reorder_window": REORDER_WINDOW,
        "engine.max_wait_ms": 1.0,
    }


def redis_namespace(prefix: str) -> str:
    return f"fuzz:{prefix}"


def planted_guard(checkpoint: Path) -> tuple[Guard, Limits]:
    """What the scripts and strategies need to know about the planted checkpoint's worker."""
    chat = ChatFormat.from_pretrained(packaged_qwen3_tokenizer_dir())
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    guard = Guard.planted(chat, max_positions=int(config["max_position_embeddings"]), reorder_window=REORDER_WINDOW)
    limits = Limits(MAX_MESSAGE_BYTES, vocab_size=len(chat.tokenizer), end_of_turn_id=chat.end_of_turn_id)
    return guard, limits


async def fuzz_stack(
    config: PlanConfig,
    *,
    run_dir: Path,
    bounds: Bounds | None = None,
    pace: drive.Pace | None = None,
    partitions: int = 4,
) -> tuple[Report, Path]:
    """Start Kafka, Redis and a worker under ``run_dir``, run one plan against them.

    Returns the report and the worker's log file.
    """
    run_dir = run_dir / time.strftime("%Y%m%d-%H%M%S")
    async with LocalKafka(nodes=1, run_dir=run_dir / "kafka") as kafka, LocalRedis(run_dir=run_dir / "redis") as redis:
        checkpoint = make_planted_checkpoint(run_dir / "planted")
        prefix = f"fz{uuid.uuid4().hex[:8]}"
        await ensure_topics(kafka.bootstrap_servers, prefix=prefix, partitions=partitions)
        overrides = worker_overrides(kafka.bootstrap_servers, redis.url, prefix, checkpoint, partitions)
        overrides["log_level"] = "WARNING"
        worker = WorkerProcess("fuzz-worker", run_dir, overrides)
        guard, limits = planted_guard(checkpoint)
        plan = build_plan(config, guard, limits, run=prefix)
        async with worker:
            assert worker.pid is not None
            target = drive.Target(
                kafka.bootstrap_servers, prefix, redis.url, redis_namespace(prefix), worker.pid, worker.log_path
            )
            return await drive.run(target, plan, bounds=bounds, pace=pace), worker.log_path
