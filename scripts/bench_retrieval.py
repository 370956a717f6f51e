"""Retrieval quality and speed of chunkcache.retrieval on a multi-hop QA sample.

All distinct passages (title, text) of the first ``--limit`` examples become one corpus;
each question is then searched against all of them. Reported per variant:

- recall@5 / recall@10: share of supporting passages (``"supporting": true``) that have a
  chunk among the top-k hits, over all questions (micro average), plus the share of
  questions whose supporting passages were all found ("all@k");
- ingest throughput: chunks per second for ``Corpus.add_documents`` (chunking, embedding,
  docstore and index writes);
- retrieval latency: p50/p95 of ``Corpus.search`` wall time (query embedding included).

Usage:
    python scripts/bench_retrieval.py --data /work/shared/data/qa/2wikimqa.jsonl \\
        --limit 200 --tokenizer /tmp/smol
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

from chunkcache.retrieval import Corpus, CorpusConfig, Document, Embedder

VARIANTS: dict[str, dict[str, object]] = {
    "dense": {"retrieval": "dense", "title_in_embedding": False},
    "dense+title": {"retrieval": "dense", "title_in_embedding": True},
    "bm25+title": {"retrieval": "bm25", "title_in_embedding": True},
    "hybrid": {"retrieval": "hybrid", "title_in_embedding": False},
    "hybrid+title": {"retrieval": "hybrid", "title_in_embedding": True},
}


@dataclass(frozen=True)
class Example:
    question: str
    supporting: frozenset[str]  # doc ids


@dataclass(frozen=True)
class Result:
    variant: str
    recall: dict[int, float]
    all_found: dict[int, float]
    chunks: int
    chunks_per_s: float
    p50_ms: float
    p95_ms: float


def load(path: str, limit: int) -> tuple[list[Document], list[Example]]:
    """Distinct passages as documents (id by first appearance) and the questions."""
    ids: dict[tuple[str, str], str] = {}
    docs: list[Document] = []
    examples: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(examples) >= limit:
                break
            row = json.loads(line)
            supporting = set()
            for p in row["passages"]:
                key = (p["title"], p["text"])
                if key not in ids:
                    ids[key] = f"p{len(ids):05d}"
                    docs.append(Document(id=ids[key], text=p["text"], title=p["title"]))
                if p["supporting"]:
                    supporting.add(ids[key])
            examples.append(Example(row["question"], frozenset(supporting)))
    return docs, examples


def run(name: str, overrides: dict[str, object], docs: list[Document], examples: list[Example],
        tokenizer: object, embedder: Embedder, ks: tuple[int, ...]) -> Result:
    config = CorpusConfig(**overrides)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as directory, Corpus(directory, tokenizer, embedder, config) as corpus:
        start = time.perf_counter()
        corpus.add_documents(docs)
        ingest_s = time.perf_counter() - start
        chunks = corpus.num_chunks
        found = {k: 0 for k in ks}
        complete = {k: 0 for k in ks}
        latencies = []
        for ex in examples:
            start = time.perf_counter()
            hits = corpus.search(ex.question, top_k=max(ks))
            latencies.append(time.perf_counter() - start)
            for k in ks:
                got = ex.supporting & {h.doc_id for h in hits[:k]}
                found[k] += len(got)
                complete[k] += got == ex.supporting
    total = sum(len(ex.supporting) for ex in examples)
    q = statistics.quantiles(latencies, n=20)
    return Result(
        variant=name,
        recall={k: found[k] / total for k in ks},
        all_found={k: complete[k] / len(examples) for k in ks},
        chunks=chunks,
        chunks_per_s=chunks / ingest_s,
        p50_ms=statistics.median(latencies) * 1e3,
        p95_ms=q[18] * 1e3,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="QA JSONL (see /work/shared/data/qa/SOURCES.md)")
    parser.add_argument("--limit", type=int, default=200, help="first N examples")
    parser.add_argument("--tokenizer", default=os.environ.get("CHUNKCACHE_TOKENIZER"),
                        help="generator tokenizer dir (default: $CHUNKCACHE_TOKENIZER)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--max-tokens", type=int, default=256, help="chunk size in generator tokens")
    args = parser.parse_args(argv)
    if not args.tokenizer:
        parser.error("--tokenizer (or CHUNKCACHE_TOKENIZER) is required")
    from transformers import AutoTokenizer

    from chunkcache.retrieval import ChunkerConfig

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    embedder = Embedder()
    docs, examples = load(args.data, args.limit)
    n_sup = sum(len(e.supporting) for e in examples)
    print(f"{len(examples)} questions, {len(docs)} distinct passages, {n_sup} supporting", file=sys.stderr)
    print(f"{'variant':<14} {'R@5':>6} {'R@10':>6} {'all@5':>6} {'all@10':>6} {'chunks':>6} "
          f"{'chunk/s':>8} {'p50 ms':>7} {'p95 ms':>7}")
    for name in args.variants.split(","):
        overrides = dict(VARIANTS[name], chunker=ChunkerConfig(max_tokens=args.max_tokens))
        r = run(name, overrides, docs, examples, tokenizer, embedder, ks=(5, 10))
        print(f"{r.variant:<14} {r.recall[5]:6.3f} {r.recall[10]:6.3f} {r.all_found[5]:6.3f} "
              f"{r.all_found[10]:6.3f} {r.chunks:6d} {r.chunks_per_s:8.1f} {r.p50_ms:7.2f} "
              f"{r.p95_ms:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
