"""``LocalKafka``: a real Apache Kafka KRaft cluster of 1..N combined nodes on 127.0.0.1.

::

    async with LocalKafka(nodes=1) as kafka:
        ...  # kafka.bootstrap_servers

The broker jars come from Maven Central (``workers.infra.maven``, fetched once). Each node is its own
JVM (``kafka.Kafka``). The cluster counts as ready when every running node is listed in the
cluster metadata returned through the admin API, not after a sleep. Cluster formation is retried
from scratch (new ports, new cluster id, wiped storage), since a quorum can fail to form in time
on a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TypedDict

from workers.infra.errors import InfraError, NotRunning, StartupError
from workers.infra.kafka_admin import RETRIABLE_ERRORS, broker_ids
from workers.infra.kafka_node import FAST_START_JVM_OPTIONS, KafkaNode
from workers.infra.kraft import SCRAM_MECHANISM, NodeLayout, new_cluster_id
from workers.infra.maven import DEFAULT_KAFKA_VERSION, KafkaLibs, fetch_kafka_libs
from workers.infra.ports import free_ports, port_open
from workers.infra.processes import ManagedProcess
from workers.infra.programs import require_program
from workers.kafka_auth import KafkaAuth

logger = logging.getLogger(__name__)

_LOG_CONFIG = "log4j2.properties"
_TOOLS_LOG_CONFIG = "log4j2-tools.properties"
_READY_POLL_S = 0.25


class NodeState(TypedDict):
    node_id: int
    port: int
    controller_port: int
    home: str
    pid: int | None


class KafkaState(TypedDict):
    version: str
    cluster_id: str
    run_dir: str
    bootstrap_servers: str
    nodes: list[NodeState]


class LocalKafka:
    """A local KRaft cluster; nodes are numbered 1..``nodes`` (their ``node.id``).

    Args:
        nodes: cluster size (1 for tests and the demo, 3 for fault tests).
        run_dir: directory for configs, data and logs; a temporary one (removed on ``stop``) if None.
        version: the Apache Kafka 4.x release to run.
        cache_root: the jar cache (see ``workers.infra.maven``).
        heap_mb: maximum JVM heap per node.
        jvm_options: JVM flags besides the heap (default ``FAST_START_JVM_OPTIONS``).
        start_timeout_s: how long one formation attempt may take until all nodes are ready.
        attempts: formation attempts before ``start`` gives up.
        outlive: keep the nodes running after this interpreter exits (``streamwarden infra up``);
            otherwise nodes left running are killed at exit.
        scram_user: (name, password): clients must authenticate with SASL/SCRAM-SHA-256 as that
            user (``auth`` gives them the settings); None: plaintext without authentication.
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        run_dir: Path | None = None,
        version: str = DEFAULT_KAFKA_VERSION,
        cache_root: Path | None = None,
        heap_mb: int = 512,
        jvm_options: Sequence[str] = FAST_START_JVM_OPTIONS,
        start_timeout_s: float | None = None,
        attempts: int = 3,
        outlive: bool = False,
        scram_user: tuple[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        self.size = nodes
        self.version = version
        self.cache_root = cache_root
        self.heap_mb = heap_mb
        self.jvm_options = tuple(jvm_options)
        self.start_timeout_s = start_timeout_s if start_timeout_s is not None else 60.0 + 30.0 * (nodes - 1)
        self.attempts = attempts
        self.outlive = outlive
        self.scram_user = scram_user
        self.cluster_id = ""
        self.startup_s: float | None = None
        self._run_dir = run_dir.resolve() if run_dir is not None else None  # children run elsewhere
        self._owns_run_dir = run_dir is None
        self._nodes: dict[int, KafkaNode] = {}
        self._libs: KafkaLibs | None = None
        self._java = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> LocalKafka:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Fetch the jars if needed, format and start every node, and wait until all are ready.

        Raises:
            StartupError: no attempt produced a ready cluster; the message has the nodes' log tails.
            FetchError, MissingProgram: the broker cannot run on this machine at all.
        """
        if self._nodes:
            raise InfraError("this LocalKafka is already started")
        started = time.monotonic()
        self._libs = await asyncio.to_thread(fetch_kafka_libs, self.version, self.cache_root)
        self._java = require_program("java")
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (_LOG_CONFIG, _TOOLS_LOG_CONFIG):
            (run_dir / name).write_bytes(resources.files("workers.infra").joinpath(name).read_bytes())
        failures: list[str] = []
        for attempt in range(1, self.attempts + 1):
            try:
                await self._start_attempt()
            except StartupError as exc:
                failures.append(f"attempt {attempt}: {exc}")
                logger.warning("Kafka cluster attempt %s/%s failed: %s", attempt, self.attempts, exc)
                await self._discard_nodes()
                continue
            except BaseException:
                # Cancelled or interrupted mid-start: the caller gets no handle to stop the nodes.
                await self._discard_nodes()
                raise
            self.startup_s = time.monotonic() - started
            logger.info(
                "Kafka %s ready in %.1f s: %s-node cluster at %s",
                self.version,
                self.startup_s,
                self.size,
                self.bootstrap_servers,
            )
            return
        if self._owns_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
            self._run_dir = None
        raise StartupError(
            f"Kafka ({self.size} node(s)) did not start in {self.attempts} attempts:\n" + "\n".join(failures)
        )

    async def stop(self, *, remove_data: bool | None = None, timeout_s: float = 20.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout_s``).

        Args:
            remove_data: delete the run directory; default: only if it was a temporary one.
        """
        await asyncio.gather(*(node.stop(timeout_s) for node in self._nodes.values()))
        if remove_data if remove_data is not None else self._owns_run_dir:
            if self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            if self._owns_run_dir:
                self._run_dir = None
        self._nodes.clear()

    async def _start_attempt(self) -> None:
        assert self._libs is not None
        ports = free_ports(2 * self.size)
        layouts = [
            NodeLayout(node_id=i, port=ports[2 * i - 2], controller_port=ports[2 * i - 1], home=self._home(i))
            for i in range(1, self.size + 1)
        ]
        self.cluster_id = new_cluster_id()
        self._nodes = {layout.node_id: KafkaNode(layout) for layout in layouts}
        for node in self._nodes.values():
            node.write_config(layouts, self.scram_user)
        tools_log = self.run_dir / _TOOLS_LOG_CONFIG
        await asyncio.gather(
            *(
                node.format(self._java, self._libs.classpath, self.cluster_id, tools_log, self.scram_user)
                for node in self._nodes.values()
            )
        )
        for node in self._nodes.values():
            self._spawn(node)
        await self.wait_ready(timeout_s=self.start_timeout_s)

    async def _discard_nodes(self) -> None:
        await asyncio.gather(*(node.process.kill() for node in self._nodes.values() if node.process is not None))
        for node in self._nodes.values():
            shutil.rmtree(node.layout.home, ignore_errors=True)
        self._nodes.clear()

    def _spawn(self, node: KafkaNode) -> None:
        if self._libs is None:
            raise InfraError("only the process that started a cluster can (re)start its nodes")
        heap = (f"-Xms{min(128, self.heap_mb)}m", f"-Xmx{self.heap_mb}m")
        options = (*heap, "-XX:+ExitOnOutOfMemoryError", *self.jvm_options)
        node.spawn(self._java, self._libs.classpath, self.run_dir / _LOG_CONFIG, options, outlive=self.outlive)

    def _home(self, node_id: int) -> Path:
        return self.run_dir / f"node-{node_id}"

    # -- inspection ----------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """The directory holding every node's files (created on first use)."""
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="streamwarden-kafka-"))
        return self._run_dir

    @property
    def auth(self) -> KafkaAuth:
        """How a client authenticates to this cluster (plaintext unless ``scram_user`` was given)."""
        if self.scram_user is None:
            return KafkaAuth()
        name, password = self.scram_user
        return KafkaAuth(protocol="SASL_PLAINTEXT", mechanism=SCRAM_MECHANISM, username=name, password=password)

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` of every node."""
        return ",".join(node.layout.bootstrap for node in self._nodes.values())

    @property
    def node_ids(self) -> list[int]:
        return sorted(self._nodes)

    def node(self, node_id: int) -> KafkaNode:
        """The node with ``node.id == node_id``.

        Raises:
            KeyError: no such node.
        """
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no Kafka node {node_id}; nodes are {self.node_ids}") from None

    def running_node_ids(self) -> set[int]:
        """Nodes whose JVM is alive and not paused."""
        return {i for i, node in self._nodes.items() if node.running() and not node.paused}

    def node_bootstrap(self, node_ids: set[int] | None = None) -> str:
        """Bootstrap servers restricted to ``node_ids`` (default: the running nodes)."""
        ids = sorted(node_ids if node_ids is not None else self.running_node_ids())
        return ",".join(self._nodes[i].layout.bootstrap for i in ids)

    def controller_id(self) -> int:
        """The node id of the active KRaft controller, as the running nodes' quorum state records it.

        Raises:
            NotRunning: no running node knows a leader yet.
        """
        best: tuple[int, int] | None = None
        for i in self.running_node_ids():
            path = self._nodes[i].layout.data_dir / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
            if leader >= 0 and (best is None or epoch > best[0]):
                best = (epoch, leader)
        if best is None:
            raise NotRunning("no running Kafka node knows the active controller")
        return best[1]

    async def wait_ready(self, node_ids: set[int] | None = None, timeout_s: float = 60.0) -> None:
        """Wait until every node in ``node_ids`` (default: the running ones) is in the cluster metadata.

        Raises:
            StartupError: a node exited, or the deadline passed; the message has the log tails.
            NotRunning: there is no node to wait for.
        """
        expected = set(node_ids) if node_ids is not None else self.running_node_ids()
        if not expected:
            raise NotRunning("no Kafka node is running")
        deadline = time.monotonic() + timeout_s
        seen: set[int] = set()
        last_error = "no answer yet"
        while True:
            for i in expected:
                if not self._nodes[i].running():
                    raise StartupError(f"Kafka node {i} exited while starting:\n{self._nodes[i].log_tail()}")
            bootstrap = self.node_bootstrap(expected)
            if await port_open(self._nodes[min(expected)].layout.port):
                try:
                    seen = await broker_ids(bootstrap, auth=self.auth)
                except RETRIABLE_ERRORS as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if expected <= seen:
                        return
            if time.monotonic() >= deadline:
                tails = "\n".join(self._nodes[i].log_tail() for i in sorted(expected))
                raise StartupError(
                    f"Kafka nodes {sorted(expected)} not ready after {timeout_s:.0f} s "
                    f"(metadata lists brokers {sorted(seen)}; last error: {last_error}):\n{tails}"
                )
            await asyncio.sleep(_READY_POLL_S)

    # -- fault injection (for the three-node cluster) -------------------------------------------

    async def kill_node(self, node_id: int) -> None:
        """Crash a node with SIGKILL (no controlled shutdown); its data stays for ``restart_node``."""
        await self.node(node_id).kill()

    async def stop_node(self, node_id: int, timeout_s: float = 20.0) -> None:
        """Shut a node down cleanly (SIGTERM); its data stays for ``restart_node``."""
        await self.node(node_id).stop(timeout_s)

    def pause_node(self, node_id: int) -> None:
        """Freeze a node with SIGSTOP: its sockets stay open but it stops answering (a hung broker)."""
        node = self.node(node_id)
        node.require_process().pause()
        node.paused = True

    def resume_node(self, node_id: int) -> None:
        """Continue a node frozen by ``pause_node``."""
        node = self.node(node_id)
        node.require_process().resume()
        node.paused = False

    async def restart_node(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Start a node again on its ports and data (stopping it first if it runs); wait until it is listed.

        Raises:
            StartupError: it did not rejoin the cluster in ``timeout_s``.
        """
        node = self.node(node_id)
        if node.running():
            await node.stop(20.0)
        self._spawn(node)
        await self.wait_ready(self.running_node_ids(), timeout_s=timeout_s)

    # -- state file ------------------------------------------------------------------------------

    def describe(self) -> KafkaState:
        """Everything ``from_state`` needs to find this cluster again from another process."""
        nodes: list[NodeState] = [
            {
                "node_id": node.node_id,
                "port": node.layout.port,
                "controller_port": node.layout.controller_port,
                "home": str(node.layout.home),
                "pid": node.process.pid if node.process is not None else None,
            }
            for node in self._nodes.values()
        ]
        return {
            "version": self.version,
            "cluster_id": self.cluster_id,
            "run_dir": str(self.run_dir),
            "bootstrap_servers": self.bootstrap_servers,
            "nodes": nodes,
        }

    @classmethod
    def from_state(cls, state: KafkaState) -> LocalKafka:
        """A handle on a cluster started by another process (``streamwarden infra up``)."""
        kafka = cls(len(state["nodes"]), run_dir=Path(state["run_dir"]), version=state["version"])
        kafka.cluster_id = state["cluster_id"]
        for item in state["nodes"]:
            layout = NodeLayout(
                node_id=item["node_id"],
                port=item["port"],
                controller_port=item["controller_port"],
                home=Path(item["home"]),
            )
            process = None
            if item["pid"] is not None:
                process = ManagedProcess.adopt(
                    f"kafka node {layout.node_id}",
                    item["pid"],
                    marker=str(layout.home),
                    log_path=layout.logs_dir / "kafka.out",
                )
            kafka._nodes[layout.node_id] = KafkaNode(layout, process)
        return kafka

    def rss_bytes(self) -> dict[int, int]:
        """Resident memory of each running node's JVM."""
        out: dict[int, int] = {}
        for i, node in self._nodes.items():
            if node.process is not None and node.running():
                out[i] = node.process.rss_bytes()
        return out
