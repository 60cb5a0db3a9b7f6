"""The engine process killed under a running worker: ``/healthz`` says so until its replacement,
started at once, is ready; conversations are then judged as before."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest

from tests.integration.endpoints import unlabelled, watch_health
from tests.integration.pipeline import Observer, moderate_one, new_worker, planted_checkpoint, worker_settings
from topics.events import Stage, VerdictStatus
from workers.client import GuardClient
from workers.engine.process import HOST_MODULE
from workers.infra import ensure_topics
from workers.infra.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _engine_pid(worker_pid: int) -> int | None:
    """The worker's engine process (``python -m workers.engine.host``), if it has one."""
    for child in psutil.Process(worker_pid).children(recursive=True):
        try:
            if HOST_MODULE in child.cmdline():
                return child.pid
        except psutil.Error:
            continue
    return None


async def test_a_killed_engine_process_turns_healthz_red_until_its_replacement_is_ready(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    settings = worker_settings(kafka_bootstrap, redis_url, prefix, planted_checkpoint(tmp_path), 1)
    (port,) = free_ports(1)
    settings["worker.metrics_port"] = port
    settings["worker.health_interval_s"] = 0.25
    health: list[tuple[int, str]] = []
    async with (
        new_worker("w1", tmp_path / "run", settings) as worker,
        Observer(kafka_bootstrap, prefix) as obs,
        GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
    ):
        assert worker.pid is not None
        watcher = asyncio.create_task(watch_health(port, health))
        await obs.wait_for(lambda: bool(health) and health[-1][0] == 200, within_s=60, what="/healthz 200")
        await moderate_one(client, obs, chunks=5, within_s=60)
        first = _engine_pid(worker.pid)
        assert first is not None, "the worker runs no engine process"
        seen = len(health)
        os.kill(first, signal.SIGKILL)
        await obs.wait_for(lambda: any(status == 503 for status, _ in health[seen:]), within_s=30, what="/healthz 503")
        reasons = {reason for status, reason in health[seen:] if status == 503}
        assert reasons == {"model: the engine process exited with -9; restarting it"}, reasons
        await obs.wait_for(lambda: health[-1][0] == 200, within_s=90, what="/healthz 200 with a new engine")
        watcher.cancel()
        second = _engine_pid(worker.pid)
        assert second not in (None, first)
        # Judged as before, by the new engine process (its KV rebuilt from the token log).
        cid = await moderate_one(client, obs, chunks=5, within_s=60)
        assert {v.status for v in obs.of(cid, Stage.RESPONSE)} == {VerdictStatus.MODERATED}
        assert not obs.dead, [d.reason for d in obs.dead]
        assert unlabelled(port)["guard_engine_restarts_total"] == 1
        assert "engine process" in worker.log_tail(200) and "exited with -9" in worker.log_tail(200)
