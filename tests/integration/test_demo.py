"""The demo end to end, as a user runs it: real Kafka, Redis, a worker with the shipped default guard.

Fails if any prompt or streamed chunk lacks its verdict (the demo's own exit code says so), if a
library log line reaches the terminal, or if the summary is missing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from workers.demo.conversations import SCRIPTS

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_demo_gives_every_prompt_and_chunk_a_verdict(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("STREAMWARDEN_GUARD__CHECKPOINT", None)  # what a fresh install runs
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "demo",
        "--words-per-second",
        "20",
        "--run-dir",
        str(tmp_path / "demo"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 600)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "pipeline problem" not in text
    assert "summary (policy: loose)" in text
    for script in SCRIPTS:
        assert script.name in text
    assert "verdicts trailed their chunks by" in text
    # Library logs went to the run directory's log file, not the terminal.
    assert "aiokafka" not in text and "INFO" not in text
    assert (tmp_path / "demo" / "demo.log").is_file()
    assert "logs: " in text
