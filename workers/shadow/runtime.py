"""The shadow guard inside a worker: its backend, state, lanes and feed, started with the worker.

Isolation from the live guard, piece by piece:

- **backend**: its own (``make_backend(shadow_settings(settings))``), so its own engine, KV cache
  (another ``engine.kv_budget_bytes``) and scheduler task with its own forward thread. Two backends
  on one device are two schedulers: on a GPU they share the device's time and memory; on the CPU
  each forward thread runs ``engine.cpu_threads`` torch threads, so the shadow roughly doubles the
  model's CPU time and the two compete for cores (the live guard gets no priority: give the worker
  the cores for both, or run the shadow on a worker of its own). The model never runs on the event
  loop, and a live request never waits in the shadow's batches.
- **state**: a ``RedisStore`` under ``shadow.redis_namespace`` (default ``<redis.namespace>:shadow``):
  its token logs, carries, cut-offs and owner epochs never touch the live ones.
- **effects**: ``ShadowSink`` (verdicts only) and ``ShadowPublisher`` (its own producer);
  ``ShadowSensor`` keeps its numbers out of the live series.
- **input**: ``ShadowFeed``; the shadow's lanes (``shadow.max_in_flight``) back-pressure only it.

The moderation itself is the live ``Moderator`` class with the shadow's policy: the live path and
the shadow judge the same way by construction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from topics.events import Action, PromptEvent, TokenChunkEvent, VerdictEvent
from workers.backends.base import GuardBackend
from workers.engine.debounce import Policy
from workers.metrics import Sensor
from workers.moderation.delivery import Delivery
from workers.moderation.lanes import ConversationRouter
from workers.moderation.moderator import Moderator, ModeratorConfig
from workers.settings import Settings
from workers.shadow.feed import FeedStats, ShadowFeed
from workers.shadow.sensor import ShadowSensor
from workers.shadow.sink import ShadowSink
from workers.state.base import ConversationStore

logger = logging.getLogger(__name__)

SHADOW_STOP_S = 5.0
"""How long the worker's stop waits for the shadow's backend and producer to close."""


class VerdictPublisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish_many(self, verdicts: Sequence[VerdictEvent]) -> None:
        """Durably publish ``verdicts`` to the shadow topic, in order."""


class ShadowStore(ConversationStore, Protocol):
    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


def shadow_settings(settings: Settings) -> Settings:
    """The settings the shadow's backend is built from: the live ones with ``shadow.backend`` and
    ``shadow.checkpoint`` (where set) in place of the guard's."""
    shadow = settings.shadow
    chosen = {"backend": shadow.backend, "checkpoint": shadow.checkpoint}
    guard = settings.guard.model_copy(update={k: v for k, v in chosen.items() if v is not None})
    return settings.model_copy(update={"guard": guard})


def shadow_namespace(settings: Settings) -> str:
    """The Redis prefix of the shadow's conversation state."""
    return settings.shadow.redis_namespace or f"{settings.redis.namespace}:shadow"


class ShadowGuard:
    """A second guard on the worker's traffic; ``offer`` and ``assign`` never wait."""

    def __init__(
        self,
        settings: Settings,
        backend: GuardBackend,
        *,
        worker_id: str,
        sensor: Sensor,
        publisher: VerdictPublisher | None = None,
        store: ShadowStore | None = None,
    ) -> None:
        if publisher is None:
            from workers.shadow.publisher import ShadowPublisher

            publisher = ShadowPublisher(settings.kafka)
        if store is None:
            from workers.state.redis_store import RedisStore

            store = RedisStore(
                settings.redis.url.get_secret_value(),
                namespace=shadow_namespace(settings),
                ttl_s=settings.redis.ttl_s,
                finished_ttl_s=settings.redis.finished_ttl_s,
            )
        self.backend = backend
        self.publisher = publisher
        self.store = store
        self.sink = ShadowSink(publisher.publish_many, sensor)
        shadow, guard = settings.shadow, settings.guard
        self.policy = Policy(shadow.policy or guard.policy)
        self.moderator = Moderator(
            backend,
            store,
            self.sink,
            ModeratorConfig(
                worker_id=worker_id,
                default_policy=self.policy,
                dlq_payload_bytes=settings.kafka.dlq_payload_bytes,
                # The live guard warns when the worker falls behind; the shadow's lag is its drops.
                lag_warn_s=float("inf"),
                on_error=Action.CUTOFF if guard.on_error == "cutoff" else Action.FLAG,
                on_state_loss=Action.CUTOFF if guard.on_state_loss == "cutoff" else Action.FLAG,
            ),
            ShadowSensor(sensor),
        )
        w = settings.worker
        self.router = ConversationRouter(
            self.moderator,
            max_in_flight=shadow.max_in_flight,
            prompt_wait_s=w.prompt_wait_s,
            reorder_window=w.reorder_window,
            reorder_wait_s=w.reorder_wait_s,
        )
        self.feed = ShadowFeed(
            self.router.submit,
            self.moderator.on_assigned,
            capacity=shadow.queue_size,
            sensor=sensor,
            policy=shadow.policy,
        )

    @property
    def stats(self) -> FeedStats:
        return self.feed.stats

    def runtime_stats(self) -> Mapping[str, float]:
        """The shadow's values among ``workers.metrics.RUNTIME_SERIES``."""
        return {"shadow_queued": self.feed.stats.waiting}

    async def start(self) -> None:
        """Reach Redis and Kafka and load the shadow's model; a shadow that cannot start fails the
        worker's start (a misconfigured shadow is an operator's error to see, not to hide)."""
        await self.store.ping()
        await self.publisher.start()
        await self.backend.start()
        self.feed.start()
        logger.info(
            "shadow guard ready: %s under the %s policy (verdicts to the shadow topic, no cut-offs)",
            self.backend.info.model_id,
            self.policy.value,
        )

    def offer(self, event: PromptEvent | TokenChunkEvent, delivery: Delivery) -> None:
        self.feed.offer(event, delivery)

    def assign(self, partitions: Sequence[int]) -> None:
        self.feed.assign(partitions)

    async def stop(self) -> None:
        """Stop taking events and close; what was queued or in the shadow's lanes is lost."""
        await self.feed.aclose()
        await self.router.aclose()
        stats = self.feed.stats
        logger.info(
            "shadow guard stopped: %d events offered, %d queued, %d dropped, %d skipped",
            stats.offered,
            stats.queued,
            stats.dropped,
            stats.skipped,
        )
        try:
            async with asyncio.timeout(SHADOW_STOP_S):
                await self.backend.close()
                await self.publisher.stop()
        except TimeoutError:
            logger.warning("the shadow guard did not close within %.0f s", SHADOW_STOP_S)
        await self.store.aclose()
