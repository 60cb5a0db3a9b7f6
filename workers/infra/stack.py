"""The local stack behind ``streamwarden infra up|down|status``: Kafka plus Redis, kept in a run directory.

``up`` starts servers that outlive the command (each in its own session) and records them in the
state file; ``status`` and ``down`` find them again from that file. Layout of the run directory::

    state.json   what runs: pids, ports, bootstrap servers, Redis URL, topic shape
    kafka/       node-<id>/{server.properties, data/, logs/, kafka.pid}, log4j2 configs
    redis/       redis.log, redis.out, redis.pid
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError

from workers.infra.errors import InfraError, StartupError
from workers.infra.kafka import LocalKafka
from workers.infra.kafka_admin import RETRIABLE_ERRORS, broker_ids
from workers.infra.maven import DEFAULT_KAFKA_VERSION
from workers.infra.redis_server import LocalRedis
from workers.infra.state import STATE_FORMAT, InfraState, TopicsState, clear_state, load_state, save_state
from workers.infra.topics import EnsuredTopics, ensure_topics

logger = logging.getLogger(__name__)

_HEALTH_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class UpRequest:
    """What ``infra up`` was asked for."""

    run_dir: Path
    brokers: int = 1
    topics: TopicsState | None = None
    kafka_version: str = DEFAULT_KAFKA_VERSION
    cache_root: Path | None = None


@dataclass(slots=True)
class UpResult:
    state: InfraState
    already_running: bool
    topics: EnsuredTopics | None = None


@dataclass(slots=True)
class ProcessStatus:
    name: str
    pid: int | None
    alive: bool


@dataclass(slots=True)
class StackStatus:
    """What ``infra status`` reports; ``healthy`` when every process runs and both services answer."""

    state: InfraState | None
    processes: list[ProcessStatus] = field(default_factory=list)
    brokers_listed: list[int] = field(default_factory=list)
    kafka_error: str | None = None
    redis_ok: bool = False

    @property
    def healthy(self) -> bool:
        if self.state is None:
            return False
        expected = sorted(n["node_id"] for n in self.state["kafka"]["nodes"])
        return all(p.alive for p in self.processes) and self.brokers_listed == expected and self.redis_ok


async def up(request: UpRequest) -> UpResult:
    """Start Kafka and Redis unless they already run from ``request.run_dir``, then ensure the topics.

    Raises:
        InfraError: they run with another broker count, or a start failed (servers started by this
            call are stopped again).
    """
    state = load_state(request.run_dir)
    already = False
    if state is not None:
        status = await inspect(request.run_dir)
        if status.healthy:
            running = len(state["kafka"]["nodes"])
            if running != request.brokers:
                raise InfraError(
                    f"the local stack already runs with {running} broker(s) from {request.run_dir}; "
                    "run `streamwarden infra down` first"
                )
            already = True
        else:
            logger.warning("the stack recorded in %s is not healthy; starting it again", request.run_dir)
            await down(request.run_dir)
            state = None
    if state is None:
        state = await _start(request)
    ensured = None
    if request.topics is not None:
        topics = request.topics
        ensured = await ensure_topics(
            state["kafka"]["bootstrap_servers"],
            prefix=topics["prefix"],
            partitions=topics["partitions"],
            replication=topics["replication"],
        )
        state["topics"] = topics
        save_state(request.run_dir, state)
    return UpResult(state=state, already_running=already, topics=ensured)


async def _start(request: UpRequest) -> InfraState:
    kafka = LocalKafka(
        request.brokers,
        run_dir=request.run_dir / "kafka",
        version=request.kafka_version,
        cache_root=request.cache_root,
        outlive=True,
    )
    redis = LocalRedis(run_dir=request.run_dir / "redis", outlive=True)
    results = await asyncio.gather(kafka.start(), redis.start(), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await asyncio.gather(kafka.stop(remove_data=True), redis.stop(remove_data=True))
        shutil.rmtree(request.run_dir, ignore_errors=True)
        if isinstance(errors[0], InfraError):
            raise errors[0]
        raise StartupError(f"the local stack did not start: {errors[0]!r}") from errors[0]
    state: InfraState = {
        "format": STATE_FORMAT,
        "kafka": kafka.describe(),
        "redis": redis.describe(),
        "topics": None,
    }
    save_state(request.run_dir, state)
    return state


async def inspect(run_dir: Path) -> StackStatus:
    """Each recorded process, whether it runs, and whether Kafka and Redis answer."""
    state = load_state(run_dir)
    status = StackStatus(state=state)
    if state is None:
        return status
    kafka = LocalKafka.from_state(state["kafka"])
    for node_id in kafka.node_ids:
        node = kafka.node(node_id)
        pid = node.process.pid if node.process is not None else None
        status.processes.append(ProcessStatus(f"kafka node {node_id}", pid, node.running()))
    redis = LocalRedis.from_state(state["redis"])
    pid = redis.process.pid if redis.process is not None else None
    status.processes.append(ProcessStatus("redis-server", pid, redis.running()))
    if kafka.running_node_ids():
        try:
            ids = await asyncio.wait_for(broker_ids(kafka.node_bootstrap()), _HEALTH_TIMEOUT_S)
            status.brokers_listed = sorted(ids)
        except RETRIABLE_ERRORS as exc:
            status.kafka_error = f"{type(exc).__name__}: {exc}"
    if redis.running():
        try:
            await redis.wait_ready(_HEALTH_TIMEOUT_S)
            status.redis_ok = True
        except (StartupError, RedisError):
            status.redis_ok = False
    return status


async def down(run_dir: Path) -> list[str]:
    """Stop everything recorded in ``run_dir`` and delete its data; return what was stopped."""
    state = load_state(run_dir)
    stopped: list[str] = []
    if state is not None:
        kafka = LocalKafka.from_state(state["kafka"])
        redis = LocalRedis.from_state(state["redis"])
        stopped = [f"kafka node {i}" for i in sorted(kafka.running_node_ids())]
        if redis.running():
            stopped.append("redis-server")
        await asyncio.gather(kafka.stop(remove_data=True), redis.stop(remove_data=True))
        clear_state(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return stopped
