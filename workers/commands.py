"""Core commands: ``worker``, ``config``, ``demo``, ``archive`` and ``audit``."""

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
    archive.add_argument(
        "--text",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="archive the prompts and response chunks too (what `audit` shows and re-judges); "
        "--no-text keeps verdicts and cut-offs only",
    )
    archive.set_defaults(handler=_archive)
    register_audit(subparsers)


def register_audit(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser(
        "audit", help="what was decided for each message of an archived conversation, and why (--replay: re-judge it)"
    )
    audit.add_argument("conversation_id", metavar="CONVERSATION_ID")
    audit.add_argument("--archive", type=Path, default=Path("archive"), help="the `archive` command's --out directory")
    audit.add_argument("--json", action="store_true", help="print a JSON document (for tools) instead of tables")
    audit.add_argument(
        "--replay",
        metavar="CHECKPOINT",
        help="re-judge the conversation with the configured guard backend over CHECKPOINT (a directory, a cached "
        "Hugging Face id, 'default') and show where the verdicts differ",
    )
    audit.add_argument(
        "--policy", choices=("strict", "loose"), help="with --replay: judge every message under this policy"
    )
    audit.add_argument(
        "--tokenizer",
        metavar="CHECKPOINT",
        help="the checkpoint whose tokenizer gives flagged tokens their text (default: the --replay checkpoint's)",
    )
    audit.set_defaults(handler=_audit)


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
            with_text=args.text,
            session_timeout_s=settings.kafka.session_timeout_s,
            heartbeat_interval_s=settings.kafka.heartbeat_interval_s,
        )
    )
    sys.stdout.write(
        f"archived {done.verdicts} verdicts, {done.cutoffs} cut-offs, {done.prompts} prompts, {done.chunks} chunks"
        f" and {done.undecodable} undecodable records in {done.files} files to {args.out}"
        f" ({done.duplicates} re-emitted duplicates dropped)\n"
    )
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rich.console import Console

    from workers.audit import ConversationNotArchived, NothingToReplay, audit
    from workers.audit.document import to_json
    from workers.audit.render import render
    from workers.engine.debounce import Policy

    if args.policy is not None and args.replay is None:
        sys.stderr.write("streamwarden audit: --policy applies to a --replay\n")
        return 2
    try:
        found = asyncio.run(
            audit(
                args.archive,
                args.conversation_id,
                settings,
                replay_checkpoint=args.replay,
                policy=None if args.policy is None else Policy(args.policy),
                tokenizer=args.tokenizer,
            )
        )
    except (ConversationNotArchived, NothingToReplay) as exc:
        sys.stderr.write(f"streamwarden audit: {exc}\n")
        return 1
    if args.json:
        sys.stdout.buffer.write(to_json(found))
        sys.stdout.flush()
    else:
        render(found, Console())
    return 0
