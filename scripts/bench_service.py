"""Requests/s, TTFT and time between tokens of streamed `POST /v1/query` at several concurrencies, as Markdown.

    python scripts/bench_service.py --model .store/test/models/smollm2-135m-instruct
    python scripts/bench_service.py --qa 2wikimqa --qa-limit 40 --modes blend --concurrency 1,4,16 --mixed-top-k 20

Starts the real server in-process on a free port over `--store` (a temporary directory by
default), ingests the corpus (`--docs`: a folder of .md/.txt/.jsonl; `--qa`: the passages of a
QA set's first `--qa-limit` examples, asked their questions; default a few paragraphs below),
warms every chunk through `POST /v1/warm`, sends one unmeasured query per mode, then for each
mode and concurrency sends max(--requests, 2 x concurrency) streamed queries from that many
clients. With `--mixed-top-k K`, each concurrency is run a second time with every fourth request
retrieving K chunks (a long prompt among short ones): the load where one prompt phase stalls
every running decode.

Per level, all client-side (queue wait included): req/s; p50/p99 TTFT (send to first token
event); p50/p99 time between tokens (gaps between a request's consecutive token events: the
stall a long prompt phase causes shows here); mean token rows per scheduler step (decodes,
repairs and prompt pieces) and the share of steps whose forward carried decodes and prompt
pieces together; peak working-cache memory (the admission pool's peak, slots x bytes a slot);
peak growth of the process's resident memory during the level (working caches, activations).
`--token-budget` and `--working-cache-mib` set the scheduler's budgets (`CacheConfig`).
"""

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx

from chunkcache.api import BackgroundServer, ServiceConfig, create_app
from chunkcache.bench.report import machine_line
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
    load: str  # "uniform" or "mixed" (every fourth request retrieves --mixed-top-k chunks)
    requests: int
    ok: int
    rejected: int
    failed: int
    wall_s: float
    ttfts_s: tuple[float, ...]
    gaps_s: tuple[float, ...]  # time between consecutive token events, over every request
    mean_rows: float  # token rows per scheduler step during the level (the scheduler's count)
    mixed_share: float  # steps carrying decodes and prompt pieces together, of all steps
    peak_cache_mib: float  # peak working-cache memory admitted during the level
    peak_rss_mib: float  # peak growth of resident memory during the level

    def row(self) -> str:
        def ms(values: tuple[float, ...], q: float) -> str:
            return f"{1000 * percentile(list(values), q):.0f}" if values else "n/a"

        return (f"| {self.mode} | {self.load} | {self.concurrency} | {self.requests} | {self.ok} | {self.rejected + self.failed} | "
                f"{self.ok / self.wall_s:.2f} | {ms(self.ttfts_s, 0.5)} | {ms(self.ttfts_s, 0.99)} | {ms(self.gaps_s, 0.5)} | "
                f"{ms(self.gaps_s, 0.99)} | {self.mean_rows:.1f} | {self.mixed_share:.0%} | {self.peak_cache_mib:.0f} | "
                f"{self.peak_rss_mib:.0f} |")


HEADER = ("| mode | load | concurrency | requests | ok | 503/errors | req/s | p50 TTFT ms | p99 TTFT ms | p50 between tokens ms | "
          "p99 between tokens ms | rows per step | steps with both | peak working cache MiB | peak RSS growth MiB |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


class PeakRss:
    """Samples the process's resident memory every 10 ms from /proc; `peak_mib` is the growth over the
    level's start."""

    def __init__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.base) / 2**20


async def stream_query(client: httpx.AsyncClient, body: dict) -> tuple[int, list[float]]:
    """(status, token event times from the send) of one streamed query."""
    t0 = time.perf_counter()
    times: list[float] = []
    async with client.stream("POST", "/v1/query", json=body | {"stream": True}) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, times
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "token" in event:
                times.append(time.perf_counter() - t0)
            elif "error" in event:
                return 500, times
    return 200, times


async def run_level(url: str, mode: str, concurrency: int, n: int, args, questions: list[str], scheduler, mixed: bool) -> Level:
    todo = iter(range(n))
    ttfts, gaps, statuses = [], [], []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in todo:  # the clients share one iterator: n requests in all
            top_k = args.mixed_top_k if mixed and i % 4 == 0 else args.top_k
            body = {"question": questions[i % len(questions)], "mode": mode, "top_k": top_k, "max_new_tokens": args.max_new_tokens}
            status, times = await stream_query(client, body)
            statuses.append(status)
            if status == 200 and times:
                ttfts.append(times[0])
                gaps.extend(b - a for a, b in zip(times, times[1:]))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    steps, rows, mixed_steps = scheduler.steps, scheduler.rows, scheduler.mixed_steps
    pool = scheduler.admission.pool
    pool.peak = pool.used
    with PeakRss() as rss:
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            t0 = time.perf_counter()
            await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
            wall = time.perf_counter() - t0
    return Level(mode, concurrency, "mixed" if mixed else "uniform", n, statuses.count(200), statuses.count(503),
                 sum(s not in (200, 503) for s in statuses), wall, tuple(ttfts), tuple(gaps),
                 (scheduler.rows - rows) / max(1, scheduler.steps - steps),
                 (scheduler.mixed_steps - mixed_steps) / max(1, scheduler.steps - steps),
                 pool.peak * scheduler.slot_bytes / 2**20, rss.peak_mib)


def prepare(client: httpx.Client, docs: list[dict], args, question: str) -> None:
    for start in range(0, len(docs), 64):  # the route takes a bounded batch
        client.post("/v1/documents", json=docs[start:start + 64]).raise_for_status()
    job = client.post("/v1/warm").json()
    while job["status"] == "running":
        time.sleep(0.5)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    if job["status"] != "succeeded":
        raise SystemExit(f"warm-up failed: {job}")
    for mode in args.modes:  # first request per mode pays one-time costs; not measured
        client.post("/v1/query", json={"question": question, "mode": mode, "top_k": args.top_k, "max_new_tokens": 2}).raise_for_status()


def corpus(args) -> tuple[list[dict], list[str]]:
    """(documents, questions) from --qa, --docs or the built-in paragraphs."""
    if args.qa:
        from chunkcache.evaluation import load_examples, resolve_data

        examples = load_examples(resolve_data(args.qa)[0], limit=args.qa_limit)
        docs, seen = [], set()
        for ex in examples:
            for p in ex.passages:
                if (p["title"], p["text"]) not in seen:
                    seen.add((p["title"], p["text"]))
                    docs.append({"id": f"p{len(docs)}", "title": p["title"], "text": p["text"]})
        return docs, [ex.question for ex in examples]
    if args.docs:
        return [{"id": d.id, "text": d.text, "title": d.title} for d in load_paths([args.docs])], QUESTIONS
    return [{"id": i, "title": t, "text": x} for i, t, x in CORPUS], QUESTIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=None, help="store directory (default: a temporary one)")
    parser.add_argument("--model", default=None, help="model dir / .gguf / None for the default (converted into the store)")
    parser.add_argument("--docs", default=None, help="folder or files of .md/.txt/.jsonl (default: built-in paragraphs)")
    parser.add_argument("--qa", default=None, help="QA JSONL or a shared set by name (2wikimqa, musique, ...): its passages are the "
                                                   "corpus and its questions are asked")
    parser.add_argument("--qa-limit", type=int, default=40, help="examples of --qa used (default: %(default)s)")
    parser.add_argument("--modes", default="full,blend", type=lambda s: [m for m in s.split(",") if m])
    parser.add_argument("--concurrency", default="1,4,16", type=lambda s: [int(c) for c in s.split(",") if c])
    parser.add_argument("--requests", type=int, default=12, help="requests per level, at least 2 x concurrency (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--mixed-top-k", type=int, default=None,
                        help="also run every concurrency with every fourth request retrieving this many chunks (e.g. 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--token-budget", type=int, default=None,
                        help=f"rows per scheduler step (default: CacheConfig's, {CacheConfig.token_budget})")
    parser.add_argument("--working-cache-mib", type=int, default=None,
                        help=f"working-cache memory of the requests running at once (default: CacheConfig's, "
                             f"{CacheConfig.working_cache_bytes // 2**20} MiB)")
    parser.add_argument("--workers", type=int, default=ServiceConfig.workers,
                        help="requests answered at once, decoded as one batch (default: %(default)s)")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    docs, questions = corpus(args)
    store = args.store or tempfile.mkdtemp(prefix="bench-service-")
    budgets = {"token_budget": args.token_budget} if args.token_budget else {}
    if args.working_cache_mib:
        budgets["working_cache_bytes"] = args.working_cache_mib * 2**20
    cache = ChunkCache(config=CacheConfig(store_dir=store, model=args.model, max_batch=max(args.workers, CacheConfig.max_batch),
                                          **budgets))
    config = ServiceConfig(queue_size=max(args.concurrency), workers=args.workers, request_timeout_s=600,
                           max_top_k=max(ServiceConfig.max_top_k, args.mixed_top_k or 0))
    levels = []
    loads = (False, True) if args.mixed_top_k else (False,)
    try:
        with BackgroundServer(create_app(cache, config)) as server, httpx.Client(base_url=server.url, timeout=600) as client:
            prepare(client, docs, args, questions[0])
            for mode in args.modes:
                for mixed in loads:
                    for c in args.concurrency:
                        level = asyncio.run(run_level(server.url, mode, c, max(args.requests, 2 * c), args, questions, cache.scheduler, mixed))
                        levels.append(level)
                        print(f"done: {level.row()}", flush=True)
    finally:
        cache.close()
    print(f"\n{len(docs)} documents, top_k={args.top_k}" + (f" (mixed: every fourth request {args.mixed_top_k})" if args.mixed_top_k else "")
          + f", max_new_tokens={args.max_new_tokens}, workers={args.workers}, queue_size={config.queue_size}; "
          f"token_budget={cache.config.token_budget}, working cache {cache.config.working_cache_bytes // 2**20} MiB; "
          "every time client-side, queueing included; rows per step = token rows per scheduler step.\nMachine: " + machine_line() + "\n")
    print(HEADER)
    for level in levels:
        print(level.row())


if __name__ == "__main__":
    main()
