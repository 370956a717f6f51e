"""Retrieval quality and speed of chunkcache.retrieval on a multi-hop QA sample.

All distinct passages (title, text) of ``--limit`` examples (after ``--offset``) become one
corpus; each question is then searched against all of them. Reported per variant:

- recall@5 / recall@10: share of supporting passages (``"supporting": true``) that have a
  chunk among the top-k hits, over all questions (micro average), plus the share of
  questions whose supporting passages were all found ("all@k");
- ingest throughput: chunks per second for ``Corpus.add_documents`` + ``flush`` (chunking,
  embedding, docstore and index writes), once per distinct ``title_in_embedding``;
- retrieval latency: p50/p95 of ``Corpus.search`` wall time (query embedding included).

Usage (``--threads 1`` avoids OpenMP spin-waiting on a shared, oversubscribed CPU):
    python scripts/bench_retrieval.py --data /work/shared/data/qa/2wikimqa.jsonl --limit 200
    python scripts/bench_retrieval.py --data .../2wikimqa.jsonl --offset 200 --limit 200 \\
        --variants dense,hybrid+title --threads 1
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

from chunkcache.retrieval import ChunkerConfig, Corpus, CorpusConfig, Document, Embedder
from chunkcache.stats import percentile

# name -> (title_in_embedding, retrieval). Variants that share title_in_embedding share one
# ingested corpus, reopened with another retrieval mode (retrieval is a query-time setting).
VARIANTS: dict[str, tuple[bool, str]] = {
    "dense": (False, "dense"),
    "dense+title": (True, "dense"),
    "bm25+title": (True, "bm25"),
    "hybrid": (False, "hybrid"),
    "hybrid+title": (True, "hybrid"),  # the default CorpusConfig
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
    p50_ms: float
    p95_ms: float


def load(path: str, offset: int, limit: int) -> tuple[list[Document], list[Example]]:
    """Distinct passages of examples [offset, offset+limit) as documents, and the questions."""
    ids: dict[tuple[str, str], str] = {}
    docs: list[Document] = []
    examples: list[Example] = []
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][offset:offset + limit]
    for row in rows:
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


def ingest(directory: str, docs: list[Document], tokenizer: object, embedder: Embedder,
           config: CorpusConfig) -> tuple[int, float]:
    """Build the corpus; returns (distinct chunks, chunks per second)."""
    with Corpus(directory, tokenizer, embedder, config) as corpus:
        start = time.perf_counter()
        corpus.add_documents(docs)
        corpus.flush()
        seconds = time.perf_counter() - start
        return corpus.num_chunks, corpus.num_chunks / seconds


def evaluate(name: str, directory: str, examples: list[Example], tokenizer: object,
             embedder: Embedder, config: CorpusConfig, ks: tuple[int, ...] = (5, 10)) -> Result:
    found = {k: 0 for k in ks}
    complete = {k: 0 for k in ks}
    latencies = []
    with Corpus(directory, tokenizer, embedder, config) as corpus:
        corpus.search(examples[0].question)  # warm-up: first-call allocations
        for ex in examples:
            start = time.perf_counter()
            hits = corpus.search(ex.question, top_k=max(ks))
            latencies.append(time.perf_counter() - start)
            for k in ks:
                got = ex.supporting & {h.doc_id for h in hits[:k]}
                found[k] += len(got)
                complete[k] += got == ex.supporting
    total = sum(len(ex.supporting) for ex in examples)
    return Result(
        variant=name,
        recall={k: found[k] / total for k in ks},
        all_found={k: complete[k] / len(examples) for k in ks},
        p50_ms=statistics.median(latencies) * 1e3,
        p95_ms=percentile(latencies, 0.95) * 1e3,
    )


def load_tokenizer(path: str | None) -> object:
    """The tokenizer at ``path``, or the default generator's (SmolLM2) from its GGUF file."""
    from transformers import AutoTokenizer

    if path:
        return AutoTokenizer.from_pretrained(path)
    from chunkcache.model_files import default_gguf_path

    gguf = default_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="QA JSONL (see /work/shared/data/qa/SOURCES.md)")
    parser.add_argument("--limit", type=int, default=200, help="number of examples")
    parser.add_argument("--offset", type=int, default=0, help="skip this many examples first")
    parser.add_argument("--tokenizer", default=os.environ.get("CHUNKCACHE_TOKENIZER"),
                        help="generator tokenizer dir (default: $CHUNKCACHE_TOKENIZER, else the "
                             "default generator's, read from its GGUF)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--max-tokens", type=int, default=256, help="chunk size in generator tokens")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and FAISS threads (0: library defaults)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.tokenizer)
    embedder = Embedder()
    docs, examples = load(args.data, args.offset, args.limit)
    n_sup = sum(len(e.supporting) for e in examples)
    print(f"{len(examples)} questions, {len(docs)} distinct passages, {n_sup} supporting passages")
    chunker = ChunkerConfig(max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as root:
        built: dict[bool, str] = {}
        for title in sorted({VARIANTS[n][0] for n in names}):
            built[title] = os.path.join(root, f"title={title}")
            config = CorpusConfig(chunker=chunker, title_in_embedding=title)
            chunks, rate = ingest(built[title], docs, tokenizer, embedder, config)
            print(f"ingest title_in_embedding={title}: {chunks} chunks, {rate:.1f} chunks/s "
                  "(chunking + embedding + docstore + index)")
        print(f"{'variant':<14} {'R@5':>6} {'R@10':>6} {'all@5':>6} {'all@10':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7}")
        for name in names:
            title, retrieval = VARIANTS[name]
            config = CorpusConfig(chunker=chunker, title_in_embedding=title, retrieval=retrieval)
            r = evaluate(name, built[title], examples, tokenizer, embedder, config)
            print(f"{r.variant:<14} {r.recall[5]:6.3f} {r.recall[10]:6.3f} {r.all_found[5]:6.3f} "
                  f"{r.all_found[10]:6.3f} {r.p50_ms:7.2f} {r.p95_ms:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
