"""`chunkcache bench`: the sub-command's options, presets and entry point."""

import argparse
from pathlib import Path

from chunkcache.bench.variants import DEFAULT_PEERS, PEERS
from chunkcache.environment import store_dir

# Sized for 2 quiet CPU cores and the default model: the default preset takes about 13-15 minutes,
# --quick about 3 (the 20-chunk size alone costs --quick about 1.5 minutes more: add it with --sizes).
PRESETS = {
    "default": {"sizes": (2, 5, 10, 20), "repeats": 3, "limit": 12, "kernel_repeats": 20},
    "quick": {"sizes": (2, 5, 10), "repeats": 1, "limit": 3, "kernel_repeats": 5},
}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected chunk counts >= 1 separated by commas, e.g. 2,5,10,20; got {text!r}")
    return values


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected ratios in [0, 1] separated by commas, e.g. 0,0.15,1; got {text!r}")
    return values


def _peers(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip() and x.strip() != "none")
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peers {unknown}; choose from {', '.join(PEERS)} or 'none'")
    return names


def _codecs(text: str) -> tuple[str, ...]:
    from chunkcache.names import CODECS

    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not names or any(n not in CODECS for n in names):
        raise argparse.ArgumentTypeError(f"expected codecs among {', '.join(CODECS)} separated by commas; got {text!r}")
    return names


def _selections(text: str) -> tuple[str, ...]:
    from chunkcache.config import DEVIATIONS  # no torch: config imports only the prompt settings

    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not names or any(n not in DEVIATIONS for n in names):
        raise argparse.ArgumentTypeError(f"expected blend selections among {', '.join(DEVIATIONS)} separated by commas; got {text!r}")
    return names


def add_bench_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="TTFT vs context size, quality vs recompute ratio, and peers (HF generate, llama.cpp) in one run",
        description="Measure in one run, so ratios hold on a noisy machine: (1) TTFT of full, reuse, blend (r = 0.05, 0.15, 0.3) "
        "and ape against 2-20 chunks of ~256 tokens cut from the data's passages, chunk KV read from a warm LMDB store "
        "(memory tier off), beside Hugging Face generate and llama.cpp (llama-cpp-python, optional) on the same tokens; "
        "(2) fidelity to full, F1 against gold, first-token agreement and KL, teacher-forced agreement (with 95% bootstrap "
        "intervals) for each recompute ratio with two selections (the default and vattn, the previous default; pareto.png "
        "plots speedup vs fidelity for both) and the adaptive ratio, on the examples as given; (3) with --kernels, the kernel "
        "micro-benchmark; (4) decode speed after the first token and the peak memory one answer adds, per mode and for HF "
        "generate. Writes DIR/bench.json, DIR/summary.md and PNG plots. The default preset takes about 15 minutes on 2 CPU cores, --quick about 3.")
    p.add_argument("--data", required=True, help="QA JSONL (question, answers, passages[{title,text}]), or a shared set by name: 2wikimqa, hotpotqa, hotpotqa_fullwiki, musique")
    p.add_argument("--out", required=True, help="output directory for bench.json, summary.md and the plots")
    p.add_argument("--quick", action="store_true", help="the short preset: sizes 2,5,10, one repeat, 3 examples (about 3 minutes)")
    p.add_argument("--limit", type=int, default=None, help="examples in the quality sweep (default: 12, --quick 3); the TTFT sweep reads what it needs")
    p.add_argument("--store", default=store_dir(),
                   help="store directory: converted model and the KV store the bench warms (default: %(default)s, or $CHUNKCACHE_STORE)")
    p.add_argument("--model", default=None, help="'default' (SmolLM2-135M-Instruct), a local Hugging Face checkpoint dir, or a .gguf file")
    p.add_argument("--kernels", action="store_true", help="also run chunkcache.bench.kernels and include its table")
    t = p.add_argument_group("sizes and repeats")
    t.add_argument("--sizes", type=_ints, default=None, help="chunks per prompt in the TTFT sweep (default: 2,5,10,20; --quick 2,5,10)")
    t.add_argument("--repeats", type=int, default=None, help="timed repeats per variant and size (default: 3, --quick 1)")
    t.add_argument("--chunk-tokens", type=int, default=256, help="tokens per chunk in the TTFT sweep (default: %(default)s)")
    t.add_argument("--ratios", type=_ratios, default=(0.0, 0.05, 0.1, 0.15, 0.3, 0.5, 1.0),
                   help="blend ratios of the quality sweep (default: 0,0.05,0.1,0.15,0.3,0.5,1)")
    t.add_argument("--selections", type=_selections, default=None,
                   help="blend selections of the quality sweep, each at every ratio (default: the configured default and vattn)")
    t.add_argument("--adaptive-coverage", type=float, default=0.5, help="the adaptive run's deviation coverage (default: %(default)s)")
    t.add_argument("--adaptive-max-ratio", type=float, default=0.3, help="the adaptive run's cap on the ratio (default: %(default)s)")
    t.add_argument("--max-new-tokens", type=int, default=16, help="answer length in the quality sweep (default: %(default)s)")
    t.add_argument("--decode-tokens", type=int, default=32,
                   help="answer length of the decode-speed (tokens/s after the first, at 10 chunks) and peak-memory (largest size) "
                   "runs of full, reuse, blend and HF generate; 0 skips them (default: %(default)s)")
    t.add_argument("--peers", type=_peers, default=DEFAULT_PEERS,
                   help="peers to time: any of hf,llamacpp,vllm or none (default: hf,llamacpp; vllm needs scripts/setup_vllm.sh)")
    p.add_argument("--codecs", type=_codecs, nargs="?", const=_codecs("fp16,int8,int4,kvq4,kvq3,ans20v10,ans16,ans8v4,st4,st6"), default=None,
                   help="instead of the above: per codec (default list if none given) bytes per token, compression vs fp16, load ms "
                   "per 256-token chunk (LMDB, Redis) and blend's fidelity / first-token KL against an fp16 store, on --limit "
                   "examples (default 100); writes DIR/codecs.json and DIR/codecs.md (chunkcache.bench.codecs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for --codecs (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)
    return p


def spec_from_args(args):
    from chunkcache.bench.runner import BenchSpec

    preset = PRESETS["quick" if args.quick else "default"]
    chosen = {"selections": args.selections} if args.selections else {}
    return BenchSpec(
        **chosen, data=args.data, store=args.store, model=args.model,
        sizes=args.sizes or preset["sizes"], chunk_tokens=args.chunk_tokens,
        repeats=args.repeats or preset["repeats"], quality_limit=args.limit or preset["limit"],
        quality_ratios=args.ratios, adaptive_coverage=args.adaptive_coverage, adaptive_max_ratio=args.adaptive_max_ratio,
        max_new_tokens=args.max_new_tokens, decode_tokens=args.decode_tokens, peers=args.peers, kernels=args.kernels,
        kernel_repeats=preset["kernel_repeats"], progress=not args.quiet,
    )


def cmd_bench(args) -> int:
    from chunkcache.bench.plots import write_plots
    from chunkcache.bench.report import write_json, write_summary
    from chunkcache.bench.runner import run_bench

    if args.codecs:
        from chunkcache.bench.codecs import cmd_codecs

        return cmd_codecs(args)
    spec = spec_from_args(args)
    out = Path(args.out)
    result = run_bench(spec)
    json_path = write_json(result, out)
    plots = write_plots(result, out)
    summary_path, text = write_summary(result, out, [p.name for p in plots])
    print(text)
    print(f"wrote {json_path}, {summary_path}, " + ", ".join(str(p) for p in plots))
    return 0
