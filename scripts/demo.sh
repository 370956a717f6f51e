#!/usr/bin/env bash
# The main job on a fresh machine: install, ingest the bundled demo corpus (our own docs), warm
# its chunk caches, start the REST service on 127.0.0.1 and print a sample query with its TTFT
# in `full` and `blend` modes. The service then keeps running until Ctrl-C.
#
#   bash scripts/demo.sh          # interactive: the service keeps running
#   bash scripts/demo.sh --once   # or CHUNKCACHE_DEMO_ONCE=1: print, stop the service, exit 0 only if
#                                 # every step worked and blend reached the first token no later than full
set -euo pipefail
cd "$(dirname "$0")/.."
ONCE="${CHUNKCACHE_DEMO_ONCE:-0}"
for arg in "$@"; do
  case "$arg" in
    --once) ONCE=1 ;;
    *) echo "usage: bash scripts/demo.sh [--once]" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
STORE="${CHUNKCACHE_STORE:-.store/demo}"
PORT="${CHUNKCACHE_PORT:-8000}"
chunkcache ingest chunkcache/demo/docs --warm --store "$STORE"
chunkcache serve --store "$STORE" --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT INT TERM
CLIENT=(python scripts/demo_client.py --url "http://127.0.0.1:$PORT" --server-pid "$SERVER"
        ${CHUNKCACHE_API_KEY:+--api-key "$CHUNKCACHE_API_KEY"})
if [ "$ONCE" = "1" ]; then
  "${CLIENT[@]}" --once   # exits non-zero when a step failed or blend was slower than full
  kill "$SERVER"
  wait "$SERVER" || true
  echo "demo: every step worked; the service is stopped"
  exit 0
fi
"${CLIENT[@]}"
wait "$SERVER"
