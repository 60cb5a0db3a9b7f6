"""``streamwarden shadow compare``: the live guard's verdicts against the shadow guard's.

streamwarden shadow compare [--since-ms MS | --last-s S] [--until-ms MS] [--idle-s 3] [--count N] [--json]

Reads ``<prefix>.verdicts`` and ``<prefix>.shadow.verdicts`` (``kafka.topic_prefix``) from the
beginning, or the window given, until ``--idle-s`` pass without a record or ``--count`` records
are read, and reports coverage, agreement, cut-offs and latency (``workers.shadow.report``).
Exit status: 0 with a report, 1 when no live verdict was read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING

from topics.names import Topic
from workers.settings import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    shadow = subparsers.add_parser("shadow", help="the shadow guard: compare its verdicts with the live guard's")
    actions = shadow.add_subparsers(dest="shadow_action", required=True, metavar="ACTION")
    compare = actions.add_parser(
        "compare", help="join live and shadow verdicts: coverage, agreement, cut-offs and latency"
    )
    since = compare.add_mutually_exclusive_group()
    since.add_argument("--since-ms", type=int, help="read records from this Kafka timestamp (ms since the epoch) on")
    since.add_argument("--last-s", type=float, help="read the records of the last S seconds")
    compare.add_argument("--until-ms", type=int, help="leave out records from this Kafka timestamp on")
    compare.add_argument("--idle-s", type=float, default=3.0, help="stop after this long without a record (3)")
    compare.add_argument("--count", type=int, help="stop after this many records of both topics together")
    compare.add_argument("--json", action="store_true", help="machine-readable output")
    compare.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    from workers.shadow.read import ReadWindow, read_verdicts
    from workers.shadow.render import print_report, report_json
    from workers.shadow.report import build_report

    since_ms = args.since_ms if args.last_s is None else int((time.time() - args.last_s) * 1000)
    window = ReadWindow(since_ms=since_ms, until_ms=args.until_ms, idle_s=args.idle_s, max_records=args.count)
    k = settings.kafka
    read = asyncio.run(read_verdicts(k.bootstrap_servers, k.topic_prefix, window))
    report = build_report(read.live, read.shadow)
    if args.json:
        sys.stdout.buffer.write(report_json(report))
        sys.stdout.buffer.flush()
    else:
        print_report(report)
    if read.undecodable:
        sys.stderr.write(f"{read.undecodable} records were not verdicts and were left out\n")
    if not read.live:
        sys.stderr.write(f"no live verdicts read from {Topic.VERDICTS.full_name(k.topic_prefix)}\n")
        return 1
    return 0
