"""Topic specifications: partitions, retention, keys and the event each topic carries.

Prompts and tokens must have the same partition count (they are co-partitioned by
``conversation_id`` so that one worker owns a conversation's prompt and its answer);
``check_copartitioned`` enforces it wherever specs are built from configuration. The shadow
verdicts topic is created with the others, so a shadow guard can be switched on without a topic step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from topics import events as ev
from topics.names import DEFAULT_PREFIX, Topic

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """How one topic is created and what flows through it."""

    topic: Topic
    partitions: int
    replication: int = 1
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: str = "delete"
    key: str = "conversation_id"
    value_type: type[ev.Event]

    def name(self, prefix: str = DEFAULT_PREFIX) -> str:
        return self.topic.full_name(prefix)

    def configs(self) -> dict[str, str]:
        """Topic-level Kafka configs for the admin client."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


TOPIC_SPECS: Mapping[Topic, TopicSpec] = {
    Topic.PROMPTS: TopicSpec(topic=Topic.PROMPTS, partitions=8, value_type=ev.PromptEvent),
    Topic.TOKENS: TopicSpec(topic=Topic.TOKENS, partitions=8, value_type=ev.TokenChunkEvent),
    Topic.VERDICTS: TopicSpec(topic=Topic.VERDICTS, partitions=8, retention_ms=30 * DAY_MS, value_type=ev.VerdictEvent),
    Topic.CONTROL: TopicSpec(topic=Topic.CONTROL, partitions=8, retention_ms=DAY_MS, value_type=ev.ControlEvent),
    Topic.DEAD_LETTER: TopicSpec(
        topic=Topic.DEAD_LETTER, partitions=1, retention_ms=30 * DAY_MS, value_type=ev.DeadLetter
    ),
    Topic.SHADOW_VERDICTS: TopicSpec(topic=Topic.SHADOW_VERDICTS, partitions=8, value_type=ev.VerdictEvent),
}


def build_specs(
    *, partitions: int | None = None, replication: int | None = None, dlq_partitions: int | None = None
) -> dict[Topic, TopicSpec]:
    """The default specs with partition/replication overrides applied to every data topic."""
    specs: dict[Topic, TopicSpec] = {}
    for topic, spec in TOPIC_SPECS.items():
        n = dlq_partitions if topic is Topic.DEAD_LETTER else partitions
        specs[topic] = replace(
            spec,
            partitions=n if n is not None else spec.partitions,
            replication=replication if replication is not None else spec.replication,
        )
    check_copartitioned(specs)
    return specs


def check_copartitioned(specs: Mapping[Topic, TopicSpec]) -> None:
    """Raise ValueError unless prompts and tokens have the same partition count."""
    p, t = specs[Topic.PROMPTS].partitions, specs[Topic.TOKENS].partitions
    if p != t:
        raise ValueError(f"prompts ({p}) and tokens ({t}) must have the same number of partitions")
