"""Core commands: ``worker`` and ``config``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workers.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = subparsers.add_parser("config", help="show the effective configuration (secrets masked)")
    config.set_defaults(handler=_config_show)
    register_worker(subparsers)
    demo = subparsers.add_parser("demo", help="run the live demo on a local Kafka and Redis")
    demo.add_argument("--words-per-second", type=float, default=12.0, help="streaming speed of the fake LLM")
    demo.add_argument("--run-dir", type=Path, default=Path(".streamwarden/demo"), help="logs and data")
    demo.set_defaults(handler=_demo)
    archive = subparsers.add_parser(
        "archive", help="archive verdicts and cut-offs to Parquet, each record exactly once (a compliance consumer)"
    )
    archive.add_argument("--out", type=Path, required=True, help="directory of the Parquet datasets")
    archive.add_argument("--group-id", default="streamwarden-archive", help="consumer group of the archivers")
    archive.add_argument("--flush-every", type=int, default=10_000, help="rows per file, at most")
    archive.add_argument(
        "--flush-seconds", type=float, default=30.0, help="longest wait before a partition's records are written"
    )
    archive.add_argument("--stop-after", type=int, default=None, help="exit after archiving this many rows")
    archive.set_defaults(handler=_archive)


def _config_show(args: argparse.Namespace, settings: Settings) -> int:
    json.dump(settings.redacted(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def register_worker(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = subparsers.add_parser("worker", help="run a guard worker (joins the consumer group)")
    worker.add_argument("--ready-file", type=Path, help="written once loaded and assigned its partitions")
    worker.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker import run_worker

    return run_worker(settings, ready_file=args.ready_file)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rich.console import Console

    from workers.demo.run import run_demo
    from workers.infra.rundir import RunDirectory, RunDirectoryInUse
    from workers.logs import log_to_file

    console = Console()
    try:
        owned = RunDirectory(args.run_dir)
        owned.acquire()
    except RunDirectoryInUse as exc:
        console.print(f"[bold red]streamwarden demo:[/] {exc}")
        return 2
    log_path = log_to_file(args.run_dir / "demo.log")
    try:
        return asyncio.run(run_demo(settings, words_per_s=args.words_per_second, run_dir=args.run_dir, console=console))
    finally:
        owned.release()
        console.print(f"[dim]logs: {log_path} and the worker's beside it in {args.run_dir}[/]")


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from workers.archive import archive

    if args.flush_every < 1:
        sys.stderr.write("streamwarden archive: --flush-every must be at least 1\n")
        return 2
    done = asyncio.run(
        archive(
            settings.kafka.bootstrap_servers,
            settings.kafka.topic_prefix,
            args.out,
            group_id=args.group_id,
            flush_every=args.flush_every,
            flush_s=args.flush_seconds,
            stop_after=args.stop_after,
            session_timeout_s=settings.kafka.session_timeout_s,
            heartbeat_interval_s=settings.kafka.heartbeat_interval_s,
        )
    )
    sys.stdout.write(
        f"archived {done.verdicts} verdicts, {done.cutoffs} cut-offs and {done.undecodable} undecodable records"
        f" in {done.files} files to {args.out} ({done.duplicates} re-emitted duplicates dropped)\n"
    )
    return 0
