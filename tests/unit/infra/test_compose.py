"""docker-compose.yml, the Dockerfile and deploy/: valid, and consistent with the code they drive.

No Docker engine runs here, so this checks what can be checked without one: the YAML parses, the
images and GPU reservation are the intended ones, every ``STREAMWARDEN_*`` variable names a real
setting, every command run in the streamwarden image parses with the real CLI parser, every file
mounted from the repository exists, Prometheus scrapes the port the workers serve, and the Grafana
dashboard queries exactly the series a worker exposes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from pydantic import BaseModel

from workers.cli import build_parser
from workers.metrics import RUNTIME_SERIES, PartitionPosition, PrometheusSensor
from workers.settings import Settings

REPO = Path(__file__).resolve().parents[3]
_COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
_SERVICES: dict[str, Any] = _COMPOSE["services"]
_OWN = {name: svc for name, svc in _SERVICES.items() if svc.get("image", "").startswith("streamwarden")}


def test_services_and_images() -> None:
    assert {"kafka", "redis", "worker", "worker-cpu", "archiver", "prometheus", "grafana"} <= set(_SERVICES)
    assert _SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert _SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert _SERVICES["redis"]["image"].startswith("redis:")
    assert {"worker", "worker-cpu", "archiver", "topics"} <= set(_OWN)
    assert all(svc.get("build") == "." for svc in _OWN.values())
    assert (REPO / "Dockerfile").is_file()
    assert 'ENTRYPOINT ["streamwarden"]' in (REPO / "Dockerfile").read_text(encoding="utf-8")


def test_worker_reserves_a_gpu_and_the_cpu_profile_does_not() -> None:
    gpu, cpu = _SERVICES["worker"], _SERVICES["worker-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["STREAMWARDEN_ENGINE__DEVICE"] == "cuda"
    assert cpu["profiles"] == ["cpu"] and cpu["environment"]["STREAMWARDEN_ENGINE__DEVICE"] == "cpu"
    assert "deploy" not in cpu
    same = {key: value for key, value in gpu.items() if key not in ("profiles", "environment", "deploy")}
    assert same == {key: value for key, value in cpu.items() if key not in ("profiles", "environment")}
    assert {k: v for k, v in gpu["environment"].items() if k != "STREAMWARDEN_ENGINE__DEVICE"} == {
        k: v for k, v in cpu["environment"].items() if k != "STREAMWARDEN_ENGINE__DEVICE"
    }


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


@pytest.mark.parametrize("service", ["worker", "worker-cpu"])
def test_the_worker_serves_health_and_docker_checks_it(service: str) -> None:
    worker = _SERVICES[service]
    port = worker["environment"]["STREAMWARDEN_WORKER__METRICS_PORT"]
    assert worker["environment"]["STREAMWARDEN_WORKER__METRICS_HOST"] == "0.0.0.0"  # inside the network
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in check


def test_mounted_repository_files_exist() -> None:
    mounts = [
        volume.split(":")[0]
        for svc in _SERVICES.values()
        for volume in svc.get("volumes", [])
        if volume.startswith("./")
    ]
    assert len(mounts) == 3  # Prometheus' config, Grafana's provisioning and dashboards
    for mount in mounts:
        assert (REPO / mount).exists(), mount


def test_prometheus_scrapes_every_worker_on_its_metrics_port() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    workers = {name for name, svc in _OWN.items() if svc["command"] == ["worker"]}
    assert set(discovery["names"]) == workers == {"worker", "worker-cpu"}
    assert {str(discovery["port"])} == {
        _SERVICES[w]["environment"]["STREAMWARDEN_WORKER__METRICS_PORT"] for w in workers
    }
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"
    assert job["job_name"] in (REPO / "deploy/grafana/dashboards/streamwarden.json").read_text(encoding="utf-8")


def _worker_series() -> set[str]:
    """The metric families a worker's ``/metrics`` serves (labelled families included)."""
    from prometheus_client.parser import text_string_to_metric_families

    sensor = PrometheusSensor()
    sensor.on_record("t")
    sensor.on_verdict("response", "safe", "allow", 0.01, "stream")
    sensor.on_lag("response", 0.02)
    sensor.on_cutoff("response", "Violent")
    sensor.on_dead_letter("invalid_json")
    sensor.on_shadow_event("dropped")
    sensor.on_shadow_verdict("response", 0.03)
    sensor.on_shadow_discard("control")
    sensor.add_source(lambda: dict.fromkeys(RUNTIME_SERIES, 1.0))
    sensor.add_partition_source(lambda: {("t", 0): PartitionPosition(highwater=2, committed=1, read=1)})
    text = generate_latest(sensor.registry).decode()
    # ``*_created`` are the client's creation timestamps of counters and histograms, not series to chart
    return {family.name for family in text_string_to_metric_families(text) if not family.name.endswith("_created")}


def test_the_dashboard_queries_exactly_the_series_a_worker_serves() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/streamwarden.json").read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for expr in expressions
        for name in re.findall(r"guard_\w+", expr)
    }
    served = _worker_series()
    assert used == served
    assert all(panel["datasource"]["uid"] == "prometheus" for panel in dashboard["panels"])
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
