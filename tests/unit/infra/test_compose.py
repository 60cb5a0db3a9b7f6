"""docker-compose.yml and the Dockerfile: valid, and consistent with the CLI and the settings.

No Docker engine runs here, so this checks what can be checked without one: the YAML parses, the
images and GPU reservation are the intended ones, every ``STREAMWARDEN_*`` variable names a real
setting, and every command run in the streamwarden image parses with the real CLI parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from workers.cli import build_parser
from workers.settings import Settings

REPO = Path(__file__).resolve().parents[3]
_COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
_SERVICES: dict[str, Any] = _COMPOSE["services"]
_OWN = {name: svc for name, svc in _SERVICES.items() if svc.get("image", "").startswith("streamwarden")}


def test_services_and_images() -> None:
    assert {"kafka", "redis", "worker", "archiver"} <= set(_SERVICES)
    assert _SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert _SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert _SERVICES["redis"]["image"].startswith("redis:")
    assert {"worker", "archiver", "topics"} <= set(_OWN)
    assert all(svc.get("build") == "." for svc in _OWN.values())
    assert (REPO / "Dockerfile").is_file()
    assert 'ENTRYPOINT ["streamwarden"]' in (REPO / "Dockerfile").read_text(encoding="utf-8")


def test_worker_reserves_a_gpu() -> None:
    devices = _SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_published_ports_bind_loopback_only() -> None:
    for svc in _SERVICES.values():
        for mapping in svc.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), mapping


def _setting_exists(variable: str) -> bool:
    path = variable.removeprefix("STREAMWARDEN_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i < len(path) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


@pytest.mark.parametrize("service", sorted(_OWN))
def test_environment_names_real_settings(service: str) -> None:
    variables = [name for name in _OWN[service]["environment"] if name.startswith("STREAMWARDEN_")]
    assert variables
    unknown = [name for name in variables if not _setting_exists(name)]
    assert unknown == []


@pytest.mark.parametrize("service", sorted(_OWN))
def test_commands_exist_in_the_cli(service: str) -> None:
    args = build_parser().parse_args(_OWN[service]["command"])
    assert callable(args.handler)


def test_the_worker_serves_health_and_docker_checks_it() -> None:
    worker = _SERVICES["worker"]
    port = worker["environment"]["STREAMWARDEN_WORKER__METRICS_PORT"]
    assert worker["environment"]["STREAMWARDEN_WORKER__METRICS_HOST"] == "0.0.0.0"  # inside the network
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in check
