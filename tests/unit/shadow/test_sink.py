"""The shadow sink publishes the shadow's verdicts, marked, and never a cut-off or a dead letter."""

from __future__ import annotations

from tests.fakes import FakeBackend
from tests.unit.shadow.helpers import CountingSensor, RecordingPublisher, chunk, delivery, prompt
from topics.events import Action, ControlEvent, DeadLetter, Risk, Stage, VerdictEvent
from workers.engine.debounce import Policy
from workers.moderation import ids
from workers.moderation.lanes import Work
from workers.moderation.moderator import Moderator, ModeratorConfig
from workers.shadow.sensor import ShadowSensor
from workers.shadow.sink import SHADOW_TIER_PREFIX, ShadowSink, as_shadow, shadow_verdict_id, unshadowed_tier
from workers.state.memory_store import MemoryStore


def _verdict(cid: str = "c1", seq: int | None = 0, action: Action = Action.ALLOW) -> VerdictEvent:
    stage = Stage.PROMPT if seq is None else Stage.RESPONSE
    return VerdictEvent(
        event_id=ids.verdict_id(cid, "m1", stage, seq),
        conversation_id=cid,
        message_id="m1",
        stage=stage,
        seq=seq,
        risk=Risk.SAFE,
        action=action,
        tier="stream",
        model_id="fake",
        policy="strict",
    )


async def test_only_verdicts_are_published_and_they_are_marked() -> None:
    publisher, sensor = RecordingPublisher(), CountingSensor()
    sink = ShadowSink(publisher.publish_many, sensor)
    live = _verdict()
    control = ControlEvent(
        event_id=ids.control_id("c1", "m1"),
        conversation_id="c1",
        message_id="m1",
        stage=Stage.RESPONSE,
        risk=Risk.UNSAFE,
        policy="strict",
    )
    dead = DeadLetter(
        source_topic="t", source_partition=0, source_offset=1, reason="r", detail="d", payload="", payload_size=0
    )
    await sink.publish_many([live, control])
    await sink.publish(dead)

    (published,) = publisher.verdicts
    assert published.event_id == shadow_verdict_id(live.event_id) != live.event_id
    assert published.tier == SHADOW_TIER_PREFIX + "stream" and unshadowed_tier(published.tier) == "stream"
    assert (published.conversation_id, published.message_id, published.stage, published.seq) == (
        "c1",
        "m1",
        Stage.RESPONSE,
        0,
    )
    assert (sink.discarded_controls, sink.discarded_dead_letters) == (1, 1)
    assert sensor.calls["shadow_discard", "control"] == sensor.calls["shadow_discard", "dead_letter"] == 1


def test_shadow_ids_are_stable_and_distinct_per_verdict() -> None:
    a, b = _verdict(seq=0), _verdict(seq=1)
    assert as_shadow(a).event_id == as_shadow(a).event_id
    assert as_shadow(a).event_id != as_shadow(b).event_id


async def test_the_live_moderator_behind_the_shadow_sink_never_emits_a_control_or_dead_letter() -> None:
    publisher, sensor = RecordingPublisher(), CountingSensor()
    sink = ShadowSink(publisher.publish_many, sensor)
    config = ModeratorConfig(worker_id="w", default_policy=Policy.STRICT, dlq_payload_bytes=1024)
    moderator = Moderator(FakeBackend(), MemoryStore(), sink, config, ShadowSensor(sensor))
    acks = 0

    async def ack() -> None:
        nonlocal acks
        acks += 1

    events = [
        prompt("c1", "How do I BAD things?"),  # an unsafe prompt: cut off at once
        prompt("c1", "How do I BAD things?"),  # a duplicate: a dead letter for the live worker
        prompt("c2"),
        chunk("c2", 0, "fine words "),
        chunk("c2", 1, "then BAD BAD words"),  # cut off here
        chunk("c2", 2, "more", final=True),  # after the cut-off
    ]
    for n, event in enumerate(events):
        await moderator.handle([Work(event=event, delivery=delivery(event, n), ack=ack)])

    assert acks == len(events)
    verdicts = publisher.verdicts
    assert [(v.conversation_id, v.seq, v.action) for v in verdicts] == [
        ("c1", None, Action.CUTOFF),
        ("c2", None, Action.ALLOW),
        ("c2", 0, Action.ALLOW),
        ("c2", 1, Action.CUTOFF),
        ("c2", 2, Action.CUTOFF),
    ]
    assert all(v.tier.startswith(SHADOW_TIER_PREFIX) for v in verdicts)
    assert (sink.discarded_controls, sink.discarded_dead_letters) == (2, 1)
    # Its numbers are the shadow's: none reach the live series.
    assert sensor.calls["shadow_verdict", "response"] == 3 and sensor.calls["shadow_verdict", "prompt"] == 2
    assert not any(name in ("verdict", "cutoff", "lag") for name, _ in sensor.calls)
