"""The jar cache: fetched once, verified, never mistaken for complete after a partial download.

Maven is replaced by a script that writes jars the way ``dependency:copy-dependencies`` does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.infra.errors import FetchError, MissingProgram
from workers.infra.maven import cached_libs, fetch_kafka_libs, kafka_home

_FAKE_MVN = """#!/bin/sh
# Records each call, then behaves like `mvn dependency:copy-dependencies` (or fails on request).
echo call >> "{calls}"
[ -f "{fail}" ] && {{ echo "[ERROR] Could not resolve dependencies"; exit 1; }}
for arg in "$@"; do
  case "$arg" in
    -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}" ;;
    -Dkafka.version=*) version="${{arg#-Dkafka.version=}}" ;;
  esac
done
mkdir -p "$out"
for jar in kafka_2.13-$version kafka-clients-$version slf4j-api-1.7.36 $(cat "{extra}" 2>/dev/null); do
  printf 'jar %s' "$jar" > "$out/$jar.jar"
done
"""


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A bin directory with fake ``mvn`` and ``java``, first on PATH; returns the directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = _FAKE_MVN.format(calls=tmp_path / "calls", fail=tmp_path / "fail", extra=tmp_path / "extra")
    for name, body in (("mvn", script), ("java", "#!/bin/sh\nexit 0\n")):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "extra").write_text("log4j-slf4j-impl-2.25.4")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield tmp_path


def _calls(root: Path) -> int:
    path = root / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_fetches_once_then_uses_the_cache(fake_mvn: Path) -> None:
    cache = fake_mvn / "cache"
    libs = fetch_kafka_libs("4.3.1", cache)
    assert libs.libs_dir == kafka_home("4.3.1", cache) / "libs"
    assert (libs.libs_dir / "kafka_2.13-4.3.1.jar").is_file()
    assert libs.classpath.endswith("/libs/*")
    assert fetch_kafka_libs("4.3.1", cache) == libs
    assert _calls(fake_mvn) == 1


def test_a_truncated_jar_is_fetched_again(fake_mvn: Path) -> None:
    cache = fake_mvn / "cache"
    libs = fetch_kafka_libs("4.3.1", cache)
    (libs.libs_dir / "kafka-clients-4.3.1.jar").write_text("x")
    assert cached_libs("4.3.1", cache) is None
    fetch_kafka_libs("4.3.1", cache)
    assert _calls(fake_mvn) == 2
    assert cached_libs("4.3.1", cache) is not None


def test_an_interrupted_download_is_not_complete(fake_mvn: Path) -> None:
    cache = fake_mvn / "cache"
    home = kafka_home("4.3.1", cache)
    (home / "libs.partial").mkdir(parents=True)
    (home / "libs.partial" / "kafka_2.13-4.3.1.jar").write_text("half")
    (home / "libs").mkdir()
    (home / "libs" / "kafka_2.13-4.3.1.jar").write_text("no marker")
    assert cached_libs("4.3.1", cache) is None
    fetch_kafka_libs("4.3.1", cache)
    assert not (home / "libs.partial").exists()
    assert _calls(fake_mvn) == 1


def test_maven_failure_leaves_no_complete_cache(fake_mvn: Path) -> None:
    (fake_mvn / "fail").touch()
    cache = fake_mvn / "cache"
    with pytest.raises(FetchError, match="Could not resolve dependencies"):
        fetch_kafka_libs("4.3.1", cache)
    assert cached_libs("4.3.1", cache) is None
    assert not (kafka_home("4.3.1", cache) / "libs").exists()


def test_a_missing_logging_binding_is_reported(fake_mvn: Path) -> None:
    (fake_mvn / "extra").write_text("")
    with pytest.raises(FetchError, match="log4j-slf4j-impl"):
        fetch_kafka_libs("4.3.1", fake_mvn / "cache")


def test_kafka_3_is_refused(fake_mvn: Path) -> None:
    with pytest.raises(FetchError, match=r"4\.x"):
        fetch_kafka_libs("3.9.1", fake_mvn / "cache")
    assert _calls(fake_mvn) == 0


def test_missing_maven_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingProgram, match="apt-get install -y"):
        fetch_kafka_libs("4.3.1", tmp_path / "cache")
