#!/usr/bin/env bash
# The main job: set everything up, then run the live demo (Kafka, Redis, a guard worker and a
# producer streaming several conversations, shown in the terminal).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/streamwarden demo "$@"
