"""Schemathesis over the served /openapi.json, against a real uvicorn with the real model.

All checks run (no 5xx, responses match the schema, schema-valid requests are accepted and
invalid ones refused); `schemathesis.toml` beside this file lists the statuses a schema-valid
request may still get. Bounded: a fixed seed, N examples per operation, and this server's caps
(max_new_tokens <= 4, top_k <= 2) are in the schema, so generation requests stay small.
POST /v1/warm is left out: it starts a corpus-wide background job.

Run it alone (it prints the request and status counts):
    python -m pytest -q tests/api/test_api_fuzz.py -s
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from api_support import CORPUS

from chunkcache.api import BackgroundServer, ServiceConfig, create_app

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("CHUNKCACHE_FUZZ_EXAMPLES", "20"))
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_5xx_and_no_schema_violation(cache, tmp_path):
    config = ServiceConfig(queue_size=4, max_top_k=2, max_new_tokens_limit=4, max_body_bytes=256 * 1024)
    with BackgroundServer(create_app(cache, config)) as server:
        assert httpx.post(server.url + "/v1/documents", json=CORPUS, timeout=120).status_code == 201
        report = tmp_path / "run.ndjson"
        st = Path(sys.executable).with_name("st")
        command = [str(st), "--config-file", str(CONFIG), "run", server.url + "/openapi.json", "--checks", "all",
                   "--max-examples", str(EXAMPLES), "--seed", "12", "--workers", "1", "--exclude-path", "/v1/warm",
                   "--request-timeout", "120", "--no-shrink", "--report", "ndjson", "--report-ndjson-path", str(report)]
        run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache stays in tmp
    statuses = _statuses(report)
    print(f"\nschemathesis: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert statuses and not any(status >= 500 for status in statuses), statuses


def _statuses(report: Path) -> Counter:
    """Response status counts from schemathesis' NDJSON event log."""
    counts: Counter = Counter()
    if not report.exists():
        return counts
    for line in report.read_text().splitlines():
        for status in _find_status(json.loads(line)):
            counts[status] += 1
    return counts


def _find_status(event) -> list[int]:
    found = []
    if isinstance(event, dict):
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            found.append(response["status_code"])
        for key, value in event.items():
            if key != "response":
                found += _find_status(value)
    elif isinstance(event, list):
        for item in event:
            found += _find_status(item)
    return found
