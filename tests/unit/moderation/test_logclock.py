"""The log clock: a wait is over once the log has moved past it, or nothing more is being read."""

from __future__ import annotations

from workers.moderation.delivery import Delivery
from workers.moderation.logclock import LogClock


class Now:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def record(produced: float | None, *, topic: str = "tokens", partition: int = 0) -> Delivery:
    return Delivery(topic, partition, 0, b"c", b"{}", 0.0, produced=produced)


def parked_clock() -> tuple[Now, LogClock, Delivery]:
    """A clock on a fake monotonic time that has read one record, the parked one (at 1,000 s)."""
    now = Now()
    clock = LogClock(now)
    parked = record(1_000.0)
    clock.observe(parked)
    return now, clock, parked


def test_a_busy_partition_that_has_not_read_past_the_wait_holds_it() -> None:
    now, clock, parked = parked_clock()
    for i in range(30):  # a backlog: records keep coming, all published within the wait
        now.t += 0.1
        clock.observe(record(1_000.0 + i * 0.01))
        assert not clock.waited(parked, 1.0, other_topics=False)
    clock.observe(record(1_001.5))  # the log has now moved a whole wait past it
    assert clock.waited(parked, 1.0, other_topics=False)


def test_a_quiet_partition_releases_the_wait() -> None:
    now, clock, parked = parked_clock()
    now.t += 0.5
    assert not clock.waited(parked, 1.0, other_topics=False)
    now.t += 0.6  # nothing read for longer than the wait: nothing more is coming
    assert clock.waited(parked, 1.0, other_topics=False)


def test_only_the_partitions_that_bring_the_missing_record_count() -> None:
    now, clock, parked = parked_clock()
    clock.observe(record(1_000.1, partition=1))
    clock.observe(record(1_000.1, topic="prompts"))
    now.t += 0.5
    # A missing seq comes on the chunk's own topic-partition: other topics and partitions are ignored.
    clock.observe(record(1_002.0, partition=1))
    clock.observe(record(1_002.0, topic="prompts", partition=1))
    assert not clock.waited(parked, 1.0, other_topics=False)
    # A prompt comes on the same partition of the other topic, which has not moved past the wait.
    assert not clock.waited(parked, 1.0, other_topics=True)
    clock.observe(record(1_002.0, topic="prompts"))
    assert clock.waited(parked, 1.0, other_topics=True)


def test_records_without_timestamps_wait_on_the_worker_clock_only() -> None:
    clock = LogClock(Now())
    parked = record(None)
    clock.observe(parked)
    assert clock.waited(parked, 1.0, other_topics=False)
    # An untimed record read later neither sets nor rewinds the log time.
    clock.observe(record(1_000.0))
    clock.observe(record(None))
    assert not clock.waited(record(1_000.0), 1.0, other_topics=False)
