"""Missing programs fail with an error that names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.infra import LocalRedis, MissingProgram
from workers.infra.programs import require_program


def test_missing_redis_server_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingProgram, match=r"redis-server not found on PATH: .*apt-get install -y redis-server"):
        require_program("redis-server")


async def test_local_redis_refuses_to_start_without_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingProgram, match="apt-get install -y redis-server"):
        await LocalRedis(run_dir=tmp_path / "redis").start()
