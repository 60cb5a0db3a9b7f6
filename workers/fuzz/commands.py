"""``streamwarden fuzz``: hostile input at volume against a guard worker on a local Kafka and Redis.

Starts a single-node Kafka, a Redis and one worker (planted tiny model, the integration tests'
bounds) under ``--run-dir``, publishes ``--events`` hostile records interleaved with good
conversations, and checks every outcome (``workers.fuzz.checks``). Prints the report, writes it
as JSON with ``--report``, and exits 1 when a check failed. The CI-sized run is
``tests/integration/test_fuzz.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workers.settings import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: _Subparsers) -> None:
    fuzz = subparsers.add_parser("fuzz", help="hostile input at volume against a worker on a local Kafka and Redis")
    fuzz.add_argument("--events", type=int, default=200_000, help="hostile records (good conversations come on top)")
    fuzz.add_argument("--seed", type=int, default=0, help="fixes every record of the run")
    fuzz.add_argument("--good", type=int, default=None, help="good conversations (default: one per 50 events)")
    fuzz.add_argument("--long-tokens", type=int, default=5_000_000, help="token ids of the one very long answer")
    fuzz.add_argument("--rate", type=float, default=None, help="records/s to publish at (default: as fast as possible)")
    fuzz.add_argument("--rss-growth-mib", type=float, default=256.0, help="allowed worker RSS growth")
    fuzz.add_argument("--catch-up-s", type=float, default=30.0, help="allowed delay of the last good verdict")
    fuzz.add_argument("--partitions", type=int, default=4)
    fuzz.add_argument("--run-dir", type=Path, default=Path(".streamwarden/fuzz"))
    fuzz.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    fuzz.set_defaults(handler=_fuzz)


def _fuzz(args: argparse.Namespace, settings: Settings) -> int:
    from workers.fuzz.checks import Bounds
    from workers.fuzz.drive import Pace
    from workers.fuzz.plan import PlanConfig
    from workers.fuzz.stack import fuzz_stack
    from workers.infra.rundir import RunDirectory

    config = PlanConfig(seed=args.seed, events=args.events, good=args.good, long_tokens=args.long_tokens)
    bounds = Bounds(rss_growth_mib=args.rss_growth_mib, catch_up_s=args.catch_up_s)
    with RunDirectory(args.run_dir):
        report, log = asyncio.run(
            fuzz_stack(
                config, run_dir=args.run_dir, bounds=bounds, pace=Pace(rate=args.rate), partitions=args.partitions
            )
        )
    data = dataclasses.asdict(report)
    text = json.dumps(data, indent=2)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    verdict = f"{len(report.failures)} failures" if report.failures else "passed"
    sys.stderr.write(f"fuzz: {verdict} (seed {args.seed}); worker log: {log}\n")
    return 1 if report.failures else 0
