"""Running one guard worker process: ``streamwarden worker``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from workers.agents.broker_watch import EXIT_BROKER_UNREACHABLE
from workers.app import create_app
from workers.backends import make_backend
from workers.metrics import NullSensor, PrometheusSensor, Sensor
from workers.settings import Settings
from workers.shadow.runtime import shadow_settings

logger = logging.getLogger(__name__)


def run_worker(settings: Settings, *, ready_file: Path | None = None) -> int:
    """Run until SIGINT/SIGTERM. ``ready_file`` is written once the model is loaded and the group has
    assigned this worker its partitions."""
    import faust

    sensor: Sensor = NullSensor()
    prometheus = PrometheusSensor() if settings.worker.metrics_port else None
    if prometheus is not None:
        sensor = prometheus
    shadow_backend = make_backend(shadow_settings(settings)) if settings.shadow.enabled else None
    app, runtime = create_app(settings, make_backend(settings), sensor=sensor, shadow_backend=shadow_backend)
    if prometheus is not None:
        w = settings.worker
        prometheus.serve(w.metrics_port, host=w.metrics_host, health=runtime.health.report)
        logger.info("metrics and health on http://%s:%s/metrics and /healthz", w.metrics_host, w.metrics_port)
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
        info = {"worker_id": runtime.moderator.worker_id}

        def announce() -> None:
            info["model_id"] = runtime.backend.info.model_id
            # written aside and renamed: whoever polls for the file never reads it half-written
            scratch = ready_file.with_name(ready_file.name + ".tmp")
            scratch.write_text(json.dumps(info), encoding="utf-8")
            os.replace(scratch, ready_file)

        runtime.on_ready.append(announce)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    # faust draws a terminal spinner at WARNING and above by lowering the root logger to DEBUG and
    # spinning once per record: every debug call in aiokafka would then build a LogRecord.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if runtime.broker_lost:
            return EXIT_BROKER_UNREACHABLE
        raise
