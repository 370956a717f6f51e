"""End-to-end `ChunkCache.query()` TTFT in `full` and `blend` modes over a warm store.

Indexes every passage of the first N examples of a QA JSONL as one corpus, warms every chunk's
KV, then asks each question in both modes (interleaved) and reports median/p95 TTFT
(retrieval included) and the blend speedup.

    python scripts/bench_query.py --data ../shared/data/qa/2wikimqa.jsonl --limit 200 --questions 30
"""

import argparse
import json
import statistics
import time

from chunkcache.config import CacheConfig
from chunkcache.facade import ChunkCache
from chunkcache.stats import percentile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--store", default=".store/bench-query")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8")][: args.limit]
    docs, seen = [], set()
    for row in rows:
        for p in row["passages"]:
            key = (p["title"], p["text"])
            if key not in seen:
                seen.add(key)
                docs.append({"id": f"p{len(docs)}", "title": p["title"], "text": p["text"]})
    cc = ChunkCache(config=CacheConfig(store_dir=args.store))
    try:
        t0 = time.perf_counter()
        cc.add_documents(docs, progress=True)
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warmed = cc.warm_corpus(progress=True)
        warm_s = time.perf_counter() - t0
        ttft = {"full": [], "blend": []}
        for row in rows[: args.questions]:
            for mode in ("full", "blend"):
                ans = cc.query(row["question"], top_k=args.top_k, mode=mode, max_new_tokens=1)
                ttft[mode].append(ans.ttft_s)
    finally:
        cc.close()
    print(f"corpus: {len(docs)} documents; ingest {ingest_s:.1f} s ({len(docs) / ingest_s:.1f} docs/s); "
          f"warm-up of {warmed} chunks {warm_s:.1f} s ({warmed / max(warm_s, 1e-9):.1f} chunks/s)")
    print("| mode | n | TTFT median ms | TTFT p95 ms |\n|---|---|---|---|")
    for mode, values in ttft.items():
        print(f"| {mode} | {len(values)} | {statistics.median(values) * 1000:.0f} | {percentile(values, 0.95) * 1000:.0f} |")
    print(f"blend speedup (median): {statistics.median(ttft['full']) / statistics.median(ttft['blend']):.2f}x")


if __name__ == "__main__":
    main()
