"""The worker's faust app: built by ``create_app(settings, runtime)``, nothing at import time.

One app per worker process. Agents consume prompts and tokens; the guard backend, the Redis store
and the lanes live in ``WorkerRuntime``, started and stopped with the app, and so does the shadow
guard when ``shadow.enabled`` (``workers.shadow``): it is offered every decoded event and never
awaited by the live path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import faust
from mode import Service

from topics.events import Action, PromptEvent, TokenChunkEvent
from topics.names import Topic
from workers.agents.broker_watch import EXIT_BROKER_UNREACHABLE, BrokerWatch, parse_servers, reachable
from workers.agents.emit import KafkaSink
from workers.agents.ingest import Ingest
from workers.agents.positions import partition_positions
from workers.backends.base import GuardBackend
from workers.engine.debounce import Policy
from workers.health import Health
from workers.kafka_auth import KafkaAuth
from workers.metrics import NullSensor, Sensor
from workers.moderation.lanes import ConversationRouter
from workers.moderation.moderator import Moderator, ModeratorConfig
from workers.settings import Settings
from workers.shadow.runtime import ShadowGuard
from workers.state.redis_store import RedisStore

logger = logging.getLogger(__name__)


def worker_id(settings: Settings) -> str:
    return settings.worker.worker_id or f"{socket.gethostname()}:{os.getpid()}"


class WorkerRuntime(Service):
    """Everything a worker holds besides faust: backend, store, moderator, lanes."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        backend: GuardBackend,
        sensor: Sensor,
        shadow: ShadowGuard | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Called once, when the backend is loaded and the group has given this worker its partitions.
        self.on_ready: list[Callable[[], object]] = []
        self._app = app
        self.settings = settings
        self.backend = backend
        self.sensor = sensor
        self.store = RedisStore(
            settings.redis.url.get_secret_value(),
            namespace=settings.redis.namespace,
            ttl_s=settings.redis.ttl_s,
            finished_ttl_s=settings.redis.finished_ttl_s,
        )
        self.moderator = Moderator(
            backend,
            self.store,
            KafkaSink(app, settings.kafka.topic_prefix),
            ModeratorConfig(
                worker_id=worker_id(settings),
                default_policy=Policy(settings.guard.policy),
                dlq_payload_bytes=settings.kafka.dlq_payload_bytes,
                lag_warn_s=settings.worker.lag_warn_ms / 1000.0,
                on_error=Action.CUTOFF if settings.guard.on_error == "cutoff" else Action.FLAG,
                on_state_loss=Action.CUTOFF if settings.guard.on_state_loss == "cutoff" else Action.FLAG,
            ),
            sensor,
        )
        w = settings.worker
        self.router = ConversationRouter(
            self.moderator,
            max_in_flight=w.max_in_flight,
            prompt_wait_s=w.prompt_wait_s,
            reorder_window=w.reorder_window,
            reorder_wait_s=w.reorder_wait_s,
        )
        self.shadow = shadow
        self.ingest = Ingest(
            self.moderator,
            self.router,
            max_bytes=settings.kafka.max_message_bytes,
            sensor=sensor,
            tap=shadow.offer if shadow is not None else None,
        )

        self.broker_lost = False  # set when no broker answered for kafka.broker_unreachable_exit_s
        self.ready = asyncio.Event()  # the backend is loaded: the agents may consume
        self._assigned = False  # the first rebalance gave this worker its partitions (maybe none)
        self._announced = False
        self.health = Health()  # what GET /healthz reports

    async def on_start(self) -> None:
        await self.store.ping()
        if self.shadow is not None:
            await asyncio.gather(self.backend.start(), self.shadow.start())
        else:
            await self.backend.start()
        logger.info("guard backend ready: %s", self.backend.info.model_id)
        # The model, its tokenizer and the libraries are millions of long-lived objects; left to
        # the collector, every full collection walks them all on the event loop (~250 ms stalls at
        # 1,000 chunks/s). Collect start-up garbage once, then exempt what survived from collection.
        gc.collect()
        gc.freeze()
        self.ready.set()
        self.health.record("model", True, f"{self.backend.info.model_id} loaded")
        self.sensor.add_source(self._runtime_stats)
        self.sensor.add_partition_source(lambda: partition_positions(self._app))
        self._announce()

    def _runtime_stats(self) -> dict[str, float]:
        """What the metrics read at each scrape (from the HTTP thread: plain reads of counters)."""
        return {
            **self.backend.engine_stats(),
            "lanes_active": self.router.active_lanes,
            "store_failures": self.moderator.store_outage.total_failures,
            **(self.shadow.runtime_stats() if self.shadow is not None else {}),
        }

    @Service.task
    async def _watch_guard(self) -> None:
        """Ask the guard every ``worker.health_interval_s`` whether it can judge, for ``/healthz``
        (a dead or restarting engine process turns the ``model`` check red)."""
        await self.ready.wait()
        interval = self.settings.worker.health_interval_s
        while not self.should_stop:
            problem = self.backend.unavailable()
            self.health.record("model", problem is None, problem or f"{self.backend.info.model_id} loaded")
            await self.sleep(interval)

    @Service.task
    async def _watch_store(self) -> None:
        """Ping the state store every ``worker.health_interval_s`` for ``/healthz``."""
        interval = self.settings.worker.health_interval_s
        while not self.should_stop:
            try:
                await asyncio.wait_for(self.store.ping(), timeout=interval)
            except Exception as exc:  # noqa: BLE001  # any failure is the finding: reported, not raised
                self.health.record("redis", False, f"unreachable ({type(exc).__name__}: {exc})"[:300])
            else:
                self.health.record("redis", True, "answers")
            await self.sleep(interval)

    @Service.task
    async def _watch_broker(self) -> None:
        """Probe the bootstrap servers every ``worker.health_interval_s`` for ``/healthz``; exit the
        worker (SIGTERM to itself: faust's graceful stop) once none has answered for
        ``kafka.broker_unreachable_exit_s`` (0: never); ``run_worker`` then exits non-zero."""
        limit = self.settings.kafka.broker_unreachable_exit_s
        interval = self.settings.worker.health_interval_s
        if limit:
            interval = min(interval, limit / 4)
        servers = parse_servers(self.settings.kafka.bootstrap_servers)
        watch = BrokerWatch(limit or float("inf"))
        while not self.should_stop:
            ok = await reachable(servers)
            if ok:
                self.health.record("kafka", True, "a broker answers")
            else:
                self.health.record("kafka", False, f"no broker of {self.settings.kafka.bootstrap_servers} answers")
            if watch.observe(ok):  # never with no limit: the watch gives up after infinity
                logger.error(
                    "no Kafka broker of %s has answered for %.0f s (kafka.broker_unreachable_exit_s); "
                    "exiting with status %s so that a supervisor can restart this worker",
                    self.settings.kafka.bootstrap_servers,
                    limit,
                    EXIT_BROKER_UNREACHABLE,
                )
                self.broker_lost = True
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await self.sleep(interval)

    def partitions_assigned(self, partitions: int) -> None:
        self._assigned = True
        self.health.record("partitions", True, f"{partitions} assigned")
        self._announce()

    def _announce(self) -> None:
        if self.ready.is_set() and self._assigned and not self._announced:
            self._announced = True
            for callback in self.on_ready:
                callback()

    async def on_stop(self) -> None:
        await self.router.aclose()
        if self.shadow is not None:
            await self.shadow.stop()
        await self.backend.close()
        await self.store.aclose()


def create_app(
    settings: Settings,
    backend: GuardBackend,
    *,
    sensor: Sensor | None = None,
    shadow_backend: GuardBackend | None = None,
) -> tuple[faust.App, WorkerRuntime]:
    """The faust app with its agents, and the runtime it starts.

    ``shadow_backend`` (built from ``workers.shadow.runtime.shadow_settings``) is required when
    ``shadow.enabled`` and must not be given otherwise.
    """
    if settings.shadow.enabled != (shadow_backend is not None):
        raise ValueError("a shadow backend is given exactly when shadow.enabled is set")
    k = settings.kafka
    app = faust.App(
        k.group_id,
        broker=[f"kafka://{server.strip()}" for server in k.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        broker_commit_interval=k.commit_interval_s,
        producer_acks=-1,
        producer_linger=k.producer_linger_ms / 1000,
        producer_max_request_size=max(k.max_message_bytes, 1 << 20) + (64 << 10),
        consumer_max_fetch_size=max(k.max_message_bytes, 1 << 20) + (64 << 10),
        stream_wait_empty=False,
        broker_credentials=KafkaAuth.from_settings(k).faust_credentials(),
    )
    sensor = sensor or NullSensor()
    shadow = (
        ShadowGuard(settings, shadow_backend, worker_id=worker_id(settings), sensor=sensor)
        if shadow_backend is not None
        else None
    )
    runtime = WorkerRuntime(app, settings, backend, sensor, shadow)
    app.service(runtime)  # type: ignore[arg-type]  # faust accepts instances, its stub says classes

    def topic(which: Topic) -> faust.TopicT:
        return app.topic(
            which.full_name(k.topic_prefix),
            key_type=bytes,
            value_type=bytes,
            partitions=k.partitions,
            internal=False,
        )

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[Any] = args[0] if args else kwargs["assigned"]
        partitions = sorted({tp.partition for tp in assigned})
        await runtime.moderator.on_assigned(partitions)
        if runtime.shadow is not None:
            runtime.shadow.assign(partitions)  # applied by the shadow's own task, never awaited here
        runtime.partitions_assigned(len(partitions))

    app.on_partitions_assigned.connect(on_assigned)

    @app.agent(topic(Topic.PROMPTS), name="prompts")
    async def prompts(stream: faust.StreamT[Any]) -> None:
        await runtime.ready.wait()  # the model loads after faust starts consuming
        await runtime.ingest.consume(stream, PromptEvent)

    @app.agent(topic(Topic.TOKENS), name="tokens")
    async def tokens(stream: faust.StreamT[Any]) -> None:
        await runtime.ready.wait()
        await runtime.ingest.consume(stream, TokenChunkEvent)

    return app, runtime
