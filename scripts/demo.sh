#!/usr/bin/env bash
# The main job on a fresh machine: install, ingest the bundled demo corpus (our own docs), warm
# its chunk caches, start the REST service on 127.0.0.1 and print a sample query with its TTFT
# in `full` and `blend` modes. The service then keeps running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
STORE="${CHUNKCACHE_STORE:-.store/demo}"
PORT="${CHUNKCACHE_PORT:-8000}"
chunkcache ingest chunkcache/demo/docs --warm --store "$STORE"
chunkcache serve --store "$STORE" --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT INT TERM
python scripts/demo_client.py --url "http://127.0.0.1:$PORT" ${CHUNKCACHE_API_KEY:+--api-key "$CHUNKCACHE_API_KEY"}
wait "$SERVER"
