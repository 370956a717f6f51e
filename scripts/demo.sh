#!/usr/bin/env bash
# The main job on a fresh machine: set up, then answer the bundled demo questions in every mode
# (full prefill, reuse, CacheBlend, APE) on the default model and print quality and TTFT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec chunkcache eval --store .store/demo --modes full,reuse,blend,ape --json out/demo-eval.json "$@"
