"""How far the worker has read each input partition, in the records' own time.

A chunk parked ahead of a missing ``seq`` waits up to ``worker.reorder_wait_s`` for it, and one
that came before its prompt waits up to ``worker.prompt_wait_s``. Measured on the worker's clock
alone, a backlog eats into that wait: a worker seconds behind on a partition would give up on a
chunk whose predecessor is already in the log, unread behind it. So a wait is measured on the log
as well. A parked event expires once the worker has waited it out *and*, for every partition that
would bring what it waits for, either

- the worker has read that partition up to the event's own timestamp plus the wait (anything
  published within the wait would have been read by now), or
- the worker has read nothing of that partition for the wait (nothing more is coming: the
  producer stopped, or the worker is caught up).

A missing ``seq`` comes on the chunk's own topic-partition; a prompt on the same partition of the
other input topic (the topics are co-partitioned by conversation id). Record timestamps are the
producers' (Kafka CreateTime), so a producer's clock skew shifts its records' log time by as much;
a record without a timestamp waits on the worker's clock only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from workers.moderation.delivery import Delivery


@dataclass(slots=True)
class _Read:
    newest: float | None  # the newest record timestamp read (seconds since the epoch)
    at: float  # when the last record was read, on the worker's monotonic clock


class LogClock:
    """Per topic-partition: the newest record time read, and when a record was last read."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._read: dict[tuple[str, int], _Read] = {}

    def observe(self, delivery: Delivery) -> None:
        """Note a record the worker has read (before it is decoded: dead letters count too)."""
        key = (delivery.topic, delivery.partition)
        read = self._read.get(key)
        newest = delivery.produced
        if read is not None and read.newest is not None and (newest is None or read.newest > newest):
            newest = read.newest
        self._read[key] = _Read(newest, self._now())

    def waited(self, delivery: Delivery, wait_s: float, *, other_topics: bool) -> bool:
        """Whether the log has moved ``wait_s`` past ``delivery`` (see the module docstring) on its
        own topic-partition, or (``other_topics``) on the same partition of the other topics."""
        if delivery.produced is None:
            return True
        deadline, now = delivery.produced + wait_s, self._now()
        for (topic, partition), read in self._read.items():
            if partition != delivery.partition or (topic != delivery.topic) is not other_topics:
                continue
            quiet = now - read.at >= wait_s
            if not quiet and (read.newest is None or read.newest < deadline):
                return False
        return True
