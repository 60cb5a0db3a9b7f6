"""Starting guard workers as child processes (the demo, the benchmarks and the tests use this).

A worker is always a separate process running ``python -m workers worker``, configured only through
``STREAMWARDEN_*`` variables, exactly as in production. ``start`` returns once the worker has loaded
its model and joined the consumer group (it writes its ready file), or raises with its log's tail.
The worker dies with the process that started it (``dies_with_parent``), and its ready file is its
own: named after this process and a fresh token, so no other worker, of this run or an earlier
one, can make it look ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from workers.infra.processes import dies_with_parent

REPO_ROOT = Path(__file__).resolve().parent.parent


def settings_env(overrides: Mapping[str, object]) -> dict[str, str]:
    """Map dotted settings keys to variables: ``kafka.group_id`` -> ``STREAMWARDEN_KAFKA__GROUP_ID``."""
    env = {}
    for dotted, value in overrides.items():
        name = "STREAMWARDEN_" + "__".join(part.upper() for part in dotted.split("."))
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class WorkerProcess:
    """One ``streamwarden worker`` child process with its own log file."""

    def __init__(self, name: str, run_dir: Path, overrides: Mapping[str, object]) -> None:
        self.name = name
        self.run_dir = run_dir
        self.log_path = run_dir / f"{name}.log"
        self.ready_path = run_dir / f"{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.ready"
        self._env = {**os.environ, **settings_env(overrides), "PYTHONUNBUFFERED": "1"}
        self._proc: asyncio.subprocess.Process | None = None

    def announcement(self) -> dict[str, str]:
        """What the worker wrote when it became ready: its ``worker_id`` and ``model_id``."""
        data: dict[str, str] = json.loads(self.ready_path.read_text(encoding="utf-8"))
        return data

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, *, timeout_s: float = 180.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *dies_with_parent([sys.executable, "-m", "workers", "worker", "--ready-file", str(self.ready_path)]),
                cwd=REPO_ROOT,
                env=self._env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not self.ready_path.exists():
            if self._proc.returncode is not None:
                raise RuntimeError(f"worker {self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise TimeoutError(f"worker {self.name} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    async def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            self.ready_path.unlink(missing_ok=True)
            return proc.returncode if proc else None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                return await proc.wait()
        except TimeoutError:
            self.kill()
            return await proc.wait()
        finally:
            self.ready_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def __aenter__(self) -> WorkerProcess:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
