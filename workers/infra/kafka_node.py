"""One local Kafka node (combined broker and controller): its files, its JVM and its process."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from workers.infra.errors import NotRunning, StartupError
from workers.infra.kraft import SCRAM_MECHANISM, NodeLayout, server_properties
from workers.infra.processes import ManagedProcess, tail

logger = logging.getLogger(__name__)

# JVM options that start a broker fastest on a small machine: C1 only (no C2 warm-up competing with
# startup for the two cores), the serial collector (no GC threads) and the JDK's class-data archive.
FAST_START_JVM_OPTIONS: tuple[str, ...] = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto")
# What Kafka's own kafka-run-class.sh uses; better for long throughput runs, slower to start.
KAFKA_DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
)
_TOOL_JVM_OPTIONS: tuple[str, ...] = ("-Xmx256m", *FAST_START_JVM_OPTIONS)


class KafkaNode:
    """A node's layout plus the process running it (if any).

    The node's directory holds ``server.properties``, ``data/`` (the log dirs, KRaft metadata
    included), ``logs/`` (``server.log`` from log4j2, ``kafka.out`` for the JVM's own output) and
    ``kafka.pid`` while it runs.
    """

    def __init__(self, layout: NodeLayout, process: ManagedProcess | None = None) -> None:
        self.layout = layout
        self.process = process
        self.paused = False

    @property
    def node_id(self) -> int:
        return self.layout.node_id

    @property
    def pid_path(self) -> Path:
        return self.layout.home / "kafka.pid"

    def running(self) -> bool:
        """Whether the node's JVM is alive (paused counts as alive)."""
        return self.process is not None and self.process.alive()

    def write_config(self, cluster: Sequence[NodeLayout], scram_user: tuple[str, str] | None = None) -> None:
        """Write ``server.properties`` for this node's place in ``cluster`` (owner-only: it may hold a password)."""
        self.layout.home.mkdir(parents=True, exist_ok=True)
        self.layout.logs_dir.mkdir(exist_ok=True)
        self.layout.config_path.touch(mode=0o600)
        self.layout.config_path.chmod(0o600)
        self.layout.config_path.write_text(server_properties(self.layout, cluster, scram_user), encoding="utf-8")

    async def format(
        self,
        java: str,
        classpath: str,
        cluster_id: str,
        tools_log_config: Path,
        scram_user: tuple[str, str] | None = None,
    ) -> None:
        """Format the node's storage for ``cluster_id`` (one short JVM run of ``kafka.tools.StorageTool``).

        With ``scram_user`` (name, password) the metadata starts with that user's SCRAM credential.
        Data left in the node's directory by an earlier run (one that was killed before it could
        clean up) belongs to another cluster id, which Kafka refuses to start on: it is removed
        first, so every start is a fresh cluster.

        Raises:
            StartupError: the tool failed; the message holds its output.
        """
        if self.layout.data_dir.exists():
            logger.info("removing Kafka node %s data of an earlier run in %s", self.node_id, self.layout.data_dir)
            shutil.rmtree(self.layout.data_dir)
        argv = [
            java,
            *_TOOL_JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={tools_log_config}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.layout.config_path),
        ]
        if scram_user is not None:
            name, password = scram_user
            argv += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            text = output.decode("utf-8", "replace").strip()
            raise StartupError(f"formatting Kafka node {self.node_id} failed (exit {proc.returncode}):\n{text}")

    def spawn(
        self,
        java: str,
        classpath: str,
        log_config: Path,
        jvm_options: Sequence[str],
        *,
        outlive: bool = False,
    ) -> None:
        """Start the node's JVM (``kafka.Kafka server.properties``) in its own session.

        Args:
            outlive: keep it running after this interpreter exits (see ``ManagedProcess.spawn``).
        """
        argv = [
            java,
            *jvm_options,
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.layout.logs_dir}",
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.layout.config_path),
        ]
        self.process = ManagedProcess.spawn(
            f"kafka node {self.node_id}",
            argv,
            marker=str(self.layout.home),
            log_path=self.layout.logs_dir / "kafka.out",
            outlive=outlive,
        )
        self.paused = False
        self.pid_path.write_text(f"{self.process.pid}\n", encoding="ascii")

    def require_process(self) -> ManagedProcess:
        """The node's process if it is running.

        Raises:
            NotRunning: the node is not running.
        """
        if self.process is None or not self.process.alive():
            raise NotRunning(f"Kafka node {self.node_id} is not running")
        return self.process

    async def stop(self, timeout_s: float) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL after ``timeout_s``) and remove the pid file."""
        if self.process is not None:
            await self.process.stop(timeout_s)
        self.paused = False
        self.pid_path.unlink(missing_ok=True)

    async def kill(self) -> None:
        """SIGKILL the JVM (a crash: no controlled shutdown) and remove the pid file."""
        await self.require_process().kill()
        self.paused = False
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the node's broker log and JVM output, for error messages."""
        parts = []
        for path in (self.layout.logs_dir / "server.log", self.layout.logs_dir / "kafka.out"):
            text = tail(path, lines)
            if text:
                parts.append(f"--- {path} (last {lines} lines) ---\n{text}")
        return "\n".join(parts) or f"(node {self.node_id} wrote no log in {self.layout.logs_dir})"
