"""`chunkcache bench --codecs`: what each codec costs and what it changes in blend's answers.

Per codec, in one run on the same examples:
- size: bytes per context token of the stored entries (header, scales and models included) and
  the compression against fp16 on the same chunks; for entropy-coded codecs also the bits a
  value of the codes alone;
- load: ms per 256-token chunk of the model's own KV from LMDB and from Redis (tier get +
  checksum + decode to the stored tensors + the fused dequantize-and-RoPE into a working
  buffer: what placing a hit costs), beside the time to recompute the same 10 chunks;
- quality: blend answers with the chunk KV stored in that codec against the same answers with
  an fp16 store: the change of blend's fidelity to full prefill and of its first-token KL to
  full (each with a paired 95% bootstrap interval over the examples), and the codec's own
  fidelity and first-token KL to the fp16-store answer.
Full prefill is answered once per example (it never reads the store).
"""

import contextlib
import json
import shutil
import socket
import subprocess
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from chunkcache.errors import ConfigError
from chunkcache.evaluation import _answer_text, load_examples, resolve_data
from chunkcache.kernels import lossless_codec
from chunkcache.names import CODECS
from chunkcache.scores import kl_divergence, token_f1
from chunkcache.stats import bootstrap_ci

DEFAULT_CODECS = ("fp16", "int8", "int4", "kvq4", "kvq3", "ans20v10", "ans16", "ans8v4", "st4", "st6")
BASELINE = "fp16"  # every codec is compared with an fp16 store (the report's *_fp16 columns)
SOURCE = lossless_codec(torch.float32).name  # the model runs in float32: its exact KV, computed once


@dataclass(frozen=True)
class CodecBenchSpec:
    data: str
    store: str
    model: str | None = None
    codecs: tuple[str, ...] = DEFAULT_CODECS
    limit: int = 100
    max_new_tokens: int = 16
    recompute_ratio: float | None = None  # None: the configured default
    load_chunks: int = 10
    load_tokens: int = 256
    load_repeats: int = 5
    redis_url: str | None = None  # None: start a redis-server on a free loopback port
    n_resamples: int = 2000
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown or not self.codecs:
            raise ConfigError(f"unknown codecs {unknown or self.codecs}; choose from {', '.join(CODECS)}")
        if self.limit < 1 or self.max_new_tokens < 1 or self.load_chunks < 1 or self.load_tokens < 8 or self.load_repeats < 1:
            raise ConfigError(f"need limit, max_new_tokens, load_chunks, load_repeats >= 1 and load_tokens >= 8; got "
                              f"{self.limit}, {self.max_new_tokens}, {self.load_chunks}, {self.load_repeats}, {self.load_tokens}")


def parse_codecs(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [n for n in names if n not in CODECS]
    if unknown or not names:
        raise ValueError(f"unknown codecs {unknown or text!r}; choose from {', '.join(CODECS)}")
    return names


# -- quality ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    text: str
    first_logprobs: torch.Tensor  # [V]
    first_token: int


def _answer(cache, ex, mode: str, spec: CodecBenchSpec) -> Answered:
    from chunkcache.sampling import SamplingParams

    ans = cache.answer(ex.question, list(ex.passages), mode=mode, recompute_ratio=spec.recompute_ratio if mode == "blend" else None,
                       max_new_tokens=spec.max_new_tokens, return_logprobs=True, sampling=SamplingParams(ignore_eos=True), chain=False)
    _, text = _answer_text(cache, ans)
    return Answered(text, ans.first_logprobs, ans.token_ids[0])


def _open(model_dir: Path, root: Path, codec: str):
    from chunkcache.facade import ChunkCache

    # memory tier off: every hit is an LMDB read and a decode, as on a server past its RAM budget
    return ChunkCache(store_dir=str(root / "store"), model=str(model_dir), codec=codec, memory_bytes=0, persist=True,
                      chain_entries=False)


def _transcode(cache, chunk_ids: list[list[int]], source_bytes: int) -> int:
    """Store every chunk's fp32 entry again in `cache`'s codec; returns the bytes of that codec's
    entries (`source_bytes`, what the warm-up stored, when the codec is the source's own: its
    entries are the warm-up's).

    The model computes each chunk once (the fp32 warm-up); every codec encodes the same KV."""
    from chunkcache.storage import chunk_key

    before = cache.stats().bytes
    for ids in chunk_ids:
        src = chunk_key(cache.engine.gen.fingerprint, cache.prompt.prefix_digest, ids, SOURCE)
        if cache.chunks.key(ids) == src:
            return source_bytes
        kv = cache.store.get(src)
        if kv is None:
            raise ConfigError(f"the {SOURCE} warm-up entry of a {len(ids)}-token chunk is missing from the bench store")
        cache.store.put_many([(cache.chunks.key(ids), kv)])
    return cache.stats().bytes - before


def measure_codec_quality(spec: CodecBenchSpec, model_dir: Path, root: Path, examples,
                          on_codec: Callable[[dict], None] = lambda quality: None) -> dict:
    """{codec: summary} in spec.codecs' order after fp16; `on_codec` gets the summaries so far
    after each codec (a long run keeps what it measured)."""
    from chunkcache.prompt import as_passage

    passages = list({(p["title"], p["text"]): p for ex in examples for p in ex.passages}.values())
    with _open(model_dir, root, SOURCE) as cache:
        cache.warm(passages, progress=spec.progress, desc=f"warm-up ({SOURCE}, once)")
        source_bytes = cache.stats().bytes
        chunk_ids = [cache.prompt.passage_ids(as_passage(p)) for p in passages]
    tokens = sum(map(len, chunk_ids))
    full, base, out = [], [], {}
    order = [BASELINE] + [c for c in spec.codecs if c != BASELINE]
    for codec in order:
        with _open(model_dir, root, codec) as cache:
            size = _transcode(cache, chunk_ids, source_bytes)
            runs = []
            for ex in tqdm(examples, desc=f"blend {codec}", disable=not spec.progress):
                if codec == BASELINE:
                    full.append(_answer(cache, ex, "full", spec))
                runs.append(_answer(cache, ex, "blend", spec))
            misses = cache.stats().misses
            if misses:
                raise ConfigError(f"{codec}: {misses} chunk lookups missed the transcoded entries; the comparison is not valid")
        if codec == BASELINE:
            base = runs
        fid = [token_f1(r.text, f.text) for r, f in zip(runs, full)]
        kl = [kl_divergence(f.first_logprobs, r.first_logprobs) for r, f in zip(runs, full)]
        base_fid = [token_f1(b.text, f.text) for b, f in zip(base, full)]
        base_kl = [kl_divergence(f.first_logprobs, b.first_logprobs) for b, f in zip(base, full)]
        rows = {
            "fidelity": fid, "first_token_kl": kl,
            "fidelity_change": [a - b for a, b in zip(fid, base_fid)],
            "first_token_kl_change": [a - b for a, b in zip(kl, base_kl)],
            "fidelity_to_fp16": [token_f1(r.text, b.text) for r, b in zip(runs, base)],
            "kl_to_fp16": [kl_divergence(b.first_logprobs, r.first_logprobs) for r, b in zip(runs, base)],
            "first_token_agreement_fp16": [float(r.first_token == b.first_token) for r, b in zip(runs, base)],
        }
        rep = {"n": len(runs), "bytes": size, "tokens": tokens,
               "bytes_per_token": size / tokens, "compression_vs_fp16": (out[BASELINE]["bytes"] if out else size) / size}
        for name, values in rows.items():
            rep[name] = statistics.fmean(values)
            rep[f"{name}_lo"], rep[f"{name}_hi"] = bootstrap_ci(values, n_resamples=spec.n_resamples, seed=spec.seed)
        out[codec] = rep
        out[codec]["per_example"] = {name: [round(v, 6) for v in values] for name, values in rows.items()}
        on_codec(out)
    return out


# -- size of the codes and load time ----------------------------------------------------------


def code_bits(kv: torch.Tensor, codec: str) -> float | None:
    """Bits a value of an entropy-coded codec's code stream alone (None for other codecs)."""
    from chunkcache.kernels import Packing, layout
    from chunkcache.storage.grouped_codec import encode

    if layout(codec).packing not in (Packing.ENTROPY, Packing.STEPPED):
        return None
    stats = encode(kv, codec, 64)[1]
    return sum(s.code_bits + s.model_bits for s in stats) / max(1, sum(s.values for s in stats))


@contextlib.contextmanager
def redis_server(url: str | None):
    """The given server, or a redis-server of our own on a free loopback port (no persistence;
    as scripts/bench_storage.py starts it)."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError("no redis URL and no redis-server to start: apt-get install -y redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--maxmemory", "2gb", "--maxmemory-policy", "allkeys-lru"],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise ConfigError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


def _load_chunks(model_dir: Path, root: Path, spec: CodecBenchSpec, examples):
    """The model's KV of `load_chunks` chunks of `load_tokens` tokens cut from the examples' text,
    the time to compute them (what a miss costs), and the model's RoPE settings."""
    from chunkcache.chunk_kv import compute_chunks, compute_prefix
    from chunkcache.facade import ChunkCache

    with ChunkCache(store_dir=str(root / "recompute"), model=str(model_dir), persist=False) as cache:
        need = spec.load_chunks * spec.load_tokens
        ids: list[int] = []
        for p in (p for ex in examples for p in ex.passages):
            ids += cache.generator.tokenizer(p["text"])["input_ids"]
            if len(ids) >= need:
                break
        if len(ids) < need:
            raise ConfigError(f"the examples hold {len(ids)} tokens, fewer than {spec.load_chunks} x {spec.load_tokens}")
        chunks = [ids[i * spec.load_tokens : (i + 1) * spec.load_tokens] for i in range(spec.load_chunks)]
        with torch.inference_mode():
            prefix = compute_prefix(cache.engine, cache.prompt.prefix_ids)
            compute_chunks(cache.engine, prefix, chunks[:1])  # warm the kernels once
            t = time.perf_counter()
            kvs = compute_chunks(cache.engine, prefix, chunks)
            recompute_ms = (time.perf_counter() - t) * 1e3
            positions = torch.arange(prefix.length, prefix.length + spec.load_tokens)
            inv_freq, scaling = cache.engine.gen.rope_frequencies(positions)
    return [kv.clone() for kv in kvs], recompute_ms, positions, inv_freq, scaling


def measure_codec_loads(spec: CodecBenchSpec, model_dir: Path, root: Path, examples) -> dict:
    from chunkcache.kernels import dequant_rope
    from chunkcache.storage import CodecSpec, LmdbTier, RedisConfig, chunk_key, decode_payload, encode_kv
    from chunkcache.storage.redis_tier import RedisTier

    kvs, recompute_ms, positions, inv_freq, scaling = _load_chunks(model_dir, root, spec, examples)
    L, _, H, T, d = kvs[0].shape
    out_k, out_v = torch.empty(L, H, T, d), torch.empty(L, H, T, d)
    rows = {"recompute_ms_10_chunks": recompute_ms, "chunks": len(kvs), "tokens_per_chunk": T, "codecs": {}}
    with redis_server(spec.redis_url) as url:
        for codec in spec.codecs:
            cs = CodecSpec(codec)
            t = time.perf_counter()
            blobs = [encode_kv(kv, cs) for kv in kvs]
            encode_ms = (time.perf_counter() - t) * 1e3 / len(kvs)
            keys = [chunk_key("bench-codecs", "", [i], cs.tag) for i in range(len(kvs))]
            lmdb_tier = LmdbTier(str(root / f"load-{codec}"), map_size=2**30)
            redis_tier = RedisTier(RedisConfig(url, prefix=f"bench-codecs-{codec}", timeout_s=5.0))
            timings = {}
            for name, tier in (("lmdb", lmdb_tier), ("redis", redis_tier)):
                tier.put_many(zip(keys, blobs))
                ms = []
                for r in range(spec.load_repeats + 1):  # round 0 warms the page cache
                    for key in keys:
                        t = time.perf_counter()
                        p = decode_payload(tier.get(key))
                        dequant_rope(p.k, p.k_scale, p.v, p.v_scale, positions, inv_freq, scaling, p.codec, torch.float32,
                                     out=(out_k, out_v))
                        if r:
                            ms.append((time.perf_counter() - t) * 1e3)
                timings[name] = ms
                for key in keys:
                    tier.delete(key)
            lmdb_tier.close()
            shutil.rmtree(root / f"load-{codec}", ignore_errors=True)
            nbytes = sum(len(b) for b in blobs)
            fp16_bytes = 2 * kvs[0].numel() * len(kvs)
            rows["codecs"][codec] = {
                "bytes_per_token": nbytes / (len(kvs) * T), "compression_vs_fp16": fp16_bytes / nbytes,
                "code_bits_per_value": code_bits(kvs[0], codec), "encode_ms": encode_ms,
                "lmdb_load_ms": statistics.median(timings["lmdb"]), "redis_load_ms": statistics.median(timings["redis"]),
                "lmdb_load_ms_10_chunks": statistics.median(timings["lmdb"]) * len(kvs),
                "redis_load_ms_10_chunks": statistics.median(timings["redis"]) * len(kvs),
            }
    return rows


def run_codec_bench(spec: CodecBenchSpec, on_progress: Callable[[dict], None] = lambda result: None) -> dict:
    """Loads first, then quality codec by codec; `on_progress` gets the partial result after each."""
    from chunkcache.bench.report import describe_machine
    from chunkcache.model_files import resolve_model_dir

    path, dataset = resolve_data(spec.data)
    everything = load_examples(path)  # the load chunks are cut from all of its text
    examples = everything[: spec.limit]
    model_dir = resolve_model_dir(spec.model, Path(spec.store))
    result = {"machine": describe_machine(), "dataset": dataset, "examples": len(examples),
              "spec": {k: v for k, v in spec.__dict__.items()}}
    with tempfile.TemporaryDirectory(prefix="bench-codecs-") as tmp:
        root = Path(tmp)
        result["load"] = measure_codec_loads(spec, model_dir, root, everything)

        def partial(quality: dict) -> None:
            result["quality"] = quality
            on_progress(result)

        result["quality"] = measure_codec_quality(spec, model_dir, root, examples, partial)
    result["machine"]["loadavg_end"] = describe_machine()["loadavg"]
    return result


def _ci(rep: dict, metric: str, digits: int) -> str:
    return f"{rep[metric]:+.{digits}f} [{rep[metric + '_lo']:+.{digits}f}, {rep[metric + '_hi']:+.{digits}f}]"


def format_codecs(result: dict) -> str:
    """The codec table (markdown): size, load time and blend quality against the fp16 store."""
    load, quality = result["load"], result["quality"]
    m = result["machine"]
    lines = [f"codecs on {result['examples']} {result['dataset']} examples; machine: {m.get('cpu')}, "
             f"{m.get('usable_cores')} cores, torch threads {m.get('torch_threads')}",
             "",
             "| codec | bytes/token (corpus) | x vs fp16 (corpus) | x vs fp16 (256-tok chunks) | code bits/value | "
             "LMDB load ms/chunk | Redis load ms/chunk | blend fidelity | fidelity change vs fp16 store | "
             "1st-token KL | KL change vs fp16 store | fidelity to fp16-store answer | KL to fp16-store answer |",
             "|" + "---|" * 13]
    for codec, q in quality.items():
        ld = load["codecs"].get(codec, {})
        bits = ld.get("code_bits_per_value")
        lines.append("| " + " | ".join([
            codec, f"{q['bytes_per_token']:.0f}", f"{q['compression_vs_fp16']:.2f}", f"{ld.get('compression_vs_fp16', float('nan')):.2f}",
            "n/a" if bits is None else f"{bits:.2f}", f"{ld.get('lmdb_load_ms', float('nan')):.1f}", f"{ld.get('redis_load_ms', float('nan')):.1f}",
            f"{q['fidelity']:.3f}", _ci(q, "fidelity_change", 3), f"{q['first_token_kl']:.4f}", _ci(q, "first_token_kl_change", 4),
            f"{q['fidelity_to_fp16']:.3f}", f"{q['kl_to_fp16']:.4f} [{q['kl_to_fp16_lo']:.4f}, {q['kl_to_fp16_hi']:.4f}]",
        ]) + " |")
    lines.append("")
    lines.append(f"recompute of {load['chunks']} chunks of {load['tokens_per_chunk']} tokens: {load['recompute_ms_10_chunks']:.0f} ms; "
                 "load = tier get + checksum + decode + fused dequantize/RoPE, median per chunk. "
                 "[lo, hi]: 95% percentile bootstrap over the examples (changes paired per example).")
    return "\n".join(lines)


def write_codecs(result: dict, out: Path) -> str:
    """DIR/codecs.json and DIR/codecs.md; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "codecs.json").write_text(json.dumps(result, indent=1, default=str))
    text = format_codecs(result)
    (out / "codecs.md").write_text(text + "\n")
    return text


def cmd_codecs(args) -> int:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    spec = CodecBenchSpec(data=args.data, store=args.store, model=args.model, codecs=args.codecs, limit=args.limit or 100,
                          max_new_tokens=args.max_new_tokens, progress=not args.quiet)
    out = Path(args.out)
    result = run_codec_bench(spec, on_progress=lambda partial: write_codecs(partial, out))
    text = write_codecs(result, out)
    print(text)
    print(f"wrote {out / 'codecs.json'}, {out / 'codecs.md'}")
    return 0
