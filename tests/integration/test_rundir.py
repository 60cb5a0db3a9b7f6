"""One run per run directory; a run after a killed one stops its leftovers and starts clean."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from workers.infra import LocalKafka
from workers.infra.rundir import LOCK_NAME, RunDirectory, RunDirectoryInUse

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

HOLDER = """
import sys, time
from pathlib import Path
from workers.infra.rundir import RunDirectory
with RunDirectory(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_live_run_over_the_directory_fails_with_the_owner(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "run")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryInUse, match=rf"in use by another run \(pid {holder.pid}"):
            RunDirectory(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing anything: the kernel dropped its lock.
    with RunDirectory(tmp_path / "run") as owned:
        assert (owned.path / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_leftovers_of_a_dead_run_are_stopped(tmp_path: Path) -> None:
    run = (tmp_path / "run").resolve()
    run.mkdir()
    # A process of the project's shape that names the directory (as a worker's ready file does).
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "workers", str(run / "w.ready")])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(run)])
    try:
        with RunDirectory(run):
            leftover.wait(timeout=10)  # killed (and reaped by the cleanup's wait, so no exit status here)
            assert stranger.poll() is None  # not the project's: left alone
    finally:
        for proc in (leftover, stranger):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not psutil.pid_exists(leftover.pid) or psutil.Process(leftover.pid).status() == psutil.STATUS_ZOMBIE


async def test_kafka_starts_over_the_data_of_a_killed_run(tmp_path: Path) -> None:
    kafka = LocalKafka(nodes=1, run_dir=tmp_path / "kafka")
    await kafka.start()
    node = kafka.node(1)
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGKILL)  # the run dies; its KRaft data stays behind
    await asyncio.sleep(0.5)
    assert (node.layout.data_dir / "meta.properties").is_file()
    again = LocalKafka(nodes=1, run_dir=tmp_path / "kafka", attempts=1)
    await again.start()  # a new cluster id over the old data: no "Invalid cluster.id"
    try:
        assert again.cluster_id != kafka.cluster_id
    finally:
        await again.stop()
        await kafka.stop()
