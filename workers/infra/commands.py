"""Commands ``streamwarden infra up|down|status|fetch|bench`` and ``streamwarden topics create``.

``infra up`` starts a local Kafka KRaft cluster (broker jars fetched from Maven Central once) and a
``redis-server`` on free 127.0.0.1 ports, creates the streamwarden topics and prints the
``STREAMWARDEN_*`` variables to use, also written to ``.streamwarden/infra.env``. The servers keep
running after the command exits, until ``infra down``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from workers.infra.errors import InfraError
from workers.infra.maven import DEFAULT_KAFKA_VERSION, fetch_kafka_libs, kafka_home
from workers.infra.stack import UpRequest, down, inspect, up
from workers.infra.state import (
    DEFAULT_ENV_FILE,
    DEFAULT_RUN_DIR,
    TopicsState,
    environment,
    export_lines,
    write_env_file,
)
from workers.infra.topics import ensure_topics
from workers.settings import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    infra = subparsers.add_parser("infra", help="local Kafka (KRaft) and Redis for development, without Docker")
    actions = infra.add_subparsers(dest="infra_action", required=True, metavar="ACTION")
    _register_up(actions)
    down_p = actions.add_parser("down", help="stop the local servers and delete their data")
    _add_paths(down_p)
    down_p.set_defaults(handler=_down)
    status_p = actions.add_parser("status", help="report each local server process and whether it answers")
    _add_paths(status_p)
    status_p.add_argument("--json", action="store_true", help="machine-readable output")
    status_p.set_defaults(handler=_status)
    fetch_p = actions.add_parser("fetch", help="fetch the Kafka broker jars from Maven Central (once)")
    _add_jar_options(fetch_p)
    fetch_p.set_defaults(handler=_fetch)
    bench_p = actions.add_parser("bench", help="measure broker and Redis start times and broker memory")
    _add_jar_options(bench_p)
    bench_p.add_argument("--repeat", type=int, default=3, help="starts per measured configuration")
    bench_p.set_defaults(handler=_bench)

    topics = subparsers.add_parser("topics", help="Kafka topics of streamwarden")
    topic_actions = topics.add_subparsers(dest="topics_action", required=True, metavar="ACTION")
    create = topic_actions.add_parser("create", help="create the topics (idempotent; a shape mismatch fails)")
    create.add_argument("--bootstrap", help="bootstrap servers (default: kafka.bootstrap_servers)")
    _add_topic_options(create)
    create.add_argument("--dlq-partitions", type=int, help="partitions of the dead-letter topic (default 1)")
    create.set_defaults(handler=_topics_create)


def _register_up(actions: _Subparsers) -> None:
    up_p = actions.add_parser("up", help="start Kafka and Redis (or report that they run) and create the topics")
    up_p.add_argument("--brokers", type=_positive, default=1, metavar="N", help="KRaft nodes (3 for fault tests)")
    _add_topic_options(up_p)
    up_p.add_argument("--no-topics", action="store_true", help="do not create the streamwarden topics")
    _add_paths(up_p)
    _add_jar_options(up_p)
    up_p.set_defaults(handler=_up)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="pids, configs, data and logs")
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE, help="where the exports are written")


def _add_jar_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka-version", default=DEFAULT_KAFKA_VERSION, help="Apache Kafka 4.x release")
    parser.add_argument("--cache-dir", type=Path, help="jar cache (default ~/.cache/streamwarden)")


def _add_topic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", help="topic name prefix (default: kafka.topic_prefix)")
    parser.add_argument("--partitions", type=int, help="partitions per data topic (default: kafka.partitions)")
    parser.add_argument("--replication", type=int, help="replication factor (default: kafka.replication)")


def _fail(action: str, exc: Exception) -> int:
    sys.stderr.write(f"streamwarden {action}: {exc}\n")
    return 1


def _up(args: argparse.Namespace, settings: Settings) -> int:
    topics: TopicsState | None = None
    if not args.no_topics:
        replication = args.replication if args.replication is not None else settings.kafka.replication
        if replication > args.brokers:
            return _fail("infra up", InfraError(f"replication {replication} needs at least {replication} brokers"))
        topics = TopicsState(
            prefix=args.prefix if args.prefix is not None else settings.kafka.topic_prefix,
            partitions=args.partitions if args.partitions is not None else settings.kafka.partitions,
            replication=replication,
        )
    request = UpRequest(
        run_dir=args.run_dir.resolve(),
        brokers=args.brokers,
        topics=topics,
        kafka_version=args.kafka_version,
        cache_root=args.cache_dir,
    )
    try:
        result = asyncio.run(up(request))
    except InfraError as exc:
        return _fail("infra up", exc)
    env = environment(result.state)
    write_env_file(args.env_file, env)
    verb = "already running" if result.already_running else "started"
    sys.stderr.write(
        f"local stack {verb}: Kafka {result.state['kafka']['bootstrap_servers']}, "
        f"Redis {result.state['redis']['url']}\n"
    )
    if result.topics is not None:
        sys.stderr.write(f"topics: {len(result.topics.created)} created, {len(result.topics.existing)} already there\n")
    sys.stderr.write(f"to use it: source {args.env_file}\n")
    sys.stdout.write("\n".join(export_lines(env)) + "\n")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    try:
        stopped = asyncio.run(down(args.run_dir.resolve()))
    except InfraError as exc:
        return _fail("infra down", exc)
    args.env_file.unlink(missing_ok=True)
    sys.stdout.write(f"stopped: {', '.join(stopped)}\n" if stopped else "nothing was running\n")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    try:
        status = asyncio.run(inspect(args.run_dir.resolve()))
    except InfraError as exc:
        return _fail("infra status", exc)
    if args.json:
        doc = {
            "running": status.state is not None,
            "healthy": status.healthy,
            "processes": [{"name": p.name, "pid": p.pid, "alive": p.alive} for p in status.processes],
            "brokers_listed": status.brokers_listed,
            "kafka_error": status.kafka_error,
            "redis_ok": status.redis_ok,
            "environment": environment(status.state) if status.state is not None else {},
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0 if status.healthy or status.state is None else 1
    console = Console()
    if status.state is None:
        console.print(f"nothing runs from {args.run_dir}")
        return 0
    table = Table("process", "pid", "state")
    for proc in status.processes:
        table.add_row(proc.name, str(proc.pid), "[green]running" if proc.alive else "[red]gone")
    console.print(table)
    console.print(f"Kafka {status.state['kafka']['bootstrap_servers']}: brokers listed {status.brokers_listed}")
    if status.kafka_error:
        console.print(f"[red]Kafka does not answer: {status.kafka_error}")
    console.print(f"Redis {status.state['redis']['url']}: {'answers' if status.redis_ok else '[red]no answer'}")
    console.print("healthy" if status.healthy else "[red]not healthy")
    return 0 if status.healthy else 1


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    try:
        libs = fetch_kafka_libs(args.kafka_version, args.cache_dir)
    except InfraError as exc:
        return _fail("infra fetch", exc)
    sys.stdout.write(f"Kafka {libs.version} jars in {libs.libs_dir} ({kafka_home(libs.version, args.cache_dir)})\n")
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from workers.infra.bench import run_bench

    try:
        asyncio.run(run_bench(args.kafka_version, args.cache_dir, args.repeat, Console()))
    except InfraError as exc:
        return _fail("infra bench", exc)
    return 0


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    target: Settings | str = args.bootstrap if args.bootstrap else settings
    try:
        ensured = asyncio.run(
            ensure_topics(
                target,
                prefix=args.prefix if args.prefix is not None else settings.kafka.topic_prefix,
                partitions=args.partitions if args.partitions is not None else settings.kafka.partitions,
                replication=args.replication if args.replication is not None else settings.kafka.replication,
                dlq_partitions=args.dlq_partitions,
            )
        )
    except InfraError as exc:
        return _fail("topics create", exc)
    for name in ensured.names.values():
        sys.stdout.write(f"{name}: {'created' if name in ensured.created else 'exists'}\n")
    return 0
