"""Exact repeats: a context answered once by a full prefill comes back. Same tokens? How fast?

`python -m chunkcache.bench.exact --data 2wikimqa --limit 50 --store S`: for each example (its
passages in file order, a different prompt each), a full answer stores the chain entries; then,
interleaved per example, the default blend answer of the same prompt (its passages and its
question now exact: one prompt token computed)
and a `reuse` answer without chain entries (per-chunk entries placed, only the question
prefilled: the cheapest inexact answer). Reports how many repeats gave the full prefill's exact
tokens, and their TTFT against reuse's (median ratio, with a 95% bootstrap interval).
"""

import argparse
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from chunkcache.environment import store_dir


def run(store: str, data: str, limit: int, max_new_tokens: int, repeats: int, model: str | None, progress: bool) -> dict:
    from chunkcache import ChunkCache
    from chunkcache.bench.report import machine_line
    from chunkcache.evaluation import load_examples, resolve_data
    from chunkcache.stats import bootstrap_ci, median_ratio

    path, dataset = resolve_data(data)
    examples = load_examples(path, limit)
    rows = []
    with ChunkCache(store_dir=store, model=model) as cache:
        cache.warm([p for ex in examples for p in ex.passages], progress=progress)
        for ex in tqdm(examples, desc="exact repeats", disable=not progress):
            passages = list(ex.passages)
            full = cache.answer(ex.question, passages, mode="full", max_new_tokens=max_new_tokens, chain=True)
            exact, reuse = [], []
            for _ in range(repeats):  # interleaved, so both see the same machine
                again = cache.answer(ex.question, passages, max_new_tokens=max_new_tokens)
                exact.append(again)
                reuse.append(cache.answer(ex.question, passages, mode="reuse", max_new_tokens=max_new_tokens, chain=False))
            rows.append({
                "id": ex.id, "context_tokens": full.context_tokens,
                "same_tokens": all(a.token_ids == full.token_ids for a in exact),
                "all_exact": all(p.cache == "exact" for a in exact for p in a.passages),
                "question_exact": all(a.question_exact for a in exact),
                "full_ttft_s": full.ttft_s,
                "exact_ttft_s": statistics.median(a.ttft_s for a in exact),
                "reuse_ttft_s": statistics.median(a.ttft_s for a in reuse),
            })
    pairs = [(r["exact_ttft_s"], r["reuse_ttft_s"]) for r in rows]
    return {
        "dataset": dataset, "n": len(rows), "machine": machine_line(),
        "same_tokens": sum(r["same_tokens"] for r in rows), "all_exact": sum(r["all_exact"] for r in rows),
        "question_exact": sum(r["question_exact"] for r in rows),
        "exact_over_reuse_ttft": median_ratio(pairs), "exact_over_reuse_ttft_ci": bootstrap_ci(pairs, median_ratio),
        "exact_ttft_median_s": statistics.median(r["exact_ttft_s"] for r in rows),
        "reuse_ttft_median_s": statistics.median(r["reuse_ttft_s"] for r in rows),
        "full_ttft_median_s": statistics.median(r["full_ttft_s"] for r in rows),
        "rows": rows,
    }


def main(argv=None) -> int:
    import json

    p = argparse.ArgumentParser(prog="python -m chunkcache.bench.exact", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="2wikimqa", help="QA JSONL or a shared set by name (default: %(default)s)")
    p.add_argument("--limit", type=int, default=50, help="examples, one prompt each (default: %(default)s)")
    p.add_argument("--store", default=store_dir())
    p.add_argument("--model", default=None)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per example and mode (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(args.store, args.data, args.limit, args.max_new_tokens, args.repeats, args.model, not args.quiet)
    lo, hi = r["exact_over_reuse_ttft_ci"]
    print(f"{r['dataset']}: {r['same_tokens']} of {r['n']} exact repeats gave the full prefill's tokens "
          f"({r['all_exact']} with every passage exact, {r['question_exact']} with the question too); TTFT median exact {1e3 * r['exact_ttft_median_s']:.0f} ms, "
          f"reuse {1e3 * r['reuse_ttft_median_s']:.0f} ms, full {1e3 * r['full_ttft_median_s']:.0f} ms; "
          f"exact / reuse {r['exact_over_reuse_ttft']:.2f}x [{lo:.2f}, {hi:.2f}]. Machine: {r['machine']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
