"""Detached processes: liveness (marker-checked), pause/resume, SIGTERM-then-SIGKILL, adoption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from workers.infra.processes import ManagedProcess, tail

_IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
)


def _sleeper(tmp_path: Path) -> ManagedProcess:
    return ManagedProcess.spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)],
        marker=str(tmp_path),
        log_path=tmp_path / "out.log",
    )


async def test_spawned_process_leads_its_own_session_and_stops(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    assert proc.alive()
    assert os.getsid(proc.pid) == proc.pid
    try:
        proc.pause()
        # The signal is delivered asynchronously.
        for _ in range(100):
            if psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED:
                break
            await proc.wait_exit(0.01)
        assert psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
        assert proc.alive()
    finally:
        proc.resume()
        await proc.stop(timeout_s=5)
    assert not proc.alive()


async def test_a_paused_process_still_stops(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    proc.pause()
    await proc.stop(timeout_s=5)
    assert not proc.alive()


async def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    proc = ManagedProcess.spawn(
        "stubborn", [sys.executable, "-c", _IGNORE_TERM, str(tmp_path)], marker=str(tmp_path), log_path=log
    )
    for _ in range(200):
        if "up" in tail(log):
            break
        await proc.wait_exit(0.05)
    await proc.stop(timeout_s=0.5)
    assert not proc.alive()


async def test_adopted_process_is_recognised_by_its_marker(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    try:
        assert ManagedProcess.adopt("same", proc.pid, marker=str(tmp_path), log_path=proc.log_path).alive()
        recycled = ManagedProcess.adopt("recycled pid", proc.pid, marker="/elsewhere", log_path=proc.log_path)
        assert not recycled.alive()
        assert not recycled.send(signal.SIGTERM)
        assert proc.alive()
    finally:
        await proc.stop(timeout_s=5)


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    assert tail(tmp_path / "missing.log") == ""
    (tmp_path / "a.log").write_text("\n".join(str(i) for i in range(100)))
    assert tail(tmp_path / "a.log", 3) == "97\n98\n99"


_SPAWN_AND_EXIT = """
import sys
from pathlib import Path
from workers.infra.processes import ManagedProcess
marker, outlive = sys.argv[1], sys.argv[2] == "1"
argv = [sys.executable, "-c", "import time; time.sleep(60)", marker]
proc = ManagedProcess.spawn("child", argv, marker=marker, log_path=Path(marker) / "child.log", outlive=outlive)
print(proc.pid)
"""


REPO = Path(__file__).resolve().parents[3]


def _spawn_from_another_interpreter(tmp_path: Path, outlive: bool) -> ManagedProcess:
    script = [sys.executable, "-c", _SPAWN_AND_EXIT, str(tmp_path), "1" if outlive else "0"]
    done = subprocess.run(script, cwd=REPO, capture_output=True, text=True, check=True, timeout=30)
    return ManagedProcess.adopt("child", int(done.stdout), marker=str(tmp_path), log_path=tmp_path / "child.log")


async def test_bound_processes_die_with_their_interpreter(tmp_path: Path) -> None:
    child = _spawn_from_another_interpreter(tmp_path, outlive=False)
    assert await child.wait_exit(5)


async def test_outliving_processes_keep_running(tmp_path: Path) -> None:
    child = _spawn_from_another_interpreter(tmp_path, outlive=True)
    try:
        assert child.alive()
    finally:
        await child.stop(timeout_s=5)
    assert not child.alive()
