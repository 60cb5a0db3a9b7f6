"""The state file and the exported environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.infra.errors import InfraError
from workers.infra.state import InfraState, environment, export_lines, load_state, save_state, write_env_file


def _state() -> InfraState:
    return {
        "format": 1,
        "kafka": {
            "version": "4.3.1",
            "cluster_id": "abc",
            "run_dir": "/r/kafka",
            "bootstrap_servers": "127.0.0.1:1,127.0.0.1:2",
            "nodes": [{"node_id": 1, "port": 1, "controller_port": 3, "home": "/r/kafka/node-1", "pid": 10}],
        },
        "redis": {"url": "redis://127.0.0.1:5/0", "port": 5, "run_dir": "/r/redis", "pid": 11},
        "topics": {"prefix": "guard", "partitions": 4, "replication": 1},
    }


def test_round_trip(tmp_path: Path) -> None:
    assert load_state(tmp_path) is None
    save_state(tmp_path, _state())
    assert load_state(tmp_path) == _state()


def test_a_corrupt_state_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InfraError, match="not valid JSON"):
        load_state(tmp_path)


def test_environment_points_at_the_servers_and_topics(tmp_path: Path) -> None:
    env = environment(_state())
    assert env == {
        "STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1,127.0.0.1:2",
        "STREAMWARDEN_REDIS__URL": "redis://127.0.0.1:5/0",
        "STREAMWARDEN_KAFKA__TOPIC_PREFIX": "guard",
        "STREAMWARDEN_KAFKA__PARTITIONS": "4",
        "STREAMWARDEN_KAFKA__REPLICATION": "1",
    }
    write_env_file(tmp_path / "x" / "infra.env", env)
    lines = (tmp_path / "x" / "infra.env").read_text().splitlines()
    assert lines == export_lines(env)
    assert lines[0] == "export STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:1,127.0.0.1:2"
