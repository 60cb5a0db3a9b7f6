"""Core commands: ``worker``, ``config show``, ``topics create``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys

from workers.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = subparsers.add_parser("config", help="show the effective configuration (secrets masked)")
    config.set_defaults(handler=_config_show)


def _config_show(args: argparse.Namespace, settings: Settings) -> int:
    json.dump(settings.redacted(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
