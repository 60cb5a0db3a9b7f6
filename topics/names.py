"""Topic names: the only place they are spelled.

Names are ``<prefix>.<suffix>``; the prefix (default ``guard``) comes from configuration so that
several deployments can share one cluster.
"""

from __future__ import annotations

from enum import StrEnum

DEFAULT_PREFIX = "guard"


class Topic(StrEnum):
    """The logical topics; the value is the name's suffix."""

    PROMPTS = "prompts"
    TOKENS = "tokens"
    VERDICTS = "verdicts"
    CONTROL = "control"
    DEAD_LETTER = "dlq"
    SHADOW_VERDICTS = "shadow.verdicts"
    """Verdicts of a shadow guard (``shadow`` settings): judged on the same traffic, acted on by no one."""

    def full_name(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The Kafka topic name under ``prefix``."""
        return f"{prefix}.{self.value}" if prefix else self.value
