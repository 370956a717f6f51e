"""Helpers for the REST service tests: a self-written corpus, a real server on a free port, SSE parsing."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from chunkcache.api import BackgroundServer, ServiceConfig, create_app
from chunkcache.facade import ChunkCache

# A small corpus written for these tests (fictional facts, so answers come from the passages).
CORPUS = [
    {"id": "lighthouse", "title": "Greyhaven lighthouse",
     "text": "The Greyhaven lighthouse was built in 1887 from granite cut on Tollan Island. "
             "Its keeper, Mira Colt, climbs 142 steps every evening to light the lamp."},
    {"id": "bakery", "title": "Pell's Bakery",
     "text": "Pell's Bakery on Orchard Lane bakes dark rye loaves before dawn. "
             "The owner, Tomas Pell, learned the recipe from his grandmother."},
    {"id": "glacier", "title": "Vesk glacier",
     "text": "The Vesk glacier retreats about nine metres each year. "
             "Researchers measure it every August with wooden stakes drilled into the ice."},
    {"id": "orchestra", "title": "Fernwood youth orchestra",
     "text": "The Fernwood youth orchestra rehearses on Thursdays in the old tram depot. "
             "Its conductor, Ines Ardo, also plays the oboe."},
    {"id": "bridge", "title": "Saltmarsh footbridge", "metadata": {"kind": "structure"},
     "text": "The Saltmarsh footbridge is 64 metres long and built of larch wood. "
             "It opened in 2011 and links the village to the bird reserve."},
    {"id": "notes/comet", "title": "Comet Lira",
     "text": "Comet Lira returns every 41 years. It was last seen from the southern hemisphere in 1998."},
]


@contextmanager
def serving(cache: ChunkCache, config: ServiceConfig, api_key: str | None = None) -> Iterator[httpx.Client]:
    """A real uvicorn on 127.0.0.1:<free port> running create_app(cache, config); yields a client."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with BackgroundServer(create_app(cache, config)) as server, \
            httpx.Client(base_url=server.url, timeout=120, headers=headers) as client:
        yield client


def parse_sse(lines: Iterator[str]) -> list:
    """`data:` payloads of a server-sent event stream, JSON-decoded except the final [DONE]."""
    events = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events
