"""Requests/s and latency percentiles of `POST /v1/query` at several concurrencies, as Markdown.

    python scripts/bench_service.py --model .store/test/models/smollm2-135m-instruct
    python scripts/bench_service.py --docs chunkcache/demo/docs --concurrency 1,4,16 --requests 24

Starts the real server in-process on a free port over `--store` (a temporary directory by
default), ingests the corpus (`--docs`: a folder of .md/.txt/.jsonl; default a few paragraphs
below), warms every chunk through `POST /v1/warm`, sends one unmeasured query per mode, then for
each mode and concurrency sends max(--requests, 2 x concurrency) queries from that many clients.
Latency is client-side (queue wait included); TTFT is the server's (retrieval to first token).
"""

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass

import httpx

from chunkcache.api import BackgroundServer, ServiceConfig, create_app
from chunkcache.config import CacheConfig
from chunkcache.facade import ChunkCache
from chunkcache.retrieval import load_paths
from chunkcache.stats import percentile

CORPUS = [
    ("harbour", "The harbour at Kestrel Bay",
     "Kestrel Bay grew around a deep natural harbour on a coast of low cliffs. Fishing boats moor along the north "
     "quay, where the tide rises almost four metres in spring. The harbour master keeps a log of every arrival, a "
     "habit that began in 1802 when a storm sank eleven boats at anchor. A stone breakwater, finished in 1851, now "
     "shelters the inner basin, and its lantern is lit from dusk until the last boat returns. Visitors can walk the "
     "breakwater at low water and watch seals resting on the outer rocks."),
    ("market", "The Saturday market",
     "Every Saturday the square in front of the old customs house fills with stalls. Farmers from the valley sell "
     "cheese, apples and smoked trout; a baker from Lindmoor brings seeded rye that is usually gone by ten. The "
     "market has a rule older than anyone can remember: nothing may be sold that was not grown, caught or made "
     "within a day's walk. A brass bell on the customs house opens the market at seven and closes it at one."),
    ("railway", "The coast railway",
     "The single-track railway along the coast opened in 1874 to carry slate to the harbour. Passenger trains "
     "followed a decade later. The line crosses the estuary on a curved iron viaduct of nineteen spans, and its "
     "steepest climb, near Hollin Gap, needed a second engine until the line was electrified in 1962. Today two "
     "trains an hour run in summer and one in winter, and the journey from end to end takes fifty-three minutes."),
    ("observatory", "Hollin Gap observatory",
     "An amateur astronomy society built a small observatory above Hollin Gap in 1931, choosing the site for its "
     "dark skies and dry winds. Its main telescope is a 40-centimetre reflector with a mirror ground by hand by "
     "the society's founder, Edith Marr. Members record variable stars and have reported three novae. On clear "
     "Friday evenings the dome opens to the public, and children may look through the telescope first."),
    ("wool", "Wool from the valley",
     "Sheep have grazed the valley above Kestrel Bay for centuries. The local breed has a coarse grey fleece that "
     "sheds rain, which made it the wool of choice for fishermen's jumpers. A cooperative mill, founded by forty "
     "farming families in 1920, still spins and dyes the wool using water from the Lind river. Its best-known "
     "product is a heavy blanket woven in a pattern of blue and grey stripes said to match the sea in winter."),
    ("lifeboat", "The lifeboat station",
     "The lifeboat station at the end of the south quay has launched crews into storms for more than a century. "
     "Its current boat, the Ann Tolley, can right itself if it capsizes and reaches twenty-five knots. The crew "
     "are volunteers: a fisherman, two teachers, a nurse and the owner of the harbour cafe among them. A board "
     "inside the station lists every rescue since 1884, with more than six hundred lives saved."),
]
QUESTIONS = [
    "When was the breakwater at Kestrel Bay finished?", "What may be sold at the Saturday market?",
    "How many spans does the railway viaduct have?", "Who ground the observatory's telescope mirror?",
    "Why did fishermen choose the valley wool?", "How fast is the Ann Tolley lifeboat?",
]


@dataclass(frozen=True)
class Level:
    mode: str
    concurrency: int
    requests: int
    ok: int
    rejected: int
    failed: int
    wall_s: float
    latencies_s: tuple[float, ...]
    ttfts_s: tuple[float, ...]
    mean_batch: float  # requests per batched decode step during the level (the scheduler's count)

    def row(self) -> str:
        lat = [t * 1000 for t in self.latencies_s] or [0.0]
        p50, p95, p99 = (percentile(lat, q) for q in (0.50, 0.95, 0.99))
        ttft = 1000 * percentile(list(self.ttfts_s), 0.50) if self.ttfts_s else float("nan")
        return (f"| {self.mode} | {self.concurrency} | {self.requests} | {self.ok} | {self.rejected + self.failed} | "
                f"{self.ok / self.wall_s:.2f} | {p50:.0f} | {p95:.0f} | {p99:.0f} | {ttft:.0f} | {self.mean_batch:.1f} |")


HEADER = ("| mode | concurrency | requests | ok | 503/errors | req/s | p50 ms | p95 ms | p99 ms | p50 TTFT ms | mean batch |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


async def run_level(url: str, mode: str, concurrency: int, n: int, args, scheduler) -> Level:
    todo = iter(range(n))
    latencies, ttfts, statuses = [], [], []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in todo:  # the clients share one iterator: n requests in all
            body = {"question": QUESTIONS[i % len(QUESTIONS)], "mode": mode, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens}
            t0 = time.perf_counter()
            response = await client.post("/v1/query", json=body)
            statuses.append(response.status_code)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - t0)
                ttfts.append(response.json()["ttft_s"])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    steps, rows = scheduler.steps, scheduler.batched_rows
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return Level(mode, concurrency, n, statuses.count(200), statuses.count(503), sum(s not in (200, 503) for s in statuses),
                 wall, tuple(latencies), tuple(ttfts), (scheduler.batched_rows - rows) / max(1, scheduler.steps - steps))


def prepare(client: httpx.Client, docs: list[dict], args) -> None:
    added = client.post("/v1/documents", json=docs)
    added.raise_for_status()
    job = client.post("/v1/warm").json()
    while job["status"] == "running":
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    if job["status"] != "succeeded":
        raise SystemExit(f"warm-up failed: {job}")
    for mode in args.modes:  # first request per mode pays one-time costs; not measured
        client.post("/v1/query", json={"question": QUESTIONS[0], "mode": mode, "top_k": args.top_k, "max_new_tokens": 2}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=None, help="store directory (default: a temporary one)")
    parser.add_argument("--model", default=None, help="model dir / .gguf / None for the default (converted into the store)")
    parser.add_argument("--docs", default=None, help="folder or files of .md/.txt/.jsonl (default: built-in paragraphs)")
    parser.add_argument("--modes", default="full,blend", type=lambda s: [m for m in s.split(",") if m])
    parser.add_argument("--concurrency", default="1,4,16", type=lambda s: [int(c) for c in s.split(",") if c])
    parser.add_argument("--requests", type=int, default=12, help="requests per level, at least 2 x concurrency (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--workers", type=int, default=ServiceConfig.workers,
                        help="requests answered at once, decoded as one batch (default: %(default)s)")
    args = parser.parse_args()

    if args.docs:
        docs = [{"id": d.id, "text": d.text, "title": d.title} for d in load_paths([args.docs])]
    else:
        docs = [{"id": i, "title": t, "text": x} for i, t, x in CORPUS]
    store = args.store or tempfile.mkdtemp(prefix="bench-service-")
    cache = ChunkCache(config=CacheConfig(store_dir=store, model=args.model, max_batch=max(args.workers, CacheConfig.max_batch)))
    config = ServiceConfig(queue_size=max(args.concurrency), workers=args.workers, request_timeout_s=600)
    levels = []
    try:
        with BackgroundServer(create_app(cache, config)) as server, httpx.Client(base_url=server.url, timeout=600) as client:
            prepare(client, docs, args)
            for mode in args.modes:
                for c in args.concurrency:
                    level = asyncio.run(run_level(server.url, mode, c, max(args.requests, 2 * c), args, cache.scheduler))
                    levels.append(level)
                    print(f"done: {level.row()}", flush=True)
    finally:
        cache.close()
    print(f"\n{len(docs)} documents, top_k={args.top_k}, max_new_tokens={args.max_new_tokens}, workers={args.workers}, "
          f"queue_size={config.queue_size}; latency is client-side, TTFT server-side (retrieval to first token); mean batch = requests per batched decode step\n")
    print(HEADER)
    for level in levels:
        print(level.row())


if __name__ == "__main__":
    main()
