#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests   # also installs redis-server when it is missing
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The converted default model is kept here between runs so it is built once.
export CHUNKCACHE_TEST_STORE="${CHUNKCACHE_TEST_STORE:-$PWD/.store/test}"
set +e
python -m pytest -q -rs "$@"  # -rs: every skip says why (only CUDA-only cases skip on a CPU machine)
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
