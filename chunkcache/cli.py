"""The `chunkcache` command: one entry point, one sub-command per job, `--help` on each."""

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path

from chunkcache.bench.cli import add_bench_parser
from chunkcache.environment import store_dir
from chunkcache.errors import ChunkCacheError
from chunkcache.names import CODECS, EVICTIONS, DEFAULT_MODE, DEFAULT_ORDER, MODES, ORDERS

DEMO_QA = Path(__file__).parent / "demo" / "demo_qa.jsonl"


def _ratios(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--recompute-ratio takes numbers in [0, 1] separated by commas, got {text!r}")
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"--recompute-ratio takes numbers in [0, 1] separated by commas, got {text!r}")
    return values


# BlendConfig fields whose flag is not --<field-name>; recompute_ratio is each command's own
# --recompute-ratio (a list in eval, one value per request in answer and query).
_BLEND_FLAGS = {"deviation_of": "--deviation"}
_BLEND_NOT_FLAGS = ("recompute_ratio",)


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cache")
    from chunkcache.config import DEVICE_PATTERN, DEVICES, DTYPES, CacheConfig

    c = CacheConfig.__dataclass_fields__  # the one copy of every cache default
    g.add_argument("--store", default=store_dir(), help="store directory: converted model, KV store, index (default: %(default)s, or $CHUNKCACHE_STORE)")
    g.add_argument("--model", default=None, help="'default' (SmolLM2-135M-Instruct), a local Hugging Face checkpoint dir, or a .gguf file")
    g.add_argument("--codec", default=c["codec"].default, choices=CODECS, help="how chunk KV is stored (default: %(default)s)")
    g.add_argument("--zstd-level", type=int, default=c["zstd_level"].default or 0,
                   help="zstd level for stored KV, 0 = off; pays off with bf16/int4 (default: %(default)s)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core); 1 is faster on a machine shared with other busy processes")
    g.add_argument("--memory-only", action="store_true", help="keep chunk KV in memory only (nothing written to disk)")
    g.add_argument("--disk-mib", type=int, default=None,
                   help="byte budget of the on-disk KV store in MiB, per-chunk and chain entries together (default: no cap)")
    g.add_argument("--eviction", choices=EVICTIONS, default=c["eviction"].default,
                   help="which entries go first when the disk budget is reached: lfu keeps the most reused (ties: the most "
                        "recent), lru the most recent (default: %(default)s)")
    g.add_argument("--no-chain-entries", action="store_true",
                   help="do not store or use chain entries (each chunk's exact KV in the context a full prefill saw); "
                        "repeated contexts are then blended again instead of answered exactly")

    def device(text: str) -> str:
        if not DEVICE_PATTERN.fullmatch(text):
            raise argparse.ArgumentTypeError(f"--device takes {' | '.join(DEVICES)} | cuda:N, got {text!r}")
        return text

    g.add_argument("--device", default=c["device"].default, type=device,
                   help=f"where the model and the request's tensors run: {' | '.join(DEVICES)} | cuda:N (default: %(default)s)")
    g.add_argument("--dtype", default=c["dtype"].default, choices=DTYPES,
                   help="the model's and the working cache's dtype; RoPE angles and logits stay float32 (default: %(default)s)")
    _add_blend_options(p.add_argument_group("blending (defaults are BlendConfig's)"))


def _blend_fields():
    from chunkcache.config import BlendConfig

    return [f for f in dataclasses.fields(BlendConfig) if f.name not in _BLEND_NOT_FLAGS]


def _add_blend_options(group) -> None:
    """One flag per BlendConfig field (--<name>, dest the field), its type, default, choices and
    help taken from the field: the levers are defined once, in config.py."""
    for f in _blend_fields():
        kind = f.type
        if isinstance(kind, types.UnionType):  # `float | None`: a float flag, unset by default
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if f.default is not None:  # a lever off when unset says so in its help
            text += " (default: %(default)s)"
        group.add_argument(_BLEND_FLAGS.get(f.name, "--" + f.name.replace("_", "-")), dest=f.name, type=kind,
                           default=f.default, choices=f.metadata.get("choices"), help=text)


def _add_redis_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("shared KV tier (Redis or Valkey; flags win over CHUNKCACHE_REDIS_* variables)")
    g.add_argument("--redis-url", default=None,
                   help="redis://host:port/db (or rediss://, unix://) of a KV tier shared by replicas, below memory and disk; "
                        "a Redis that is down is a miss, never an error (default: $CHUNKCACHE_REDIS_URL, else none)")
    g.add_argument("--redis-prefix", default=None, help="key namespace of this deployment (default: chunkcache)")
    g.add_argument("--redis-ttl", type=int, default=None, help="expiry in seconds set on every write (default: none; "
                   "bound the size with the server's maxmemory and maxmemory-policy allkeys-lru)")
    g.add_argument("--redis-timeout", type=float, default=None, help="connect/read timeout of one Redis call in seconds (default: 0.25)")


def _redis_overrides(args) -> dict:
    return {"redis_url": args.redis_url, "redis_prefix": args.redis_prefix, "redis_ttl_s": args.redis_ttl,
            "redis_timeout_s": args.redis_timeout}


def _redis_config(args):
    """The shared tier from --redis-* flags over CHUNKCACHE_REDIS_* (ServiceConfig reads the environment)."""
    from chunkcache.api.settings import ServiceConfig

    return ServiceConfig.from_env(**_redis_overrides(args)).redis


def _build_cache(args, redis=None):
    from chunkcache.facade import ChunkCache

    _set_threads(args)
    return ChunkCache(config=_cache_config(args, redis))


def _set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _cache_config(args, redis=None):
    from chunkcache.config import BlendConfig, CacheConfig

    blend = BlendConfig(**{f.name: getattr(args, f.name) for f in _blend_fields()})
    config = CacheConfig(
        store_dir=args.store,
        model=args.model,
        blend=blend,
        codec=args.codec,
        zstd_level=args.zstd_level or None,
        persist=not args.memory_only,
        device=args.device,
        dtype=args.dtype,
        redis=redis,
        chain_entries=not args.no_chain_entries,
        disk_bytes=args.disk_mib * 2**20 if args.disk_mib is not None else None,
        eviction=args.eviction,
    )
    return config


def cmd_eval(args) -> int:
    from dataclasses import asdict

    from chunkcache.evaluation import evaluate, format_table, load_examples, parse_repairs, parse_runs, parse_variants, resolve_data

    blend = _cache_config(args).blend  # variants and the oracle change only the selection of the cache's settings
    runs = parse_runs(args.modes, args.recompute_ratio, parse_variants(args.variants), args.oracle, blend, parse_repairs(args.repairs))
    path, dataset = resolve_data(args.data)
    examples = load_examples(path, args.limit)
    cache = _build_cache(args)
    try:
        result = evaluate(cache, examples, runs, max_new_tokens=args.max_new_tokens, progress=not args.quiet,
                          n_resamples=args.bootstrap_resamples, seed=args.seed)
    finally:
        cache.close()
    result["config"] = {
        "dataset": dataset, "data": str(path), "limit": args.limit, "n_examples": len(examples), "modes": args.modes,
        "recompute_ratio": args.recompute_ratio, "variants": args.variants, "repairs": args.repairs, "oracle": args.oracle,
        "blend": asdict(blend), "codec": args.codec, "max_new_tokens": args.max_new_tokens,
    }
    print(f"{dataset}: {len(examples)} examples")
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_answer(args) -> int:
    passages = []
    for path in args.passage_files:
        passages.append({"title": Path(path).stem, "text": Path(path).read_text(encoding="utf-8")})
    passages.extend(args.passage or [])
    cache = _build_cache(args)
    try:
        ans = cache.answer(args.question, passages, mode=args.mode, recompute_ratio=args.recompute_ratio, max_new_tokens=args.max_new_tokens,
                           on_token=(lambda t: print(t, end="", flush=True)) if args.stream else None, stop=args.stop)
    finally:
        cache.close()
    if args.stream:
        print()
    else:
        print(ans.text)
    print(f"[{ans.mode}] ttft {ans.ttft_s * 1000:.0f} ms, total {ans.total_s * 1000:.0f} ms, context {ans.context_tokens} tokens, "
          f"recomputed {ans.recomputed_tokens}, " + (f"cache hits {ans.cache_hits}/{len(ans.passages)}" if ans.mode != "full" else "cache not used")
          + _repeat_note(ans), file=sys.stderr)
    return 0


def cmd_ingest(args) -> int:
    from chunkcache.retrieval import load_paths

    if args.verify and not args.warm:
        raise ChunkCacheError("--verify checks the entries a warm-up would skip: use it with --warm (or run `chunkcache warm --verify`)")
    docs = load_paths(args.paths)
    cache = _build_cache(args, _redis_config(args))
    try:
        ids = cache.add_documents(docs, progress=not args.quiet)
        print(f"ingested {len(ids)} documents; the corpus holds {len(cache.corpus)} documents in {cache.corpus.num_chunks} chunks")
        if args.warm:
            computed = cache.warm_corpus(progress=not args.quiet, verify=args.verify)
            print(f"warmed {computed} chunk caches")
    finally:
        cache.close()
    return 0


def _logged_questions(path: str) -> list[str]:
    """A query log: one question per line, or JSONL objects with a "question" field."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ChunkCacheError(f"cannot read --queries {path}: {e.strerror}") from e
    questions = []
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if line.startswith("{"):
            try:
                line = json.loads(line)["question"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ChunkCacheError(f"{path}:{no}: a JSON line needs a string \"question\" field ({e})") from e
        if isinstance(line, str) and line.strip():
            questions.append(line.strip())
    if not questions:
        raise ChunkCacheError(f"--queries {path} holds no questions (one per line, or JSONL with \"question\")")
    return questions


def cmd_warm(args) -> int:
    questions = _logged_questions(args.queries) if args.queries else None
    cache = _build_cache(args, _redis_config(args))
    try:
        computed = cache.warm_corpus(progress=not args.quiet, verify=args.verify)
        print(f"warmed {computed} chunk caches ({cache.corpus.num_chunks} indexed chunks; the rest were stored already)")
        if questions:
            exact = cache.warm_queries(questions, top_k=args.top_k, order=args.order, progress=not args.quiet)
            print(f"stored {exact} contexts exactly (chain entries) for {len(questions)} logged questions; "
                  "the rest were stored already")
    finally:
        cache.close()
    return 0


def cmd_query(args) -> int:
    cache = _build_cache(args, _redis_config(args))
    try:
        ans = cache.query(args.question, top_k=args.top_k, mode=args.mode, order=args.order, recompute_ratio=args.recompute_ratio,
                          max_new_tokens=args.max_new_tokens, on_token=(lambda t: print(t, end="", flush=True)) if args.stream else None,
                          stop=args.stop)
    finally:
        cache.close()
    print() if args.stream else print(ans.text)
    for p in ans.passages:
        print(f"  [{p.index + 1}] {p.doc_id}#{p.ordinal} score {p.score:.4f} {p.cache} {p.title}", file=sys.stderr)
    print(f"[{ans.mode}] ttft {ans.ttft_s * 1000:.0f} ms (retrieval {ans.timings.retrieval * 1000:.0f} ms), total {ans.total_s * 1000:.0f} ms, "
          f"context {ans.context_tokens} tokens, recomputed {ans.recomputed_tokens}"
          + _repeat_note(ans), file=sys.stderr)
    return 0


def _repeat_note(ans) -> str:
    """The summary line's note when the whole prompt was a repeat (`Answer.question_exact`)."""
    return ", the whole prompt a repeat (one token computed)" if ans.question_exact else ""


def _api_key(args) -> str | None:
    """The key from --api-key-file, else --api-key (with a warning: it shows in `ps`), else None
    (ServiceConfig.from_env then reads CHUNKCACHE_API_KEY)."""
    if args.api_key_file is not None:
        try:
            return Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ChunkCacheError(f"cannot read --api-key-file {args.api_key_file}: {e.strerror}") from e
    if args.api_key is not None:
        print("warning: --api-key is visible to every user of this machine in the process list; "
              "prefer CHUNKCACHE_API_KEY or --api-key-file", file=sys.stderr)
    return args.api_key


def cmd_serve(args) -> int:
    from dataclasses import replace

    from chunkcache.api.server import serve
    from chunkcache.api.settings import ServiceConfig
    from chunkcache.config import CacheConfig, RefineConfig

    api_key = _api_key(args)
    overrides = {k: v for k, v in {
        "host": args.host, "port": args.port, "api_key": api_key, "queue_size": args.queue_size,
        "workers": args.workers, "request_timeout_s": args.request_timeout, "ingest_root": args.ingest_root,
        **_redis_overrides(args),
    }.items() if v is not None}
    service = ServiceConfig.from_env(**overrides)
    _set_threads(args)
    # Every worker's request may decode in the same batch; idle refinement is on unless turned off.
    config = _cache_config(args, service.redis)
    refine = RefineConfig(enabled=not args.no_refine and config.chain_entries, idle_share=args.refine_share,
                          max_bytes=args.refine_max_mib * 2**20 if args.refine_max_mib is not None else None)
    config = replace(config, max_batch=max(service.workers, CacheConfig.max_batch), refine=refine,
                     token_budget=args.token_budget, working_cache_bytes=args.working_cache_mib * 2**20)
    serve(config, service, log_level=args.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from chunkcache.config import CacheConfig, RefineConfig

    parser = argparse.ArgumentParser(
        prog="chunkcache",
        description="RAG context caching: precompute each passage's KV cache once, reuse it at query time "
        "(RoPE re-positioning + CacheBlend selective recompute).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("eval", help="answer QA examples in several modes and compare quality and TTFT",
                       description="Warm every example's passages, answer each example in every mode, and report F1/EM against "
                       "the gold answers, fidelity to the full prefill's answer, first-token agreement and KL, teacher-forced "
                       "agreement with full's tokens, and TTFT, with 95% bootstrap intervals over the examples.")
    p.add_argument("--data", default=str(DEMO_QA),
                   help="QA JSONL (question, answers, passages[{title,text}]), or a shared set by name: 2wikimqa, hotpotqa, "
                   "hotpotqa_fullwiki, musique (from ../shared/data/qa/ beside the repository); default: the bundled demo set")
    p.add_argument("--modes", default="full,reuse,blend,ape", help="comma-separated modes among full,reuse,blend,ape (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="use the first N examples")
    p.add_argument("--recompute-ratio", type=_ratios, default=[0.15], help="blend ratio(s), comma-separated for a curve, e.g. 0,0.15,1 (default: 0.15)")
    p.add_argument("--variants", default=None,
                   help="compare blend selections at the same ratios, e.g. 'probe,vattn' (runs blend[probe]@0.15, ...); "
                   "values of --deviation")
    p.add_argument("--repairs", default=None,
                   help="compare repair budgets at the same ratios, RATIOxSTEPS comma-separated (share of the context x decode "
                   "steps), e.g. '0x0,0.1x1,0.2x4' (runs blend[repair 0.1x1]@0.15, ...; with --variants, every selection "
                   "with every budget)")
    p.add_argument("--oracle", action="store_true",
                   help="diagnostic: add oracle@<r> runs that select by the true deviation from a full prefill (the ceiling of "
                   "selection; never a serving mode, its TTFT is not meaningful)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per answer (default: %(default)s)")
    p.add_argument("--bootstrap-resamples", type=int, default=2000, help="resamples of the 95%% intervals (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: %(default)s)")
    p.add_argument("--json", default=None, help="write the full report (per mode and per example) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_cache_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("answer", help="answer one question over passages given on the command line",
                       description="Answer a question over passages you pass directly (no index).")
    p.add_argument("question")
    p.add_argument("--passage", action="append", help="a passage text (repeatable)")
    p.add_argument("--passage-file", dest="passage_files", action="append", default=[], help="a text file used as one passage (repeatable)")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    p.add_argument("--recompute-ratio", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="end the answer before this text (repeatable, up to 4; e.g. --stop $'\\n\\n' stops at the first blank line)")
    _add_cache_options(p)
    p.set_defaults(func=cmd_answer)

    p = sub.add_parser("ingest", help="add text/Markdown files, folders or JSONL documents to the store's index",
                       description="Chunk, embed and index documents: .txt and .md files, folders (recursively), or .jsonl "
                       "with one {id, text, title?} object per line. Re-ingesting an id replaces that document.")
    p.add_argument("paths", nargs="+", help="files or folders")
    p.add_argument("--warm", action="store_true", help="also precompute the KV cache of every chunk not stored yet (resumable)")
    p.add_argument("--verify", action="store_true",
                   help="with --warm: also check the checksum of every stored entry and recompute the corrupt ones")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_cache_options(p)
    _add_redis_options(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("warm", help="precompute the KV cache of every indexed chunk (resumable)",
                       description="Compute and store the KV cache of every indexed chunk that is not stored yet. Work is committed "
                       "in batches: an interrupted warm-up keeps what it finished and a rerun resumes.")
    p.add_argument("--verify", action="store_true",
                   help="also check the checksum of every stored entry and recompute the corrupt ones (default: trust that an entry exists)")
    p.add_argument("--queries", default=None, metavar="FILE",
                   help="a query log (one question per line, or JSONL with \"question\"): retrieve each question's passages and "
                        "store that context exactly (chain entries), so answers to those questions are exact from the first token")
    p.add_argument("--top-k", type=int, default=5, help="with --queries: chunks retrieved per question, as the service will (default: %(default)s)")
    p.add_argument("--order", choices=ORDERS, default=DEFAULT_ORDER, help="with --queries: prompt order of the chunks (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_cache_options(p)
    _add_redis_options(p)
    p.set_defaults(func=cmd_warm)

    p = sub.add_parser("query", help="retrieve passages from the store's index and answer a question",
                       description="Retrieve the top-k chunks for the question, load (or compute) their KV caches and answer.")
    p.add_argument("question")
    p.add_argument("--top-k", type=int, default=5, help="chunks to retrieve (default: %(default)s)")
    p.add_argument("--order", choices=ORDERS, default=DEFAULT_ORDER, help="prompt order of the chunks (default: %(default)s)")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    p.add_argument("--recompute-ratio", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="end the answer before this text (repeatable, up to 4; e.g. --stop $'\\n\\n' stops at the first blank line)")
    _add_cache_options(p)
    _add_redis_options(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("serve", help="run the REST service (FastAPI + uvicorn) over the store",
                       description="Serve /v1/query, /v1/answer, /v1/chat/completions (OpenAI schema), /v1/documents, /v1/warm, "
                       "/v1/stats, /metrics, /healthz and /readyz. Binds 127.0.0.1 unless --host says otherwise. Settings may "
                       "also come from CHUNKCACHE_<SETTING> environment variables (e.g. CHUNKCACHE_API_KEY); flags win.")
    p.add_argument("--host", default=None, help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: 8000)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but health; shows in the process list, so prefer "
                        "CHUNKCACHE_API_KEY or --api-key-file")
    p.add_argument("--api-key-file", default=None, help="read the API key from this file (first line, stripped)")
    p.add_argument("--queue-size", type=int, default=None, help="model requests allowed to wait; one more gets 503 (default: 8)")
    p.add_argument("--workers", type=int, default=None,
                   help="requests answered at once; their decode steps run as one batch (default: 16, also the batch limit)")
    p.add_argument("--request-timeout", type=float, default=None, help="seconds before a request gets 504 (default: 120)")
    p.add_argument("--ingest-root", default=None, help="the only server directory POST /v1/ingest may read (default: none)")
    p.add_argument("--no-refine", action="store_true",
                   help="turn off idle refinement (while no request waits, full-prefill the contexts recently answered inexactly "
                        "and store them exactly, so their next answer is exact)")
    p.add_argument("--refine-share", type=float, default=RefineConfig.idle_share,
                   help="share of idle time refinement may use (default: %(default)s)")
    p.add_argument("--refine-max-mib", type=int, default=None, help="MiB of chain entries refinement may write (default: no cap)")
    p.add_argument("--token-budget", type=int, default=CacheConfig.token_budget,
                   help="rows per scheduler step: the running decodes first, then prompt work in pieces; smaller keeps "
                        "the time between tokens short under load, larger gives long prompts their first token sooner "
                        "(default: %(default)s)")
    p.add_argument("--working-cache-mib", type=int, default=CacheConfig.working_cache_bytes // 2**20,
                   help="memory for the working caches of the requests running at once; a request waits for its share "
                        "and one that can never fit gets 503 (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_cache_options(p)
    _add_redis_options(p)
    p.set_defaults(func=cmd_serve)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ChunkCacheError as exc:
        print(f"chunkcache: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chunkcache: interrupted; finished warm-up batches are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
