"""``LocalRedis``: Debian's ``redis-server`` on a free 127.0.0.1 port, without persistence.

::

    async with LocalRedis() as redis:
        ...  # redis.url == "redis://127.0.0.1:<port>/0"

Ready means a ``PING`` through redis-py answered. With ``password`` the server requires AUTH
(``requirepass``, written to a config file readable by its owner only, never on the command line);
``url`` then carries the password for clients, and ``address`` is what may be logged.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TypedDict
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.infra.errors import InfraError, StartupError
from workers.infra.ports import LOOPBACK, free_port
from workers.infra.processes import ManagedProcess, tail
from workers.infra.programs import require_program

logger = logging.getLogger(__name__)

_READY_POLL_S = 0.05


class RedisState(TypedDict):
    url: str
    port: int
    run_dir: str
    pid: int | None


class LocalRedis:
    """A private ``redis-server``: no snapshots, no AOF, bound to 127.0.0.1.

    Args:
        run_dir: directory for its log and pid file; a temporary one (removed on ``stop``) if None.
        start_timeout_s: how long one start attempt may take until ``PING`` answers.
        attempts: start attempts (each on a fresh free port) before ``start`` gives up.
        maxmemory_mb: memory cap (0: none); keys are never evicted, writes fail when it is reached.
        outlive: keep the server running after this interpreter exits (``streamwarden infra up``);
            otherwise a server left running is killed at exit.
        password: require AUTH with this password (None: no authentication).
    """

    def __init__(
        self,
        *,
        run_dir: Path | None = None,
        start_timeout_s: float = 20.0,
        attempts: int = 3,
        maxmemory_mb: int = 0,
        outlive: bool = False,
        password: str | None = None,
    ) -> None:
        if password is not None and (not password or any(c.isspace() or c == '"' for c in password)):
            raise ValueError("a Redis password must be non-empty, without spaces or double quotes")
        self.password = password
        self.start_timeout_s = start_timeout_s
        self.attempts = attempts
        self.maxmemory_mb = maxmemory_mb
        self.outlive = outlive
        self.port = 0
        self.process: ManagedProcess | None = None
        self.startup_s: float | None = None
        self._run_dir = run_dir.resolve() if run_dir is not None else None  # children run elsewhere
        self._owns_run_dir = run_dir is None

    async def __aenter__(self) -> LocalRedis:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def run_dir(self) -> Path:
        """The directory holding the server's log and pid file (created on first use)."""
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="streamwarden-redis-"))
        return self._run_dir

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``, with ``:<password>@`` before the host when AUTH is on."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    @property
    def address(self) -> str:
        """``url`` without the password: what logs and state files show."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "redis.pid"

    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    async def restart(self, *, down_s: float = 0.0, keep_data: bool = True, crash: bool = True) -> None:
        """Stop the server (SIGKILL as a crash would, or SIGTERM, which lets it finish its
        append-only file), wait ``down_s``, and start it again on the same port.

        With ``keep_data`` it replays its append-only file (up to the last second is lost after a
        crash); without, it starts empty (a failover to an empty replica).
        """
        port = self.port
        if self.process is not None:
            await (self.process.kill() if crash else self.process.stop())
        if not keep_data:
            shutil.rmtree(self.run_dir / "appendonlydir", ignore_errors=True)
            (self.run_dir / "dump.rdb").unlink(missing_ok=True)
        await asyncio.sleep(down_s)
        await self.start(port=port)

    async def start(self, *, port: int | None = None) -> None:
        """Start the server (on ``port``, else a free one) and wait for ``PING``.

        Raises:
            MissingProgram: ``redis-server`` is not installed (the message names the apt package).
            StartupError: no attempt answered ``PING``; the message has the server log's tail.
        """
        if self.running():
            raise InfraError("this LocalRedis is already started")
        binary = require_program("redis-server")
        started = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        failures: list[str] = []
        for attempt in range(1, self.attempts + 1):
            self.port = port or free_port()
            self.process = ManagedProcess.spawn(
                "redis-server",
                self._argv(binary),
                marker=str(self.run_dir),
                log_path=self.run_dir / "redis.out",
                outlive=self.outlive,
            )
            self.pid_path.write_text(f"{self.process.pid}\n", encoding="ascii")
            try:
                await self.wait_ready(self.start_timeout_s)
            except StartupError as exc:
                failures.append(f"attempt {attempt} (port {self.port}): {exc}")
                await self.process.kill()
                continue
            except BaseException:
                # Cancelled or interrupted mid-start: the caller gets no handle to stop the server.
                await self.process.kill()
                raise
            self.startup_s = time.monotonic() - started
            logger.info("Redis ready in %.2f s at %s", self.startup_s, self.address)
            return
        raise StartupError("redis-server did not start:\n" + "\n".join(failures))

    def _argv(self, binary: str) -> list[str]:
        argv = [binary]
        if self.password is not None:
            config = self.run_dir / "auth.conf"
            config.touch(mode=0o600)
            config.chmod(0o600)
            config.write_text(f'requirepass "{self.password}"\n', encoding="utf-8")
            argv.append(str(config))  # a config file first: the password stays out of `ps`
        argv += ["--port", str(self.port), "--bind", LOOPBACK, "--protected-mode", "yes"]
        # Conversation state must survive a restart (a worker resumes turns from it): an append-only
        # file fsynced every second (at most the last second is lost on a crash), and a full
        # memory refuses writes rather than evicting live conversations.
        argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"]
        argv += ["--maxmemory-policy", "noeviction"]
        # Keep the original command line visible: it carries the run directory that identifies the
        # process to a later `streamwarden infra down` (Redis rewrites its title by default).
        argv += ["--set-proc-title", "no"]
        argv += ["--dir", str(self.run_dir), "--logfile", str(self.run_dir / "redis.log")]
        if self.maxmemory_mb:
            argv += ["--maxmemory", f"{self.maxmemory_mb}mb"]
        return argv

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until ``PING`` answers.

        Raises:
            StartupError: the server exited or did not answer in ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        client = aioredis.Redis(
            host=LOOPBACK, port=self.port, password=self.password, socket_connect_timeout=1.0, socket_timeout=1.0
        )
        try:
            while True:
                if not self.running():
                    raise StartupError(f"redis-server exited while starting:\n{self.log_tail()}")
                try:
                    if await client.ping():
                        return
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    pass
                if time.monotonic() >= deadline:
                    raise StartupError(f"redis-server did not answer PING in {timeout_s:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(_READY_POLL_S)
        finally:
            await client.aclose()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log and console output, for error messages."""
        parts = [tail(self.run_dir / name, lines) for name in ("redis.log", "redis.out")]
        return "\n".join(p for p in parts if p) or "(redis-server wrote no log)"

    async def stop(self, *, remove_data: bool | None = None, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``).

        Args:
            remove_data: delete the run directory; default: only if it was a temporary one.
        """
        if self.process is not None:
            await self.process.stop(timeout_s)
        self.pid_path.unlink(missing_ok=True)
        if remove_data if remove_data is not None else self._owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            if self._owns_run_dir:
                self._run_dir = None

    def describe(self) -> RedisState:
        """Everything ``from_state`` needs to find this server again from another process (never the password)."""
        return {
            "url": self.address,
            "port": self.port,
            "run_dir": str(self.run_dir),
            "pid": self.process.pid if self.process is not None else None,
        }

    @classmethod
    def from_state(cls, state: RedisState) -> LocalRedis:
        """A handle on a server started by another process (``streamwarden infra up``)."""
        server = cls(run_dir=Path(state["run_dir"]))
        server.port = state["port"]
        if state["pid"] is not None:
            server.process = ManagedProcess.adopt(
                "redis-server",
                state["pid"],
                marker=str(server.run_dir),
                log_path=server.run_dir / "redis.out",
            )
        return server
