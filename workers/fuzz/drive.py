"""Driving a plan through the real topics against a running worker, then checking the outcome.

Order of a run: the observer starts reading the output topics; the openings are published and
their prompt verdicts awaited; the interleaved records are published (at ``rate`` records/s, or as
fast as the broker takes them) while the worker's RSS is sampled; then the driver waits until
every expected output has arrived (or nothing more arrives for ``quiet_s``), waits ``linger_s``
more for anything unexpected, and runs the checks (``workers.fuzz.checks``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from workers.fuzz import checks
from workers.fuzz.checks import Bounds, Report, Sent
from workers.fuzz.observe import Observed, Observer
from workers.fuzz.plan import Plan
from workers.fuzz.records import Record
from workers.fuzz.rss import RssSampler, rss_kib
from workers.state.redis_store import RedisStore

logger = logging.getLogger(__name__)

SEND_BATCH = 256
"""Records queued before their acknowledgements are awaited together."""


@dataclass(frozen=True, slots=True)
class Target:
    """A running worker and the services it uses."""

    bootstrap: str
    prefix: str
    redis_url: str
    redis_namespace: str
    worker_pid: int
    worker_log: Path | None = None


@dataclass(frozen=True, slots=True)
class Pace:
    rate: float | None = None  # records/s; None: as fast as the broker acknowledges
    quiet_s: float = 30.0  # give up waiting once nothing has arrived for this long
    linger_s: float = 3.0  # after everything arrived, how long to watch for extra outputs
    openings_s: float = 60.0  # how long the openings' prompt verdicts may take


async def run(target: Target, plan: Plan, *, bounds: Bounds | None = None, pace: Pace | None = None) -> Report:
    """Publish ``plan`` to ``target``'s input topics and check everything that comes back."""
    bounds, pace = bounds or Bounds(), pace or Pace()
    began = time.monotonic()
    log_start = target.worker_log.stat().st_size if target.worker_log and target.worker_log.exists() else 0
    async with (
        Observer(target.bootstrap, target.prefix) as observer,
        RssSampler(target.worker_pid) as rss,
        _producer(target.bootstrap) as producer,
    ):
        sent = list(await _publish(producer, target.prefix, plan.openings, None))
        await _await_openings(plan, observer.seen, pace.openings_s)
        published = time.monotonic()
        sent += await _publish(producer, target.prefix, plan.order, pace.rate)
        last_sent = time.monotonic()
        publish_s = last_sent - published
        logger.info("published %d records in %.1f s; waiting for the outputs", len(sent), publish_s)
        await _settle(plan, sent, observer.seen, pace, since=last_sent)
        seen = observer.seen
    report = Report(
        seed=plan.seed,
        records_by_strategy=dict(plan.records_by_strategy().most_common()),
        hostile_records=plan.hostile_records(),
        good_conversations=sum(1 for s in plan.scripts if s.good),
        good_verdicts_checked=sum(len(s.verdicts) for s in plan.scripts if s.good),
        dead_letters_by_reason=checks.dead_letters_by_reason(seen),
        verdicts_by_status=checks.verdicts_by_status(seen),
        cutoffs=sum(len({c.event_id for c in cs}) for cs in seen.controls.values()),
        start_rss_mib=rss.first_mib,
        max_rss_mib=rss.max_mib,
        rss_bound_mib=rss.first_mib + bounds.rss_growth_mib,
        publish_s=publish_s,
        duration_s=time.monotonic() - began,
        catch_up_s=_catch_up(plan, seen, last_sent),
        longest_log_tokens=0,
    )
    found = [
        ("dead letters", checks.check_dead_letters(sent, seen)),
        ("verdicts", checks.check_scripts(plan, seen)),
        ("state", await _check_logs(target, plan, report)),
        ("worker", _check_worker(target, rss, report, bounds, log_start)),
    ]
    if seen.undecodable:
        found.append(("outputs", [f"{seen.undecodable} output records do not decode"]))
    report.failures = checks.summarise(found)
    return report


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # Oversized records must reach the worker to be refused there: the producer's own bound is
    # set above the worker's (the broker's default bound, 1 MiB, stays the ceiling).
    return AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20, linger_ms=2, acks=1)


async def _publish(
    producer: AIOKafkaProducer, prefix: str, records: Sequence[Record], rate: float | None
) -> list[Sent]:
    sent: list[Sent] = []
    start = time.monotonic()
    for i in range(0, len(records), SEND_BATCH):
        batch = records[i : i + SEND_BATCH]
        futures = [await producer.send(r.topic.full_name(prefix), r.value, key=r.key) for r in batch]
        for record, meta in zip(batch, await asyncio.gather(*futures), strict=True):
            sent.append(Sent(record, meta.topic, meta.partition, meta.offset))
        if rate:
            await asyncio.sleep(max(0.0, start + len(sent) / rate - time.monotonic()))
    return sent


async def _await_openings(plan: Plan, seen: Observed, within_s: float) -> None:
    wanted = [(s.conversation_id, s.opening) for s in plan.scripts if s.opening]
    deadline = time.monotonic() + within_s

    def missing() -> int:
        return sum(1 for cid, _ in wanted if not any(v.seq is None for v in seen.verdicts.get(cid, ())))

    # The condition is computed from what the observer read: polled, there is no event to wait on.
    while missing() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    if missing():
        logger.warning("%d opening prompts still unanswered after %.0f s", missing(), within_s)


async def _settle(plan: Plan, sent: Sequence[Sent], seen: Observed, pace: Pace, *, since: float) -> None:
    while checks.pending(plan, sent, seen):
        quiet = time.monotonic() - max(seen.last_arrival, since)
        if quiet > pace.quiet_s:
            logger.warning(
                "no output for %.0f s with %d expected outputs missing", quiet, checks.pending(plan, sent, seen)
            )
            return
        await asyncio.sleep(0.2)
    await asyncio.sleep(pace.linger_s)


def _catch_up(plan: Plan, seen: Observed, last_sent: float) -> float:
    good = [v.event_id for s in plan.scripts if s.good for v in seen.verdicts.get(s.conversation_id, ())]
    arrivals = [seen.arrived[i] for i in good if i in seen.arrived]
    return max(0.0, max(arrivals, default=last_sent) - last_sent)


async def _check_logs(target: Target, plan: Plan, report: Report) -> list[str]:
    failures = []
    store = RedisStore(target.redis_url, namespace=target.redis_namespace, ttl_s=3600)
    try:
        for script in plan.scripts:
            if script.max_log_tokens is None:
                continue
            state = await store.load(script.conversation_id)
            if state is None:
                failures.append(f"{script.kind} {script.conversation_id}: no state in the store")
                continue
            report.longest_log_tokens = max(report.longest_log_tokens, state.log_len)
            if state.log_len > script.max_log_tokens:
                failures.append(
                    f"{script.kind} {script.conversation_id}: token log of {state.log_len} ids, "
                    f"bound {script.max_log_tokens}"
                )
    finally:
        await store.aclose()
    return failures


def _check_worker(target: Target, rss: RssSampler, report: Report, bounds: Bounds, log_start: int) -> list[str]:
    failures = []
    if rss.gone or rss_kib(target.worker_pid) is None:
        failures.append(f"the worker (pid {target.worker_pid}) is not running")
    if report.max_rss_mib > report.rss_bound_mib:
        failures.append(f"worker RSS reached {report.max_rss_mib:.0f} MiB, bound {report.rss_bound_mib:.0f} MiB")
    if report.catch_up_s > bounds.catch_up_s:
        failures.append(
            f"the last good verdict came {report.catch_up_s:.1f} s after the last record (bound {bounds.catch_up_s} s)"
        )
    if target.worker_log is not None and target.worker_log.exists():
        with target.worker_log.open("rb") as log:
            log.seek(log_start)
            tracebacks = log.read().count(b"Traceback (most recent call last)")
        if tracebacks:
            failures.append(f"the worker logged {tracebacks} tracebacks (see {target.worker_log})")
    return failures
