"""`chunkcache bench`: TTFT vs context size, quality vs recompute ratio, peers and kernels, in one run.

Everything is measured in one process on one model load so that ratios hold on a noisy
machine: every repeat runs every variant once per context size, in an order rotated by the
repeat, so drift (another job, thermal state) hits every variant alike.

The chunk KV lives in a persistent store with the memory tier off (memory_bytes=0): every
load of a cached mode reads LMDB and decodes the entry, so load time is part of its TTFT.
The store is warm (written before timing, pages in the OS cache), which is the steady state
of a server whose corpus was precomputed.
"""

import statistics
from dataclasses import asdict, dataclass, field, replace

from tqdm.auto import tqdm

from chunkcache.bench.contexts import BenchContext, build_context
from chunkcache.bench.decode import measure_decode
from chunkcache.bench.peers import hf_generate_variant, hf_status, load_llamacpp, load_vllm, VllmPeer
from chunkcache.bench.variants import DEFAULT_PEERS, PEERS, Sample, chunkcache_variant
from chunkcache.config import DEVIATIONS, BlendConfig, CacheConfig
from chunkcache.errors import ConfigError
from chunkcache.evaluation import RunSpec, blend_name, evaluate, load_examples, resolve_data
from chunkcache.prompt import Passage
from chunkcache.stats import percentile


def default_selections() -> tuple[str, ...]:
    """The configured default selection, then "vattn" (the previous default) when it differs."""
    return tuple(dict.fromkeys((BlendConfig().deviation_of, "vattn")))


@dataclass(frozen=True)
class BenchSpec:
    """What one bench run measures. Built once by the CLI (presets: `--quick` or the default)."""

    data: str
    store: str
    model: str | None = None
    sizes: tuple[int, ...] = (2, 5, 10, 20)  # chunks per prompt in the TTFT sweep
    chunk_tokens: int = 256
    repeats: int = 3
    ttft_ratios: tuple[float, ...] = (0.05, 0.15, 0.3)
    quality_limit: int = 12  # examples in the quality sweep
    quality_ratios: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.3, 0.5, 1.0)
    # blend selections (BlendConfig.deviation_of) of the quality sweep, each at every ratio: one line each in pareto.png
    selections: tuple[str, ...] = field(default_factory=default_selections)
    adaptive_coverage: float = 0.5
    adaptive_max_ratio: float = 0.3
    max_new_tokens: int = 16
    decode_tokens: int = 32  # answer length of the decode-speed and peak-memory runs; 0 = skip them
    peers: tuple[str, ...] = DEFAULT_PEERS
    kernels: bool = False
    kernel_repeats: int = 20
    progress: bool = True

    def __post_init__(self):
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ConfigError(f"sizes must be chunk counts >= 1, got {self.sizes}")
        if self.chunk_tokens < 8 or self.repeats < 1 or self.quality_limit < 1 or self.max_new_tokens < 1:
            raise ConfigError(f"need chunk_tokens >= 8, repeats, quality_limit and max_new_tokens >= 1; got "
                              f"{self.chunk_tokens}, {self.repeats}, {self.quality_limit}, {self.max_new_tokens}")
        if self.decode_tokens < 0 or self.decode_tokens == 1:
            raise ConfigError(f"decode_tokens must be 0 (skip) or at least 2 (a first token and one decoded), got {self.decode_tokens}")
        for r in (*self.ttft_ratios, *self.quality_ratios, self.adaptive_max_ratio):
            if not 0.0 <= r <= 1.0:
                raise ConfigError(f"recompute ratios must be in [0, 1], got {r}")
        if not 0.0 < self.adaptive_coverage <= 1.0:
            raise ConfigError(f"adaptive_coverage must be in (0, 1], got {self.adaptive_coverage}")
        if not self.selections or any(sel not in DEVIATIONS for sel in self.selections):
            raise ConfigError(f"selections must be among {', '.join(DEVIATIONS)}, got {self.selections}")
        unknown = set(self.peers) - set(PEERS)
        if unknown:
            raise ConfigError(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")


def bench_cache_config(spec: BenchSpec) -> CacheConfig:
    """Persistent store, memory tier off: every chunk load of the bench is an LMDB read."""
    return CacheConfig(store_dir=spec.store, model=spec.model, memory_bytes=0, persist=True)


def summarize(samples: list[Sample]) -> dict:
    ttfts = [s.ttft_s for s in samples]
    loads = [s.load_s for s in samples if s.load_s is not None]
    return {
        "n": len(ttfts),
        "median_s": statistics.median(ttfts),
        "p95_s": percentile(ttfts, 0.95),
        "load_median_s": statistics.median(loads) if loads else None,
        "prompt_tokens": samples[0].prompt_tokens,
        "samples_s": [round(t, 5) for t in ttfts],
    }


def rotated(items: list, k: int) -> list:
    k %= max(1, len(items))
    return items[k:] + items[:k]


def _variants(cache, spec: BenchSpec, n_ctx: int):
    """chunkcache's modes, then the peers. Returns (variants, peer statuses, objects to close)."""
    variants = [chunkcache_variant(cache, "full"), chunkcache_variant(cache, "reuse")]
    variants += [chunkcache_variant(cache, "blend", r) for r in spec.ttft_ratios]
    variants.append(chunkcache_variant(cache, "ape"))
    statuses, closers = [], []
    if "hf" in spec.peers:
        variants.append(hf_generate_variant(cache))
        statuses.append(hf_status(cache))
    if "llamacpp" in spec.peers:
        peer, status = load_llamacpp(cache, spec.model, n_ctx)
        statuses.append(status)
        if peer is not None:
            variants += peer.variants(cache)
            closers.append(peer)
    if "vllm" in spec.peers:
        peer, status = load_vllm(cache, n_ctx)
        statuses.append(status)
        if peer is not None:
            variants += peer.variants(cache)
            closers.append(peer)
    return variants, statuses, closers


def bench_contexts(cache, examples, spec: BenchSpec) -> dict[int, BenchContext]:
    """One question over the first n chunks, for every size n of the sweep."""
    tok = cache.generator.tokenizer
    base = build_context(examples, lambda s: tok(s, add_special_tokens=False)["input_ids"],
                         lambda ids: tok.decode(ids), max(spec.sizes), spec.chunk_tokens)
    return {n: replace(base, chunks=base.chunks[:n]) for n in sorted(spec.sizes)}


def measure_ttft(cache, contexts: dict[int, BenchContext], spec: BenchSpec) -> dict:
    """Median and p95 TTFT of every variant at every context size, modes interleaved per repeat."""
    base = contexts[max(contexts)]
    cache.warm([Passage(c) for c in base.chunks], progress=spec.progress, desc="bench warm-up")
    chunk_lengths = [len(cache.prompt.passage_ids(Passage(c))) for c in base.chunks]
    n_ctx = len(cache.prompt.prefix_ids) + sum(chunk_lengths) + 2 * len(cache.prompt.suffix_ids(base.question)) + 64
    variants, statuses, closers = _variants(cache, spec, n_ctx)
    samples: dict[str, dict[int, list[Sample]]] = {v.name: {n: [] for n in contexts} for v in variants}
    try:
        smallest = contexts[min(contexts)]
        for v in tqdm(variants, desc="bench untimed pass", disable=not spec.progress):
            v.run(smallest)  # first-call costs (allocator, lazy init, llama.cpp load) stay out of the figures
        bar = tqdm(total=spec.repeats * len(contexts) * len(variants), desc="bench TTFT", unit="answer", disable=not spec.progress)
        for rep in range(spec.repeats):
            for n, ctx in contexts.items():
                for v in rotated(variants, rep + n):
                    bar.set_postfix_str(f"{n} chunks {v.name}", refresh=False)
                    samples[v.name][n].append(v.run(ctx))
                    bar.update(1)
        bar.close()
        # vLLM's decode speed, while its engine is up (the decode table's other rows are measured in-process)
        peer_decode = {"vllm": c.decode(cache, contexts[_headline(contexts)], spec.decode_tokens, spec.repeats)
                       for c in closers if isinstance(c, VllmPeer) and spec.decode_tokens}
    finally:
        for c in closers:
            c.close()
    table = {v.name: {"kind": v.kind, "by_size": {str(n): summarize(samples[v.name][n]) for n in contexts}} for v in variants}
    for n in contexts:
        full = table["full"]["by_size"][str(n)]["median_s"]
        for row in table.values():
            cell = row["by_size"][str(n)]
            cell["speedup_vs_full"] = full / cell["median_s"]
    return {
        "sizes": sorted(contexts),
        "chunk_tokens": spec.chunk_tokens,
        "chunk_lengths": chunk_lengths,  # tokens of each chunk as the prompt holds it
        "context_tokens": {str(n): sum(chunk_lengths[:n]) for n in contexts},
        "question": base.question,
        "repeats": spec.repeats,
        "order": "every repeat runs every size, variants rotated by (repeat + size); one untimed pass first",
        "variants": table,
        "peers": [asdict(s) for s in statuses],
        "peer_decode": peer_decode,
    }


def _headline(contexts: dict) -> int:
    """The context size of the decode-speed runs: 10 chunks, else the middle size."""
    sizes = sorted(contexts)
    return 10 if 10 in contexts else sizes[len(sizes) // 2]


# The repair the bench draws beside a default that does not repair: 10% of the blended context in
# the first decode step (README, "Repair while decoding: the trade").
REPAIR_OPTION = {"repair_ratio": 0.1, "repair_steps": 1}


def selection_lines(base: BlendConfig, selections: tuple[str, ...]) -> list[tuple[str, BlendConfig]]:
    """The blend configurations of the quality sweep, one line each in pareto.png.

    The configured default as it serves; the same selection with the other repair setting (when
    it repairs, "<sel>-norepair"; when it does not, "<sel>+repair" at REPAIR_OPTION), so the
    plot separates the two levers; and every other selection as it shipped, without repair
    (e.g. "vattn", the previous default).
    """
    norepair = {"repair_ratio": 0.0, "repair_steps": 0}
    lines = [(base.deviation_of, base)]
    if base.repair_ratio and base.repair_steps:
        lines.append((f"{base.deviation_of}-norepair", replace(base, **norepair)))
    else:
        lines.append((f"{base.deviation_of}+repair", replace(base, **REPAIR_OPTION)))
    lines += [(sel, replace(base, deviation_of=sel, **norepair)) for sel in selections if sel != base.deviation_of]
    return lines


def quality_runs(spec: BenchSpec) -> list[tuple[RunSpec, dict]]:
    """full first (the reference), reuse, ape, blend at every ratio for every selection, and the adaptive ratio."""
    base = bench_cache_config(spec).blend
    runs = [(RunSpec("full"), {"mode": "full", "ratio": 1.0}), (RunSpec("reuse"), {"mode": "reuse", "ratio": 0.0}),
            (RunSpec("ape"), {"mode": "ape", "ratio": 0.0})]
    for sel, blend in selection_lines(base, spec.selections):
        runs += [(RunSpec("blend", r, blend_name(r, sel), blend), {"mode": "blend", "ratio": r, "selection": sel})
                 for r in spec.quality_ratios]
    cov, cap = spec.adaptive_coverage, spec.adaptive_max_ratio
    adaptive = RunSpec("blend", cap, f"adaptive@{cov:g}", replace(base, recompute_ratio=cap, adaptive_coverage=cov))
    runs.append((adaptive, {"mode": "blend", "ratio": None, "selection": base.deviation_of, "adaptive_coverage": cov, "max_ratio": cap}))
    return runs


def measure_quality(cache, examples, spec: BenchSpec) -> dict:
    """Fidelity to full, F1 against gold, first-token agreement and KL, teacher-forced agreement per run, with
    95% bootstrap intervals (chunkcache.evaluation)."""
    runs = quality_runs(spec)
    result = evaluate(cache, examples, [r for r, _ in runs], max_new_tokens=spec.max_new_tokens, progress=spec.progress)
    for run, meta in runs:
        result["runs"][run.name].update(meta)
    result["n_examples"] = len(examples)
    result["max_new_tokens"] = spec.max_new_tokens
    result["selections"] = list(spec.selections)
    result["default_selection"] = bench_cache_config(spec).blend.deviation_of
    return result


def measure_kernels(cache, spec: BenchSpec) -> list[dict]:
    from chunkcache.bench.kernels import run_kernel_bench

    s = cache.generator.spec
    timings = run_kernel_bench(device="auto", layers=s.n_layers, heads=s.n_kv_heads, head_dim=s.head_dim,
                               chunks=10, tokens_per_chunk=spec.chunk_tokens, repeats=spec.kernel_repeats)
    return [asdict(t) for t in timings]


def store_description(cache) -> dict:
    stats = cache.stats()
    return {
        "tiers": [t.name for t in stats.tiers],
        "memory_tier": "off (memory_bytes=0): every chunk load reads LMDB and decodes",
        "codec": cache.store.codec.tag,
        "hits": stats.hits, "misses": stats.misses, "entries": stats.entries, "bytes": stats.bytes,
        "get_ms_p50": stats.get_ms.p50_ms, "get_ms_p95": stats.get_ms.p95_ms,
    }


def run_bench(spec: BenchSpec) -> dict:
    """Every measurement of the bench on one ChunkCache; returns the report dict (bench.json)."""
    from chunkcache.bench.report import describe_machine
    from chunkcache.facade import ChunkCache

    path, dataset = resolve_data(spec.data)
    result = {"machine": describe_machine(), "spec": asdict(spec), "dataset": dataset}
    examples = load_examples(path)
    cache = ChunkCache(config=bench_cache_config(spec))
    try:
        result["model"] = {"dir": str(cache.model_dir), "fingerprint": cache.generator.fingerprint, **asdict(cache.generator.spec)}
        contexts = bench_contexts(cache, examples, spec)
        result["ttft"] = measure_ttft(cache, contexts, spec)
        if spec.decode_tokens:
            result["decode"] = measure_decode(cache, contexts[_headline(contexts)], contexts[max(contexts)], cache.config.blend.recompute_ratio,
                                              hf="hf" in spec.peers, max_new_tokens=spec.decode_tokens, repeats=spec.repeats)
            result["decode"]["variants"].update(result["ttft"].pop("peer_decode"))
        result["quality"] = measure_quality(cache, examples[: spec.quality_limit], spec)
        result["kernels"] = measure_kernels(cache, spec) if spec.kernels else None
        result["store"] = store_description(cache)
    finally:
        cache.close()
    result["machine"]["loadavg_end"] = describe_machine()["loadavg"]
    return result
