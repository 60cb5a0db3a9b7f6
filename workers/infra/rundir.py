"""One run at a time per run directory, and a clean start after a run that was killed.

The demo and the benchmarks keep their brokers, Redis and worker files under a run directory.
``RunDirectory`` takes an exclusive ``flock`` on ``<run dir>/run.lock`` (the kernel drops it when
its holder dies, however it dies) and writes the owner's pid into it:

- a second live run over the same directory fails at once with ``RunDirectoryInUse``, naming the
  owner's pid and command line, instead of sharing its files;
- a run that finds the lock free but the directory used by a dead owner stops whatever is still
  running from it (any process whose command line names the directory: brokers, Redis, workers,
  which normally die with their starter already) before it starts its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from workers.infra.errors import InfraError

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


class RunDirectoryInUse(InfraError):
    """Another live run owns the run directory."""


class RunDirectory:
    """``with RunDirectory(path):`` owns ``path`` for the duration of the block."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._lock: IO[str] | None = None

    def __enter__(self) -> RunDirectory:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the directory, or raise ``RunDirectoryInUse`` if a live run holds it.

        Leftovers of a dead owner are stopped first (``stop_leftovers``).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = (self.path / LOCK_NAME).open("a+", encoding="utf-8")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise RunDirectoryInUse(
                f"run directory {self.path} is in use by another run (pid {owner}: {_command(owner)}); "
                "wait for it to finish, stop it, or choose another --run-dir"
            ) from None
        stopped = stop_leftovers(self.path)
        if stopped:
            logger.warning("stopped %s process(es) left running in %s by a run that died", stopped, self.path)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _command(pid: str) -> str:
    try:
        return " ".join(psutil.Process(int(pid)).cmdline()[:4]) or "?"
    except (ValueError, psutil.Error):
        return "?"


def stop_leftovers(path: Path) -> int:
    """SIGKILL the project's processes (Kafka's JVMs, redis-server, streamwarden workers) whose
    command line names ``path``, except this one; returns how many."""
    marker = str(path.resolve())
    victims = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            argv = proc.info["cmdline"] or []
            ours = proc.info["name"] in ("java", "redis-server") or "workers" in argv
            if ours and any(marker in arg for arg in argv):
                proc.kill()
                victims.append(proc)
    psutil.wait_procs(victims, timeout=5)
    return len(victims)
