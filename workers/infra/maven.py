"""The Apache Kafka broker's jars, fetched once from Maven Central with Maven and cached.

Layout of the cache (default ``~/.cache/streamwarden``)::

    kafka-<version>/
        pom.xml          the packaged pom (``kafka-libs.pom.xml``), copied for Maven to read
        libs/            every runtime jar: the broker's classpath is ``libs/*``
        complete.json    written last; names every jar and its size
        .lock            serialises concurrent fetches

A fetch downloads into ``libs.partial/`` and only renames it to ``libs/`` and writes
``complete.json`` after Maven succeeded and the jars were checked, so an interrupted download is
never mistaken for a complete one: without a ``complete.json`` that matches the files, the
directory is fetched again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from workers.infra.errors import FetchError
from workers.infra.programs import require_program

logger = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.3.1"
# The log4j2 release Kafka 4.3.1 depends on; the slf4j binding must come from the same release.
DEFAULT_LOG4J_VERSION = "2.25.4"
POM_RESOURCE = "kafka-libs.pom.xml"
_MARKER = "complete.json"
_FETCH_TIMEOUT_S = 1800.0


def default_cache_root() -> Path:
    """``~/.cache/streamwarden``: where fetched jars live unless a caller names another directory."""
    return Path.home() / ".cache" / "streamwarden"


@dataclass(frozen=True, slots=True)
class KafkaLibs:
    """A complete, verified set of broker jars."""

    version: str
    libs_dir: Path

    @property
    def classpath(self) -> str:
        """The JVM classpath (a wildcard over ``libs_dir``)."""
        return str(self.libs_dir / "*")


def kafka_home(version: str, cache_root: Path | None = None) -> Path:
    """The cache directory of one Kafka version."""
    return (cache_root or default_cache_root()) / f"kafka-{version}"


def cached_libs(version: str = DEFAULT_KAFKA_VERSION, cache_root: Path | None = None) -> KafkaLibs | None:
    """The cached jars of ``version`` if a complete fetch is recorded and every jar is intact, else None."""
    home = kafka_home(version, cache_root)
    try:
        record = json.loads((home / _MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    libs = home / "libs"
    jars: dict[str, int] = record.get("jars", {})
    if record.get("version") != version or not jars:
        return None
    for name, size in jars.items():
        path = libs / name
        if not path.is_file() or path.stat().st_size != size:
            logger.warning("cached Kafka jar %s is missing or truncated; fetching again", path)
            return None
    return KafkaLibs(version=version, libs_dir=libs)


def fetch_kafka_libs(
    version: str = DEFAULT_KAFKA_VERSION,
    cache_root: Path | None = None,
    *,
    log4j_version: str = DEFAULT_LOG4J_VERSION,
    maven_repo: Path | None = None,
) -> KafkaLibs:
    """Return the broker jars of ``version``, fetching them with Maven the first time.

    Blocking (a first fetch takes tens of seconds); async callers run it in a thread. Concurrent
    callers, in this process or others, wait for one another through a lock file.

    Args:
        version: an Apache Kafka 4.x release served by Maven Central.
        cache_root: where ``kafka-<version>/`` lives; default ``default_cache_root()``.
        log4j_version: the log4j2 release of the logging binding (must match Kafka's log4j-core).
        maven_repo: Maven's local repository; default Maven's own (``~/.m2/repository``).

    Raises:
        FetchError: not a 4.x version, Maven failed, or the jars are incomplete.
        MissingProgram: ``mvn`` (or ``java``, which Maven needs) is not installed.
    """
    if not version.startswith("4."):
        raise FetchError(f"Kafka {version} is not supported: streamwarden runs Kafka 4.x brokers (KRaft, log4j2)")
    found = cached_libs(version, cache_root)
    if found is not None:
        return found
    home = kafka_home(version, cache_root)
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Another process may have finished the same fetch while this one waited for the lock.
        found = cached_libs(version, cache_root)
        if found is not None:
            return found
        return _fetch_locked(home, version, log4j_version, maven_repo)


def _fetch_locked(home: Path, version: str, log4j_version: str, maven_repo: Path | None) -> KafkaLibs:
    require_program("java")
    mvn = require_program("mvn")
    pom = home / "pom.xml"
    pom.write_bytes(resources.files("workers.infra").joinpath(POM_RESOURCE).read_bytes())
    partial, libs = home / "libs.partial", home / "libs"
    (home / _MARKER).unlink(missing_ok=True)
    for stale in (partial, libs):
        shutil.rmtree(stale, ignore_errors=True)
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        f"-Dlog4j.version={log4j_version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    if maven_repo is not None:
        argv.insert(3, f"-Dmaven.repo.local={maven_repo}")
    logger.info("fetching Apache Kafka %s jars from Maven Central into %s", version, libs)
    started = time.monotonic()
    _run_maven(argv, version)
    jars = _check_jars(partial, version)
    partial.rename(libs)
    elapsed = time.monotonic() - started
    record = {"version": version, "log4j_version": log4j_version, "seconds": round(elapsed, 1), "jars": jars}
    tmp = home / (_MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(home / _MARKER)
    total_mb = sum(jars.values()) / 2**20
    logger.info("fetched %d jars (%.1f MiB) in %.1f s", len(jars), total_mb, elapsed)
    return KafkaLibs(version=version, libs_dir=libs)


def _run_maven(argv: list[str], version: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"Maven did not finish fetching Kafka {version} in {_FETCH_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise FetchError(f"Maven could not fetch Kafka {version} (exit {done.returncode}):\n{output}")


def _check_jars(libs: Path, version: str) -> dict[str, int]:
    """Check the fetched directory holds a usable broker and return ``{jar name: size}``."""
    jars = {p.name: p.stat().st_size for p in sorted(libs.glob("*.jar"))}
    required = [f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar"]
    missing = [name for name in required if name not in jars]
    if missing:
        raise FetchError(f"Maven finished but {', '.join(missing)} is missing from {libs}")
    slf4j = [name for name in jars if name.startswith("slf4j-api-")]
    binding = "log4j-slf4j2-impl-" if any(n.startswith("slf4j-api-2.") for n in slf4j) else "log4j-slf4j-impl-"
    if not any(name.startswith(binding) for name in jars):
        raise FetchError(
            f"Kafka {version} resolves {', '.join(slf4j) or 'no slf4j-api'} but the pom's log4j2 binding "
            f"does not match; {POM_RESOURCE} must depend on {binding.rstrip('-')}"
        )
    return jars
