"""Locating the external programs the local infrastructure runs, with errors that name the fix."""

from __future__ import annotations

import shutil

from workers.infra.errors import MissingProgram

# How to install each program on Debian/Ubuntu, the platform CI and the Dockerfile use.
INSTALL_HINTS: dict[str, str] = {
    "java": "install a Java 17+ runtime (Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless)",
    "mvn": "install Apache Maven (Debian/Ubuntu: apt-get install -y maven)",
    "redis-server": "install Redis (Debian/Ubuntu: apt-get install -y redis-server)",
}


def require_program(name: str) -> str:
    """Return the absolute path of ``name`` on PATH.

    Raises:
        MissingProgram: ``name`` is not on PATH; the message says how to install it.
    """
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise MissingProgram(f"{name} not found on PATH: {hint}")
    return path
