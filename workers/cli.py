"""The ``streamwarden`` command line.

Each command group lives next to what it drives and registers itself here through a
``register(subparsers)`` function; handlers receive ``(args, settings)`` and return an exit code.
Settings are built exactly once, here. Heavy modules (torch, faust) are imported by the handlers,
so ``streamwarden --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Callable, Sequence

from workers.logs import configure_logging
from workers.settings import ConfigError, Settings, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]

# Modules exposing ``register(subparsers)``; each adds its own subcommands.
COMMAND_MODULES: tuple[str, ...] = (
    "workers.commands",
    "workers.infra.commands",
    "workers.engine.commands",
    "workers.bench.commands",
    "workers.guards.commands",  # after workers.bench.commands: it adds `prefilter` to that `bench` group
    "workers.shadow.commands",
    "workers.fuzz.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamwarden", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=None, help="override the configured log level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def exit_on_sigterm() -> None:
    """Make SIGTERM exit like Ctrl-C: the servers and workers a command started are stopped.

    By default SIGTERM ends the interpreter on the spot, so no ``async with`` block exits and no
    ``atexit`` hook runs: a benchmark or a demo stopped by ``kill`` would leave its Kafka broker,
    Redis and workers running (they run in their own sessions). ``streamwarden worker`` replaces
    this with faust's own graceful shutdown.
    """

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def main(argv: Sequence[str] | None = None) -> int:
    exit_on_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"streamwarden: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or settings.log_level, settings.log_format)
    handler: Handler = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
