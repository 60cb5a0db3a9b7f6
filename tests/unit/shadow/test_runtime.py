"""The shadow guard assembled: its settings, its own state, verdicts to its publisher only."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import FakeBackend
from tests.unit.shadow.helpers import CountingSensor, PingableStore, RecordingPublisher, chunk, delivery, prompt
from topics.events import Action
from workers.settings import ConfigError, load_settings
from workers.shadow.runtime import ShadowGuard, shadow_namespace, shadow_settings


def test_shadow_settings_replace_only_what_the_shadow_names() -> None:
    settings = load_settings(guard={"backend": "stream", "checkpoint": "/live"}, shadow={"checkpoint": "/candidate"})
    derived = shadow_settings(settings)
    assert (derived.guard.backend, derived.guard.checkpoint) == ("stream", "/candidate")
    assert derived.engine == settings.engine and settings.guard.checkpoint == "/live"
    assert shadow_namespace(settings) == f"{settings.redis.namespace}:shadow"
    assert not settings.shadow.enabled  # off by default
    with pytest.raises(ConfigError, match=r"shadow\.redis_namespace"):
        load_settings(redis={"namespace": "ns"}, shadow={"redis_namespace": "ns"})


async def test_the_shadow_judges_with_its_policy_in_its_own_state_and_publishes_only_verdicts() -> None:
    # The live default is loose; the shadow is strict, so it would cut what the live guard flags.
    settings = load_settings(guard={"policy": "loose"}, shadow={"enabled": True, "policy": "strict"})
    publisher, store, sensor = RecordingPublisher(), PingableStore(), CountingSensor()
    guard = ShadowGuard(settings, FakeBackend(), worker_id="w", sensor=sensor, publisher=publisher, store=store)
    await guard.start()
    assert publisher.started
    guard.assign([0])
    events = [prompt("c1"), chunk("c1", 0, "this is MEH MEH stuff "), chunk("c1", 1, "and more", final=True)]
    for n, event in enumerate(events):
        guard.offer(event, delivery(event, n))
    for _ in range(200):
        if len(publisher.verdicts) == len(events):
            break
        await asyncio.sleep(0.01)
    state = await store.load("c1")
    await guard.stop()

    assert state is not None and state.cutoff  # the shadow's own state, in the store it was given
    assert [(v.seq, v.action, v.policy) for v in publisher.verdicts] == [
        (None, Action.ALLOW, "strict"),
        (0, Action.CUTOFF, "strict"),
        (1, Action.CUTOFF, "strict"),  # after its cut-off
    ]
    assert guard.sink.discarded_controls == 1 and guard.sink.discarded_dead_letters == 0
    assert guard.stats.queued == len(events) and guard.stats.dropped == 0
    assert guard.runtime_stats() == {"shadow_queued": 0}
    assert publisher.stopped
