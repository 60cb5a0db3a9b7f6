"""``streamwarden infra bench``: start times of the local servers and the memory of one broker.

Each start is timed from the call to ready (admin API lists every broker; Redis answers ``PING``),
storage formatting included. The baseline is a broker run with the JVM options of Kafka's own
launch scripts, measured in the same run, interleaved with the fast-start options.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from workers.infra.kafka import LocalKafka
from workers.infra.kafka_node import FAST_START_JVM_OPTIONS, KAFKA_DEFAULT_JVM_OPTIONS
from workers.infra.maven import fetch_kafka_libs, kafka_home
from workers.infra.redis_server import LocalRedis
from workers.infra.topics import ensure_topics


async def _kafka_start_s(
    version: str, cache_root: Path | None, nodes: int, jvm_options: Sequence[str]
) -> tuple[float, dict[int, int]]:
    started = time.monotonic()
    async with LocalKafka(nodes, version=version, cache_root=cache_root, jvm_options=jvm_options) as kafka:
        elapsed = time.monotonic() - started
        # Memory once the broker does real work: the streamwarden topics exist (8 partitions each).
        await ensure_topics(kafka.bootstrap_servers, partitions=8, replication=min(nodes, 3))
        rss = kafka.rss_bytes()
    return elapsed, rss


async def _redis_start_s() -> float:
    started = time.monotonic()
    async with LocalRedis():
        return time.monotonic() - started


async def run_bench(version: str, cache_root: Path | None, repeat: int, console: Console) -> None:
    """Measure and print: jar fetch (as recorded), 1-node start (fast vs Kafka's JVM options),
    3-node start, Redis start, broker RSS."""
    libs = fetch_kafka_libs(version, cache_root)
    record = json.loads((kafka_home(version, cache_root) / "complete.json").read_text(encoding="utf-8"))
    jar_mib = sum(record["jars"].values()) / 2**20
    console.print(
        f"Kafka {version}: {len(record['jars'])} jars, {jar_mib:.1f} MiB in {libs.libs_dir}; "
        f"first fetch took {record['seconds']} s"
    )
    fast: list[float] = []
    default: list[float] = []
    rss: list[int] = []
    for _ in range(repeat):
        seconds, _ = await _kafka_start_s(version, cache_root, 1, KAFKA_DEFAULT_JVM_OPTIONS)
        default.append(seconds)
        seconds, node_rss = await _kafka_start_s(version, cache_root, 1, FAST_START_JVM_OPTIONS)
        fast.append(seconds)
        rss.extend(node_rss.values())
    three, three_rss = await _kafka_start_s(version, cache_root, 3, FAST_START_JVM_OPTIONS)
    redis = [await _redis_start_s() for _ in range(repeat)]

    baseline = statistics.median(default)
    table = Table("measurement", "median", "runs", "vs baseline")
    table.add_row("1-node start, Kafka's JVM options (baseline)", f"{baseline:.2f} s", str(repeat), "1.00x")
    table.add_row(
        "1-node start, fast-start JVM options",
        f"{statistics.median(fast):.2f} s",
        str(repeat),
        f"{statistics.median(fast) / baseline:.2f}x",
    )
    table.add_row("3-node start, fast-start JVM options", f"{three:.2f} s", "1", f"{three / baseline:.2f}x")
    table.add_row(
        "Redis start",
        f"{statistics.median(redis) * 1000:.0f} ms",
        str(repeat),
        f"{statistics.median(redis) / baseline:.3f}x",
    )
    table.add_row(
        "broker RSS, 1 node (fast-start, topics created)",
        f"{statistics.median(rss) / 2**20:.0f} MiB",
        str(len(rss)),
        "",
    )
    table.add_row(
        "broker RSS, 3-node cluster (per node)",
        f"{statistics.median(three_rss.values()) / 2**20:.0f} MiB",
        str(len(three_rss)),
        "",
    )
    console.print(table)
