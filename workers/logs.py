"""Where log records go: the terminal (stderr) by default, a file for commands with a live view.

The demo and the pipeline benchmarks draw a live view on the terminal; library log lines (aiokafka's
group joins, transformers' warnings) would tear it apart, so those commands send every record to a
file in their run directory instead and name it at the end (``log_to_file``).
"""

from __future__ import annotations

import logging
from pathlib import Path

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Log at ``level`` to stderr through rich (stdout is for command output: ``infra up`` prints
    shell exports)."""
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)],
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
