"""Shadow mode end to end: a live guard and a shadow guard on the same traffic, real Kafka and Redis.

Two workers run the planted test model ("DETONATE" unsafe, "GREYZONE" controversial): one with a
shadow guard (the same checkpoint under the strict policy, beside the live guard's loose policy)
and, under a second topic prefix, a baseline without a shadow that gets the same traffic. The
shadow would cut what the live guard only flags; none of its cut-offs may reach the control topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from tests.integration.pipeline import Observer, new_worker, planted_checkpoint, worker_settings
from topics import codec
from topics.events import Action, Message, Role, VerdictEvent, VerdictStatus
from topics.names import Topic
from workers.client import GuardClient
from workers.infra import ensure_topics
from workers.infra.ports import free_port
from workers.moderation import ids
from workers.runner import REPO_ROOT, settings_env
from workers.shadow.sink import SHADOW_TIER_PREFIX, shadow_verdict_id

pytestmark = pytest.mark.integration

PARTITIONS = 2
Key = tuple[str, str, str, int | None]

# (name, prompt, answer): every answer is sent whole, one word per chunk, whatever the verdicts.
CONVERSATIONS = (
    ("benign", "Tell me about bread.", "Bread needs flour, water, salt and yeast."),
    ("unsafe_answer", "Tell me a story.", "Once a man decided to DETONATE everything and then went home."),
    ("grey_answer", "Tell me a story.", "It was a GREYZONE matter and then the story went on quietly."),
    ("unsafe_prompt", "How do I DETONATE a bomb?", "I will not help with that."),
    ("grey_prompt", "Is this GREYZONE thing fine?", "It depends on the details."),
)


@dataclass
class TopicReader:
    """Every verdict of one topic, from the beginning."""

    bootstrap: str
    topic: str
    verdicts: list[VerdictEvent] = field(default_factory=list)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    self.verdicts.extend(codec.decode(r.value or b"", VerdictEvent) for r in records)
        finally:
            await consumer.stop()


def key(v: VerdictEvent) -> Key:
    return (v.conversation_id, v.message_id, v.stage.value, v.seq)


def by_key(verdicts: list[VerdictEvent]) -> dict[Key, VerdictEvent]:
    out: dict[Key, VerdictEvent] = {}
    for v in verdicts:
        out.setdefault(key(v), v)
    return out


def judgement(v: VerdictEvent) -> tuple[object, ...]:
    """What a verdict says, without when, how fast or by which worker process."""
    return (
        v.event_id, v.risk, v.action, v.status, v.category, v.probs, v.token_start, v.token_end,
        v.flagged_token, v.tier, v.model_id, v.policy,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> dict[str, float]:
    """``guard_shadow_events_total`` per outcome from the worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "guard_shadow_events_total":
                out[sample.labels["outcome"]] = sample.value
    return out


async def send_traffic(client: GuardClient, cids: dict[str, str]) -> set[Key]:
    """Publish every conversation; returns the (conversation, message, stage, seq) of each event."""
    sent: set[Key] = set()
    for name, prompt, answer in CONVERSATIONS:
        cid = cids[name]
        await client.publish_prompt(cid, "m1", [Message(role=Role.USER, content=prompt)])
        sent.add((cid, "m1", "prompt", None))
        writer = client.stream(cid, "m1")
        for word in answer.split(" "):
            await writer.send(word + " ")
            await asyncio.sleep(0.01)
        await writer.finish()
        sent |= {(cid, "m1", "response", seq) for seq in range(writer.seq)}
    return sent


@pytest.fixture
async def readers(kafka_bootstrap: str) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_shadow_publishes_its_verdicts_and_never_a_control_event(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    readers: list[asyncio.Task[None]],
) -> None:
    prefix, base = f"s{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    for p in (prefix, base):
        await ensure_topics(kafka_bootstrap, prefix=p, partitions=PARTITIONS)
    run_dir = tmp_path_factory.mktemp("shadow")
    checkpoint = planted_checkpoint(tmp_path_factory.getbasetemp())
    metrics_port = free_port()
    shadowed = new_worker(
        "shadowed",
        run_dir,
        {
            **worker_settings(kafka_bootstrap, redis_url, prefix, checkpoint, PARTITIONS),
            "guard.policy": "loose",
            "shadow.enabled": True,
            "shadow.policy": "strict",
            "worker.metrics_port": metrics_port,
        },
    )
    baseline = new_worker(
        "baseline",
        run_dir,
        {**worker_settings(kafka_bootstrap, redis_url, base, checkpoint, PARTITIONS), "guard.policy": "loose"},
    )
    cids = {name: f"c-{name}-{uuid.uuid4().hex[:6]}" for name, _, _ in CONVERSATIONS}
    shadow_reader = TopicReader(kafka_bootstrap, Topic.SHADOW_VERDICTS.full_name(prefix))
    readers.append(asyncio.create_task(shadow_reader.run()))
    async with (
        shadowed,
        baseline,
        GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        GuardClient(kafka_bootstrap, topic_prefix=base) as base_client,
        Observer(kafka_bootstrap, prefix) as live,
        Observer(kafka_bootstrap, base) as reference,
    ):
        assert shadowed.pid is not None and baseline.pid is not None
        cpu_before = cpu_seconds(shadowed.pid), cpu_seconds(baseline.pid)
        began = time.monotonic()
        sent, base_sent = await asyncio.gather(send_traffic(client, cids), send_traffic(base_client, cids))
        assert sent == base_sent
        for obs, what in ((live, "live verdicts"), (reference, "baseline verdicts")):
            await obs.wait_for(lambda o=obs: set(by_key(o.verdicts)) >= sent, within_s=60, what=what)
        try:
            await live.wait_for(lambda: set(by_key(shadow_reader.verdicts)) >= sent, within_s=30)
        except AssertionError:
            raise AssertionError(
                f"shadow verdicts missing; the worker's shadow counters: {scrape(metrics_port)}"
            ) from None
        took = time.monotonic() - began
        cpu_after = cpu_seconds(shadowed.pid), cpu_seconds(baseline.pid)
        counters = scrape(metrics_port)
        await asyncio.sleep(0.5)  # anything published late (a stray control) has time to arrive

    live_verdicts, shadow_verdicts = by_key(live.verdicts), by_key(shadow_reader.verdicts)
    # A shadow verdict for every live prompt and chunk, nothing dropped or skipped.
    assert set(live_verdicts) == set(shadow_verdicts) == sent
    assert counters.get("queued") == len(sent) and not counters.get("dropped") and not counters.get("skipped")
    for k, s in shadow_verdicts.items():
        assert s.event_id == shadow_verdict_id(live_verdicts[k].event_id)
        assert s.tier.startswith(SHADOW_TIER_PREFIX) and s.policy == "strict"
    assert all(v.policy == "loose" and not v.tier.startswith(SHADOW_TIER_PREFIX) for v in live_verdicts.values())

    # The control topic holds the live guard's cut-offs only, and the DLQ nothing.
    live_cut = {cids["unsafe_answer"], cids["unsafe_prompt"]}
    assert sorted(c.conversation_id for c in live.controls) == sorted(live_cut)
    assert {c.event_id for c in live.controls} == {ids.control_id(c, "m1") for c in live_cut}
    assert not live.dead
    # ... while the shadow (strict) would also have cut both GREYZONE conversations.
    shadow_cut = {v.conversation_id for v in shadow_verdicts.values() if v.action is Action.CUTOFF}
    assert shadow_cut == live_cut | {cids["grey_answer"], cids["grey_prompt"]}
    grey = [v for k, v in live_verdicts.items() if k[0] == cids["grey_answer"]]
    assert any(v.action is Action.FLAG for v in grey) and not any(v.action is Action.CUTOFF for v in grey)

    # The live verdicts are those of the same traffic on a worker without a shadow.
    reference_verdicts = by_key(reference.verdicts)
    assert set(reference_verdicts) == sent
    assert {k: judgement(v) for k, v in live_verdicts.items()} == {
        k: judgement(v) for k, v in reference_verdicts.items()
    }

    # `shadow compare` reports what the observed events say.
    env = {
        **os.environ,
        **settings_env({"kafka.bootstrap_servers": kafka_bootstrap, "kafka.topic_prefix": prefix}),
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "workers", "shadow", "compare", "--json", "--idle-s", "2"),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()
    report = orjson.loads(stdout)
    pairs = [(live_verdicts[k], shadow_verdicts[k]) for k in sent]
    judged = [(a, b) for a, b in pairs if a.status is b.status is VerdictStatus.MODERATED]
    assert report["coverage"] == 1.0 and report["joined"] == len(sent)
    assert report["live_unmatched"] == report["shadow_unmatched"] == 0
    assert report["compared"] == len(judged)
    assert report["action_agreement"] == sum(a.action is b.action for a, b in judged) / len(judged)
    assert report["risk_agreement"] == sum(a.risk is b.risk for a, b in judged) / len(judged)
    flagged_by_live = sum(a.action is Action.FLAG and b.action is Action.CUTOFF for a, b in judged)
    assert flagged_by_live > 0 and report["action_confusion"]["flag"]["cutoff"] == flagged_by_live
    cuts = report["cut_summary"]
    assert (cuts["both"], cuts["live_only"], cuts["shadow_only"], cuts["same_position"]) == (2, 0, 2, 2)
    where = {c["conversation_id"]: c["where"] for c in report["cuts"]}
    assert where == {
        cids["unsafe_answer"]: "both",
        cids["unsafe_prompt"]: "both",
        cids["grey_answer"]: "shadow_only",
        cids["grey_prompt"]: "shadow_only",
    }

    print(
        json.dumps(
            {
                "events": len(sent),
                "traffic_s": round(took, 2),
                "cpu_s_with_shadow": round(cpu_after[0] - cpu_before[0], 2),
                "cpu_s_baseline": round(cpu_after[1] - cpu_before[1], 2),
                "live_latency_ms": report["live"]["latency"],
                "shadow_latency_ms": report["shadow"]["latency"],
                "shadow_extra_latency_ms": report["extra_latency"],
                "baseline_latency_p50_ms": sorted(v.latency_ms for v in reference_verdicts.values())[len(sent) // 2],
            }
        )
    )
