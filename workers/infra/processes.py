"""Server processes started by streamwarden: spawn detached, inspect, signal, stop.

A process is identified by its pid plus a *marker*, a string its command line must contain (the
run directory of its service). The marker keeps a recycled pid from ever being signalled: a pid
whose command line lacks the marker counts as gone.

A process that must not outlive its starter (every server of the demo, a benchmark or a test, and
every worker they start) is started through util-linux's ``setpriv --pdeathsig KILL``
(``dies_with_parent``): the kernel kills it the moment the process that started it dies, however
that one dies (SIGKILL, an OOM kill, a closed terminal), which no ``atexit`` hook can promise.
Servers of ``streamwarden infra up`` are meant to outlive the command and are stopped by
``infra down``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from workers.infra.errors import InfraError

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_TAIL_BYTES = 64 * 1024

# Processes that must not outlive this interpreter (see ``ManagedProcess.spawn(outlive=False)``).
_BOUND: set[ManagedProcess] = set()
_atexit_registered = False


def _kill_bound() -> None:
    """At interpreter exit, SIGKILL bound processes whose owner never stopped them (a crashed test run)."""
    for proc in list(_BOUND):
        if proc.alive():
            logger.warning("killing %s (pid %s) left running at exit", proc.name, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    _BOUND.clear()


class ManagedProcess:
    """A long-running server process, either spawned here or adopted from a state file.

    Spawned processes run in their own session, so a Ctrl-C in the terminal does not reach them
    directly; their owner stops them. Processes spawned with ``outlive=True`` keep running after the
    Python process that started them exits (``streamwarden infra up``); the others are killed at
    interpreter exit if their owner did not stop them.
    """

    def __init__(
        self,
        name: str,
        pid: int,
        *,
        marker: str,
        log_path: Path,
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.name = name
        self.pid = pid
        self.marker = marker
        self.log_path = log_path
        self._popen = popen

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        marker: str,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        outlive: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``.

        Args:
            outlive: keep the process running after this interpreter exits; otherwise the kernel
                kills it when this process dies (``dies_with_parent``).

        Raises:
            ValueError: ``marker`` does not occur in ``argv`` (the process could never be recognised).
        """
        if not any(marker in arg for arg in argv):
            raise ValueError(f"marker {marker!r} does not occur in the command line of {name}")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = list(argv) if outlive else dies_with_parent(argv)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        logger.debug("started %s (pid %s): %s", name, popen.pid, " ".join(argv))
        _wait_for_cmdline(popen.pid)
        proc = cls(name, popen.pid, marker=marker, log_path=log_path, popen=popen)
        if not outlive:
            _bind(proc)
        return proc

    @classmethod
    def adopt(cls, name: str, pid: int, *, marker: str, log_path: Path) -> ManagedProcess:
        """Refer to a process started earlier (by another ``streamwarden`` invocation)."""
        return cls(name, pid, marker=marker, log_path=log_path)

    def alive(self) -> bool:
        """Whether the process still runs (a paused process counts as running, a zombie does not)."""
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            return any(self.marker in arg for arg in proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def rss_bytes(self) -> int:
        """Resident set size of the process.

        Raises:
            psutil.NoSuchProcess: the process is gone.
        """
        return int(psutil.Process(self.pid).memory_info().rss)

    def send(self, sig: signal.Signals) -> bool:
        """Send ``sig`` if the process is alive; return whether it was sent."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
            return True
        return False

    async def wait_exit(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the process to exit; return whether it did."""
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)
        _BOUND.discard(self)
        return True

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if the process has not exited after ``timeout_s``."""
        if not self.send(signal.SIGTERM):
            return
        # A paused process would only see the SIGTERM once continued.
        self.send(signal.SIGCONT)
        if await self.wait_exit(timeout_s):
            return
        logger.warning("%s (pid %s) ignored SIGTERM for %.0f s; killing it", self.name, self.pid, timeout_s)
        await self.kill()

    async def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL and wait for the process to be gone.

        Raises:
            InfraError: it is still there after ``timeout_s`` (e.g. stuck in uninterruptible I/O).
        """
        self.send(signal.SIGKILL)
        if not await self.wait_exit(timeout_s):
            raise InfraError(f"{self.name} (pid {self.pid}) survived SIGKILL for {timeout_s} s")

    def pause(self) -> None:
        """SIGSTOP: the process stays alive but does nothing (it looks hung to its peers)."""
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        self.send(signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process's stdout/stderr log (empty if there is none)."""
        return tail(self.log_path, lines)


SETPRIV = "setpriv"
"""util-linux's ``setpriv`` (part of every Debian system): sets the death signal, then execs."""


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that the kernel SIGKILLs it when the process starting it dies.

    The death signal is tied to the thread that forks the child: start such processes from the
    main thread (the event loop's), as this package does, not from a worker thread.

    Raises:
        InfraError: not on Linux, or ``setpriv`` is missing (install util-linux).
    """
    if not sys.platform.startswith("linux"):
        raise InfraError("child processes are bound to their parent with Linux's PR_SET_PDEATHSIG; not on Linux")
    setpriv = shutil.which(SETPRIV)
    if setpriv is None:
        raise InfraError("setpriv (util-linux) is missing; install it with `apt-get install util-linux`")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def _wait_for_cmdline(pid: int, timeout_s: float = 2.0) -> None:
    """Popen returns while the kernel is still finishing the exec, when ``/proc/<pid>/cmdline`` reads
    as empty; wait (a few ms at most) until the command line, and so the marker, is visible."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        while not psutil.Process(pid).cmdline() and time.monotonic() < deadline:
            time.sleep(0.001)


def _bind(proc: ManagedProcess) -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_kill_bound)
        _atexit_registered = True
    _BOUND.add(proc)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or an empty string if it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
