"""Which CacheBlend selection gives the best fidelity, and the fidelity-vs-ratio curve.

One model load, one warm-up, `full` answered once per example; every variant measured in the
same run against it. Prints a Markdown table and writes JSON.

    python scripts/bench_selection.py --data ../shared/data/qa/2wikimqa.jsonl --limit 50 --json out/selection.json
"""

import argparse
import json
from pathlib import Path

from chunkcache.config import BlendConfig, CacheConfig
from chunkcache.evaluation import RunSpec, evaluate, format_table, load_examples
from chunkcache.facade import ChunkCache


def variants(curve: list[float]) -> list[RunSpec]:
    runs = [RunSpec("full"), RunSpec("reuse"), RunSpec("ape")]
    runs += [RunSpec("blend", r, f"blend v@L1 r={r:g}", BlendConfig(recompute_ratio=r, deviation_of="v")) for r in curve]
    at = 0.15
    runs += [
        RunSpec("blend", at, "blend k@L1 r=0.15", BlendConfig(deviation_of="k")),
        RunSpec("blend", at, "blend v@L0 r=0.15", BlendConfig(check_layer=0, deviation_of="v")),
        RunSpec("blend", at, "blend v@L2 r=0.15", BlendConfig(check_layer=2, deviation_of="v")),
        RunSpec("blend", at, "blend vattn@L1 r=0.15", BlendConfig(deviation_of="vattn")),
        RunSpec("blend", at, "blend vattn@L2 r=0.15", BlendConfig(deviation_of="vattn", check_layer=2)),
        RunSpec("blend", at, "blend v@L3 r=0.15", BlendConfig(check_layer=3, deviation_of="v")),
        RunSpec("blend", at, "blend v@L1 sink4 r=0.15", BlendConfig(sink_tokens=4, deviation_of="v")),
        RunSpec("blend", 0.3, "blend v@L1 adaptive0.5 max0.3", BlendConfig(adaptive_coverage=0.5, deviation_of="v")),
    ]
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--store", default=".store/bench")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--curve", default="0,0.05,0.15,0.3,0.5,1.0")
    ap.add_argument("--json", default="out/selection.json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared machine)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cache = ChunkCache(config=CacheConfig(store_dir=args.store))
    try:
        runs = variants([float(x) for x in args.curve.split(",")])
        result = evaluate(cache, load_examples(args.data, args.limit), runs, max_new_tokens=args.max_new_tokens)
    finally:
        cache.close()
    print(format_table(result))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
