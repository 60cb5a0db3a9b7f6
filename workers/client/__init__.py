"""Client helpers for the two sides around the guard: LLM producers and verdict consumers.

``GuardClient`` is what an LLM platform embeds: it publishes a conversation's prompt and answer
chunks and stops the generation the moment the guard cuts it off. ``VerdictConsumer`` is what a
compliance consumer uses to read verdicts exactly once per id.
"""

from workers.client.consumer import VerdictConsumer
from workers.client.producer import GuardClient, GuardedStream

__all__ = ["GuardClient", "GuardedStream", "VerdictConsumer"]
