"""KRaft config generation: cluster ids and server.properties."""

from __future__ import annotations

import base64
from pathlib import Path

from workers.infra.kraft import NodeLayout, new_cluster_id, server_properties


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _cluster(size: int, root: Path) -> list[NodeLayout]:
    return [
        NodeLayout(node_id=i, port=9000 + i, controller_port=9100 + i, home=root / f"n{i}") for i in range(1, size + 1)
    ]


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_single_node_properties(tmp_path: Path) -> None:
    (node,) = _cluster(1, tmp_path)
    props = _props(server_properties(node, [node]))
    assert props["node.id"] == "1"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101"
    assert props["log.dirs"] == str(tmp_path / "n1" / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["min.insync.replicas"] == "1"


def test_three_node_properties_share_the_voters(tmp_path: Path) -> None:
    cluster = _cluster(3, tmp_path)
    all_props = [_props(server_properties(node, cluster)) for node in cluster]
    voters = "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    assert {p["controller.quorum.voters"] for p in all_props} == {voters}
    assert [p["node.id"] for p in all_props] == ["1", "2", "3"]
    for props in all_props:
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        # Nothing listens beyond loopback.
        assert all("127.0.0.1" in part for part in props["listeners"].split(","))
