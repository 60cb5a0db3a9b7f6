"""The environment ``scripts/setup.sh`` builds: what a worker's start time depends on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import transformers


def test_the_heavy_dependencies_are_installed_with_their_bytecode() -> None:
    # Where PYTHONDONTWRITEBYTECODE is set (CI runners, containers) nothing writes .pyc files at
    # import time, and every worker start would recompile these sources (about 8 s on 2 cores).
    for module in (torch, transformers):
        source = Path(str(module.__file__))
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.is_file(), (
            f"{module.__name__} has no compiled bytecode ({cached}); scripts/setup.sh installs with "
            "--compile-bytecode (remove .venv/.streamwarden-installed and run it again)"
        )
