"""A stack's children die with the process that started them, however it dies (SIGKILL included)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.pipeline import planted_checkpoint, worker_settings

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STACK = """
import asyncio, json, sys
from pathlib import Path
from workers.infra import LocalKafka, LocalRedis, ensure_topics
from workers.runner import WorkerProcess

run_dir, checkpoint = Path(sys.argv[1]), sys.argv[2]
settings = json.loads(sys.argv[3])

async def main():
    async with LocalKafka(nodes=1, run_dir=run_dir / "kafka") as kafka, LocalRedis(run_dir=run_dir / "redis") as redis:
        await ensure_topics(kafka.bootstrap_servers, prefix="life", partitions=2)
        settings.update({"kafka.bootstrap_servers": kafka.bootstrap_servers, "redis.url": redis.url})
        async with WorkerProcess("worker-1", run_dir, settings) as worker:
            pids = {"kafka": [kafka.node(1).process.pid], "redis": redis.process.pid, "worker": worker.pid}
            print(json.dumps(pids), flush=True)
            await asyncio.sleep(600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_sigkill_of_the_starter_takes_kafka_redis_and_the_worker_with_it(tmp_path: Path) -> None:
    checkpoint = planted_checkpoint(tmp_path / "ckpt")
    settings = worker_settings("unused", "unused", "life", checkpoint, 2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STACK,
        str(tmp_path / "run"),
        str(checkpoint),
        json.dumps(settings),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 240)
    assert line, "the stack did not start"
    started = json.loads(line)
    pids = [*started["kafka"], started["redis"], started["worker"]]
    assert all(_alive(pid) for pid in pids)
    proc.send_signal(signal.SIGKILL)  # no handler, no atexit, no context exit runs
    await proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    survivors = {pid: psutil.Process(pid).cmdline()[:3] for pid in pids if _alive(pid)}
    for pid in survivors:
        psutil.Process(pid).kill()
    assert not survivors, f"children outlived their SIGKILLed starter: {survivors}"


async def test_a_worker_whose_broker_is_gone_exits_with_a_clear_error(tmp_path: Path) -> None:
    from workers.agents.broker_watch import EXIT_BROKER_UNREACHABLE
    from workers.infra import LocalKafka, LocalRedis, ensure_topics
    from workers.runner import WorkerProcess

    checkpoint = planted_checkpoint(tmp_path / "ckpt")
    async with (
        LocalKafka(nodes=1, run_dir=tmp_path / "kafka") as kafka,
        LocalRedis(run_dir=tmp_path / "redis") as redis,
    ):
        await ensure_topics(kafka.bootstrap_servers, prefix="gone", partitions=2)
        settings = {
            **worker_settings(kafka.bootstrap_servers, redis.url, "gone", checkpoint, 2),
            "kafka.broker_unreachable_exit_s": 4.0,
        }
        worker = WorkerProcess("worker-1", tmp_path / "run", settings)
        await worker.start()
        try:
            await kafka.stop()  # the only broker goes away for good
            code = await asyncio.wait_for(worker.wait(), 90)
        finally:
            await worker.stop()
    assert code == EXIT_BROKER_UNREACHABLE
    assert "no Kafka broker of" in worker.log_tail(200) and "has answered for 4 s" in worker.log_tail(200)
