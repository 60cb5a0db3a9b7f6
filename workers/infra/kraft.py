"""KRaft configuration of local Kafka nodes: cluster ids and ``server.properties``.

Every node is a combined broker and controller on 127.0.0.1 with a static voter set
(``controller.quorum.voters``), so all nodes are formatted with the same cluster id and no
``--standalone``/``--initial-controllers`` flag. Internal topics get few partitions, because each
partition costs startup time on a small machine.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from workers.infra.ports import LOOPBACK


def new_cluster_id() -> str:
    """A random Kafka cluster id, in Kafka's ``Uuid`` text form (URL-safe base64, no padding).

    Like Kafka's own ``Uuid.randomUuid``, ids starting with ``-`` are skipped: tools would read them
    as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """Where one node listens and keeps its files."""

    node_id: int
    port: int
    controller_port: int
    home: Path

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"


SCRAM_MECHANISM: Final = "SCRAM-SHA-256"


def server_properties(
    node: NodeLayout, cluster: Sequence[NodeLayout], scram_user: tuple[str, str] | None = None
) -> str:
    """The ``server.properties`` text of ``node`` in a cluster of ``cluster`` (which includes it).

    With ``scram_user`` (name, password) clients and brokers authenticate with SASL/SCRAM-SHA-256 on
    a ``SASL_PLAINTEXT`` listener, brokers as that user; the controller listener stays plaintext on
    the loopback. The user's credential itself is created when the storage is formatted.
    """
    size = len(cluster)
    replication = min(3, size)
    min_isr = 2 if size >= 3 else 1
    voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in cluster)
    listener = "SASL_PLAINTEXT" if scram_user is not None else "PLAINTEXT"
    props: dict[str, str | int] = {
        "node.id": node.node_id,
        "process.roles": "broker,controller",
        "listeners": f"{listener}://{LOOPBACK}:{node.port},CONTROLLER://{LOOPBACK}:{node.controller_port}",
        "advertised.listeners": f"{listener}://{LOOPBACK}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{listener}:{listener}",
        "controller.quorum.voters": voters,
        "log.dirs": str(node.data_dir),
        # Topics are created by the project with explicit partition counts, never by accident.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "share.coordinator.state.topic.num.partitions": 1,
        # Consumers of a fresh group start at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": 0,
        # Sized for a 2-core development machine.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 2,
    }
    if scram_user is not None:
        name, password = scram_user
        props["sasl.enabled.mechanisms"] = SCRAM_MECHANISM
        props["sasl.mechanism.inter.broker.protocol"] = SCRAM_MECHANISM
        props[f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"] = (
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{name}" password="{password}";'
        )
    lines = [f"# node {node.node_id} of a local {size}-node KRaft cluster, written by streamwarden"]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"
