#!/usr/bin/env bash
# The test command: set everything up, then lint, type-check and run every test
# (unit, and integration against a real Kafka broker and a real Redis that the harness starts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
