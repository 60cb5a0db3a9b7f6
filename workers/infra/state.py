"""The run directory's state file and the environment file written by ``streamwarden infra up``.

``<run dir>/state.json`` records what ``infra up`` started (bootstrap servers, the Redis URL, pids,
ports, directories), so that ``infra status`` and ``infra down``, run later from another process,
find the same servers. ``.streamwarden/infra.env`` holds ``export STREAMWARDEN_...=...`` lines for a
shell (``source .streamwarden/infra.env``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict, cast

from workers.infra.errors import InfraError
from workers.infra.kafka import KafkaState
from workers.infra.redis_server import RedisState

DEFAULT_RUN_DIR = Path(".streamwarden") / "run"
DEFAULT_ENV_FILE = Path(".streamwarden") / "infra.env"
STATE_FILE = "state.json"
STATE_FORMAT = 1


class TopicsState(TypedDict):
    prefix: str
    partitions: int
    replication: int


class InfraState(TypedDict):
    format: int
    kafka: KafkaState
    redis: RedisState
    topics: TopicsState | None


def load_state(run_dir: Path) -> InfraState | None:
    """The state recorded in ``run_dir``, or None if nothing was started there.

    Raises:
        InfraError: the file exists but is unreadable or of another format.
    """
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise InfraError(f"{path} is not valid JSON ({exc}); remove {run_dir} by hand") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise InfraError(f"{path} has an unknown format; remove {run_dir} by hand")
    return cast(InfraState, data)


def save_state(run_dir: Path, state: InfraState) -> None:
    """Write the state atomically (a reader never sees half a file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(run_dir / STATE_FILE)


def clear_state(run_dir: Path) -> None:
    (run_dir / STATE_FILE).unlink(missing_ok=True)


def environment(state: InfraState) -> dict[str, str]:
    """The ``STREAMWARDEN_*`` variables that point the service at the recorded servers and topics."""
    env = {
        "STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS": state["kafka"]["bootstrap_servers"],
        "STREAMWARDEN_REDIS__URL": state["redis"]["url"],
    }
    topics = state["topics"]
    if topics is not None:
        env["STREAMWARDEN_KAFKA__TOPIC_PREFIX"] = topics["prefix"]
        env["STREAMWARDEN_KAFKA__PARTITIONS"] = str(topics["partitions"])
        env["STREAMWARDEN_KAFKA__REPLICATION"] = str(topics["replication"])
    return env


def export_lines(env: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines (values are plain host:port lists and URLs without spaces)."""
    return [f"export {name}={value}" for name, value in env.items()]


def write_env_file(path: Path, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(export_lines(env)) + "\n", encoding="utf-8")
