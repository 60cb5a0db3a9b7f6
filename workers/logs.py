"""Where log records go: the terminal (stderr) by default, a file for commands with a live view.

The demo and the pipeline benchmarks draw a live view on the terminal; library log lines (aiokafka's
group joins, transformers' warnings) would tear it apart, so those commands send every record to a
file in their run directory instead and name it at the end (``log_to_file``).

With ``log_format: json`` each record is one JSON object on stderr, for log shippers: ``ts``,
``level``, ``logger``, ``message``, ``exc_info`` when there is one, and the coordinates a record
carries (``Delivery.log_extra``): ``conversation_id``, ``message_id``, ``kafka_topic``,
``kafka_partition``, ``kafka_offset``. Text lines do not show the coordinates; their message names
the record instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("asctime", "levelname", "name", "message")


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log at ``level`` to stderr, through rich or as JSON lines (stdout is for command output:
    ``infra up`` prints shell exports)."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(json_formatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def json_formatter() -> logging.Formatter:
    """One JSON object per record; the ``extra`` a call passes become top-level keys."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        JSON_FIELDS,
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def log_to_file(path: Path) -> Path:
    """Send every log record to ``path`` (appended) instead of the terminal; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(handler)
    logging.captureWarnings(True)
    return path
