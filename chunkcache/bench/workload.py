"""A repeating RAG workload replayed as traffic: where exact reuse, blending and refinement pay.

`python -m chunkcache.bench.workload --data 2wikimqa --out DIR`:

1. The corpus is every passage of the QA file (one document each), embedded and indexed; a
   stream of `--queries` questions is drawn from the file's questions with a Zipf law (rank i
   drawn with probability ~ 1 / i^s, s = 1.1, ranks in a seeded random order), so popular
   questions come back as they do in production.
2. Reference (`full`): every distinct prompt (question + its retrieved passages in prompt
   order) is answered once by a full prefill, one at a time (no queueing): the tokens every line
   is scored against and the `full` line's times.
3. Each line replays the same stream through the service path (`ChunkCache.query` from a pool of
   worker threads, continuous batching) with Poisson arrivals at `--rate` questions/s, by default
   keeping blend about half busy, so the service is idle about half the time as a real one is.
   The reference and the lines run one after another in the same process, each its own
   ChunkCache on `--threads` torch threads with the machine to itself, on the same arrival
   times (run beside each other in one process they would fight over the interpreter lock and
   the cores, and the rate would keep none of them half busy). Every line starts from a copy
   of one warmed store (the per-chunk entries of every retrieved passage; no chain entries):
     prefix        exact prefix reuse alone (what vLLM's automatic prefix caching gives);
     blend         per-chunk entries placed and blended, chain entries off (the old default);
     blend+chain   blend over chain entries, refinement off (chain entries come from full or
                   prefix answers and from `warm --queries`, none of which this stream has:
                   it shows what chain entries alone give blend traffic);
     blend+refine  blend + chain entries + idle-time refinement (what `chunkcache serve` runs).
4. Per query: TTFT and total time as the client sees them (from its arrival, queueing
   included), token-F1 fidelity to the reference answer, and per passage whether its KV was
   exact, cached (placed and blended) or computed. Writes workload.json, workload.md and
   workload.png (cumulative fidelity and TTFT speedup over the stream).
"""

import argparse
import json
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from chunkcache.bench.report import machine_line
from chunkcache.environment import store_dir
from chunkcache.evaluation import _answer_text  # the answer up to its first end-of-sequence token, as eval scores it

LINES = ("prefix", "blend", "blend+chain", "blend+refine")
DEFAULT_LINES = ("prefix", "blend", "blend+refine")


@dataclass(frozen=True)
class WorkloadSpec:
    data: str
    out: str
    store: str
    model: str | None = None
    queries: int = 300
    zipf_s: float = 1.1
    top_k: int = 5
    max_new_tokens: int = 32
    rate: float | None = None  # questions/s; None = half of what blend serves alone
    utilization: float = 0.5
    lines: tuple[str, ...] = DEFAULT_LINES
    workers: int = 16
    seed: int = 0
    threads: int | None = 1  # torch threads; each line runs alone
    recompute_ratio: float | None = None  # blend's ratio in every line; None = the default BlendConfig's
    progress: bool = True


@dataclass
class QueryRecord:
    """One answered query of one line (times in seconds from the query's arrival)."""

    index: int
    question: int  # index of the question in the QA file
    ttft_s: float
    total_s: float
    fidelity: float
    passages: list[str]  # per passage: exact, hit, miss or "not used"
    tokens: int
    error: str | None = None
    text: str = ""

    @property
    def kind(self) -> str:
        """exact (every passage exact), blended (some placed from per-chunk entries) or computed
        (prefix mode prefilled some passages)."""
        if all(p == "exact" for p in self.passages):
            return "exact"
        return "computed" if "hit" not in self.passages and "miss" in self.passages else "blended"


def zipf_stream(n_questions: int, n_queries: int, s: float, seed: int) -> list[int]:
    """Question indices: rank r (1-based) drawn with probability ~ 1 / r^s; ranks are given to the
    questions in a seeded random order (so popularity does not follow the file's order)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_questions)
    p = 1.0 / np.arange(1, n_questions + 1) ** s
    ranks = rng.choice(n_questions, size=n_queries, p=p / p.sum())
    return [int(order[r]) for r in ranks]


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """Arrival times (s from the start) of a Poisson process of `rate` per second."""
    gaps = np.random.default_rng(seed + 1).exponential(1.0 / rate, size=n)
    return np.cumsum(gaps).tolist()


def _prepare(spec: WorkloadSpec, examples, stream: list[int]) -> tuple[Path, dict]:
    """The template store: corpus of every passage and the per-chunk KV of every retrieved
    passage; blend's service time alone (sets the default rate); the order study. Returns
    (template dir, {"blend_service_s", "order"})."""
    from chunkcache import ChunkCache

    # The corpus (embeddings, index) and the per-chunk entries are kept between runs on the same
    # data: a rerun embeds nothing and warms only the passages it has not stored yet.
    template = Path(spec.store) / f"workload-template-{Path(spec.data).stem}"
    marker = template / "corpus-complete"
    docs, seen = [], set()
    for ex in examples:
        for p in ex.passages:
            key = (p["title"], p["text"]) if isinstance(p, dict) else ("", p)
            if key not in seen:
                seen.add(key)
                docs.append({"id": f"p{len(docs)}", "title": key[0], "text": key[1]})
    info: dict = {}
    with ChunkCache(store_dir=str(template), model=spec.model, chain_entries=False) as cache:
        if not marker.exists():
            cache.add_documents(docs, progress=spec.progress)
            marker.write_text(f"{len(docs)} documents\n")
        distinct = sorted(set(stream))
        retrieved = {q: cache.retrieve(examples[q].question, top_k=spec.top_k) for q in distinct}
        cache.warm([{"title": h.title, "text": h.text} for hits in retrieved.values() for h in hits],
                   progress=spec.progress, desc="warm-up (retrieved passages)")
        # Calibration: what blend costs alone on a few distinct prompts (sets the default rate).
        calib = []
        for q in distinct[: min(8, len(distinct))]:
            t0 = time.perf_counter()
            cache.query(examples[q].question, top_k=spec.top_k, mode="blend", max_new_tokens=spec.max_new_tokens, chain=False,
                        recompute_ratio=spec.recompute_ratio)
            calib.append(time.perf_counter() - t0)
        info["blend_service_s"] = statistics.fmean(calib)
        info["order"] = order_study(cache, examples, stream, spec.top_k)
    return template, info


_JOURNAL_LOCK = threading.Lock()


def _journal(spec: WorkloadSpec, line: str, row: dict) -> None:
    """Append one finished query to OUT/journal-<line>.jsonl, so a long run can be read while it
    goes on, or after it was stopped (`--from-journal`)."""
    with _JOURNAL_LOCK:
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"journal-{line.replace('+', '-')}.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


def from_journal(out: Path, lines: tuple[str, ...]) -> dict:
    """The lines' records and the reference read back from the journal (a partial run: only the
    queries whose reference answer is in too). Same shape as `run`'s result, config left out."""
    path = out / "journal-full.jsonl"
    refs = {r["question"]: r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}
    result = {"lines": {}, "refs": {str(k): v for k, v in refs.items()}}
    for name in lines:
        path = out / f"journal-{name.replace('+', '-')}.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        rows = sorted((r for r in rows if r["question"] in refs), key=lambda r: r["index"])
        score(rows, refs)
        result["lines"][name] = {"records": rows, "utilization": None}
    stream = sorted({r["index"]: r["question"] for line in result["lines"].values() for r in line["records"]}.items())
    result["lines"] = {"full": full_line([q for _, q in stream], refs)} | result["lines"]
    for entry in result["lines"].values():
        entry["summary"] = summarize(entry["records"], refs) if entry["records"] else None
    return result


def run_reference(spec: WorkloadSpec, cache, examples, stream: list[int]) -> dict:
    """Each distinct prompt of the stream answered once by a full prefill, one at a time (no
    queueing), before the lines: the answers every line is scored against and the `full`
    line's times. {question: {text, ttft_s, total_s}}."""
    refs = {}
    try:
        for q in tqdm(list(dict.fromkeys(stream)), desc="line full (reference)", disable=not spec.progress):
            t0 = time.perf_counter()
            ans = cache.query(examples[q].question, top_k=spec.top_k, mode="full", max_new_tokens=spec.max_new_tokens)
            refs[q] = {"text": _answer_text(cache, ans)[1], "ttft_s": ans.ttft_s, "total_s": time.perf_counter() - t0,
                       "context_tokens": ans.context_tokens}
            _journal(spec, "full", {"question": q, **refs[q]})
    finally:
        cache.close()
    return refs


def _line_cache(spec: WorkloadSpec, template: Path, line: str):
    from chunkcache import ChunkCache
    from chunkcache.config import BlendConfig, RefineConfig

    blend = BlendConfig() if spec.recompute_ratio is None else BlendConfig(recompute_ratio=spec.recompute_ratio)
    target = Path(spec.store) / f"workload-{line.replace('+', '-')}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(template, target, ignore=shutil.ignore_patterns("corpus-complete"))
    return ChunkCache(store_dir=str(target), model=spec.model, chain_entries=line not in ("blend", "full"),
                      refine=RefineConfig(enabled=line == "blend+refine"), max_batch=spec.workers, blend=blend)


def run_line(spec: WorkloadSpec, cache, line: str, examples, stream: list[int], arrivals: list[float]) -> dict:
    """Replay the stream through one line (its own ChunkCache, closed here); returns its records
    (fidelity is scored later, `score`)."""
    mode = "prefix" if line == "prefix" else "blend"
    records: list[QueryRecord | None] = [None] * len(stream)
    busy = {"n": 0, "since": 0.0, "total": 0.0}
    lock = threading.Lock()
    bar = tqdm(total=len(stream), desc=f"line {line}", disable=not spec.progress)

    def one(i: int, t_arrival: float, t0: float) -> None:
        q = stream[i]
        first = {}

        def on_token(_token: int) -> bool:
            first.setdefault("t", time.perf_counter())
            return False

        with lock:
            if busy["n"] == 0:
                busy["since"] = time.perf_counter()
            busy["n"] += 1
        try:
            ans = cache.query(examples[q].question, top_k=spec.top_k, mode=mode, max_new_tokens=spec.max_new_tokens,
                              on_token=on_token)
            end = time.perf_counter()
            text = _answer_text(cache, ans)[1]
            records[i] = QueryRecord(i, q, first.get("t", end) - (t0 + t_arrival), end - (t0 + t_arrival),
                                     0.0, [p.cache for p in ans.passages], ans.generated_tokens, text=text)
        except Exception as exc:  # a failed query is recorded, never hidden
            records[i] = QueryRecord(i, q, float("nan"), float("nan"), 0.0, [], 0, error=repr(exc))
        finally:
            _journal(spec, line, asdict(records[i]) | {"kind": records[i].kind})
            with lock:
                busy["n"] -= 1
                if busy["n"] == 0:
                    busy["total"] += time.perf_counter() - busy["since"]
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=spec.workers) as pool:
            t0 = time.perf_counter()
            for i, t in enumerate(arrivals):
                delay = t0 + t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, i, t, t0)
        wall = time.perf_counter() - t0
        refine = asdict(cache.refiner.stats())
    finally:
        bar.close()
        cache.close()
    return {"records": [asdict(r) | {"kind": r.kind} for r in records], "wall_s": wall, "busy_s": busy["total"],
            "utilization": busy["total"] / wall, "refiner": refine}


def score(records: list[dict], refs: dict) -> None:
    """Fill each record's fidelity: token F1 of its answer against the full prefill's."""
    from chunkcache.scores import token_f1

    for r in records:
        if r["error"] is None:
            r["fidelity"] = token_f1(r["text"], refs[r["question"]]["text"])


def summarize(records: list[dict], refs: dict, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Means over the stream; fidelity and TTFT speedup (mean full TTFT / mean line TTFT over the
    same queries) with 95% bootstrap intervals over the queries."""
    from chunkcache.stats import bootstrap_ci, percentile

    ok = [r for r in records if r["error"] is None]
    ttft = [r["ttft_s"] for r in ok]
    pairs = [(refs[r["question"]]["ttft_s"], r["ttft_s"]) for r in ok]
    totals = [(refs[r["question"]]["total_s"], r["total_s"]) for r in ok]

    def ratio(ps):
        return sum(f for f, _ in ps) / sum(x for _, x in ps)

    fid = [r["fidelity"] for r in ok]
    kinds = [r["kind"] for r in ok]
    states = [s for r in ok for s in r["passages"]]
    exact_fid = [r["fidelity"] for r in ok if r["kind"] == "exact"]
    other_fid = [r["fidelity"] for r in ok if r["kind"] != "exact"]
    out = {
        "n": len(ok), "errors": len(records) - len(ok),
        "fidelity": statistics.fmean(fid), "fidelity_ci": bootstrap_ci(fid, statistics.fmean, n_resamples=n_resamples, seed=seed),
        "fidelity_exact": statistics.fmean(exact_fid) if exact_fid else None,
        "fidelity_not_exact": statistics.fmean(other_fid) if other_fid else None,
        "ttft_mean_s": statistics.fmean(ttft), "ttft_p50_s": percentile(ttft, 0.5), "ttft_p99_s": percentile(ttft, 0.99),
        "ttft_speedup": ratio(pairs), "ttft_speedup_ci": bootstrap_ci(pairs, ratio, n_resamples=n_resamples, seed=seed),
        "total_mean_s": statistics.fmean(t for _, t in totals), "total_speedup": ratio(totals),
        "answers": {k: kinds.count(k) / len(kinds) for k in ("exact", "blended", "computed")},
        "passages": {k: states.count(k) / max(1, len(states)) for k in ("exact", "hit", "miss")},
    }
    not_exact = [r["ttft_s"] for r in ok if r["kind"] != "exact"]
    if not_exact:
        out["ttft_not_exact_p50_s"], out["ttft_not_exact_p99_s"] = percentile(not_exact, 0.5), percentile(not_exact, 0.99)
    return out


def order_study(cache, examples, stream: list[int], top_k: int) -> dict:
    """Exact passages each chunk order would give on this stream if every context answered before
    had its chain entries (refinement keeping up): for each query, the longest leading run of
    its passages that some earlier context began with. Bookkeeping only (retrieval, no model)."""
    from chunkcache.names import ORDERS

    out = {}
    for order in ORDERS:
        seen: set[tuple] = set()
        exact = total = whole = 0
        for q in stream:
            seq = tuple((h.doc_id, h.ordinal) for h in cache.retrieve(examples[q].question, top_k=top_k, order=order))
            run = next((n for n in range(len(seq), 0, -1) if seq[:n] in seen), 0)
            exact, total, whole = exact + run, total + len(seq), whole + (run == len(seq))
            seen.update(seq[:n] for n in range(1, len(seq) + 1))
        out[order] = {"exact_passages": exact / total, "exact_answers": whole / len(stream)}
    return out


def full_line(stream: list[int], refs: dict) -> dict:
    """The reference answers as a line: each query answered by its prompt's full prefill (alone)."""
    records = [{"index": i, "question": q, "ttft_s": refs[q]["ttft_s"], "total_s": refs[q]["total_s"], "fidelity": 1.0,
                "passages": [], "tokens": 0, "error": None, "kind": "computed"} for i, q in enumerate(stream)]
    return {"records": records, "wall_s": None, "busy_s": None, "utilization": None, "refiner": None}


def format_report(result: dict) -> str:
    head = ["line", "n", "fidelity [95%]", "fidelity exact / other", "TTFT speedup [95%]", "TTFT mean / p50 / p99 ms",
            "total speedup", "answers exact / blended / computed", "passages exact / cached / computed", "utilization"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, line in result["lines"].items():
        s = line["summary"]
        if s is None:
            continue

        def f(x, d=3):
            return "n/a" if x is None else f"{x:.{d}f}"

        lo, hi = s["fidelity_ci"]
        slo, shi = s["ttft_speedup_ci"]
        a, p = s["answers"], s["passages"]
        lines.append("| " + " | ".join([
            name, str(s["n"]), f"{s['fidelity']:.3f} [{lo:.3f}, {hi:.3f}]", f"{f(s['fidelity_exact'])} / {f(s['fidelity_not_exact'])}",
            f"{s['ttft_speedup']:.2f}x [{slo:.2f}, {shi:.2f}]",
            f"{1e3 * s['ttft_mean_s']:.0f} / {1e3 * s['ttft_p50_s']:.0f} / {1e3 * s['ttft_p99_s']:.0f}",
            f"{s['total_speedup']:.2f}x", f"{a['exact']:.2f} / {a['blended']:.2f} / {a['computed']:.2f}",
            f"{p['exact']:.2f} / {p['hit']:.2f} / {p['miss']:.2f}" if name != "full" else "n/a",
            f(line.get("utilization"), 2)]) + " |")
    c = result["config"]
    lines.append(f"\n{c['queries']} queries ({c['distinct']} distinct questions) drawn from {c['data']} with Zipf s = {c['zipf_s']}, "
                 f"top_k {c['top_k']}, {c['max_new_tokens']}-token greedy answers, blend's recompute ratio "
                 f"{'the default' if c.get('recompute_ratio') is None else c['recompute_ratio']}, Poisson arrivals at {c['rate']:.3f}/s "
                 f"(blend alone served one in {c['blend_service_s']:.2f} s). The lines ran one after another, each alone on the machine, on the "
                 "same arrival times. full: each distinct "
                 "prompt's full prefill, one at a time (no queueing); other lines: times from arrival, queueing included. Speedup: mean full TTFT / mean line TTFT over the same "
                 "queries. Machine: " + c["machine"])
    order = result.get("order")
    if order:
        lines.append("\nChunk order, if every earlier context were refined (bookkeeping over the same stream): " + "; ".join(
            f"order={k}: {v['exact_passages']:.3f} of passages and {v['exact_answers']:.3f} of answers exact" for k, v in order.items()))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    refs = result["refs"]
    for name, line in result["lines"].items():
        recs = [r for r in line["records"] if r["error"] is None]
        x = np.arange(1, len(recs) + 1)
        a1.plot(x, np.cumsum([r["fidelity"] for r in recs]) / x, label=name)
        full = np.cumsum([refs[str(r["question"])]["ttft_s"] for r in recs])
        a2.plot(x, full / np.cumsum([r["ttft_s"] for r in recs]), label=name)
    a1.set(xlabel="query in the stream", ylabel="mean fidelity so far (token F1 vs full)", title="cumulative fidelity")
    a2.set(xlabel="query in the stream", ylabel="TTFT speedup so far (sum full / sum line)", title="cumulative TTFT speedup")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(spec: WorkloadSpec) -> dict:
    from dataclasses import replace

    from chunkcache.evaluation import load_examples, resolve_data
    from chunkcache.model_files import resolve_model_dir

    if spec.threads:  # two torch threads on a busy machine stall on each other: 1 is faster there
        torch.set_num_threads(spec.threads)
    # Converted once into --store; every line's store copy uses that directory.
    spec = replace(spec, model=str(resolve_model_dir(spec.model, Path(spec.store))))
    path, dataset = resolve_data(spec.data)
    examples = load_examples(path)
    stream = zipf_stream(len(examples), spec.queries, spec.zipf_s, spec.seed)
    for old in Path(spec.out).glob("journal-*.jsonl"):
        old.unlink()
    template, info = _prepare(spec, examples, stream)
    rate = spec.rate or spec.utilization / info["blend_service_s"]
    print(f"blend alone: {info['blend_service_s']:.2f} s per answer; arrivals at {rate:.4f}/s; order study: {info['order']}", flush=True)
    arrivals = poisson_arrivals(len(stream), rate, spec.seed)
    # One after another, each alone on the machine: the reference first (every line is scored
    # against it), then the lines on the same arrival times.
    out: dict = {"refs": run_reference(spec, _line_cache(spec, template, "full"), examples, stream)}
    for name in spec.lines:
        out[name] = run_line(spec, _line_cache(spec, template, name), name, examples, stream, arrivals)
    refs = out.pop("refs")
    lines = {"full": full_line(stream, refs)} | {n: out[n] for n in spec.lines}
    for name in spec.lines:
        score(lines[name]["records"], refs)
    for entry in lines.values():
        entry["summary"] = summarize(entry["records"], refs)
    config = asdict(spec) | {"data": str(path), "dataset": dataset, "distinct": len(set(stream)), "rate": rate,
                             "blend_service_s": info["blend_service_s"], "machine": machine_line()}
    return {"config": config, "lines": lines, "order": info["order"], "refs": {str(k): v for k, v in refs.items()}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", type=int, default=300, help="questions in the stream (default: %(default)s)")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s of question popularity (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=5, help="passages retrieved per question (default: %(default)s)")
    p.add_argument("--rate", type=float, default=None,
                   help="arrivals per second (default: blend about half busy on its share of the cores, from its service "
                        "time measured alone before the lines)")
    p.add_argument("--lines", default=",".join(DEFAULT_LINES),
                   help=f"lines to replay after the full reference, among {', '.join(LINES)} (default: %(default)s)")
    p.add_argument("--workload-tokens", type=int, default=32, help="answer length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stream and the arrivals (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of each line (default: %(default)s)")
    p.add_argument("--recompute-ratio", type=float, default=None,
                   help="blend's recompute ratio in every line, refinement's first answers included (default: the "
                        "library's default); the rate's calibration uses it too, so pass --rate to compare ratios at one load")


def spec_from_args(args) -> WorkloadSpec:
    lines = tuple(x.strip() for x in args.lines.split(",") if x.strip())
    unknown = [x for x in lines if x not in LINES]
    if unknown or not lines:
        raise SystemExit(f"--lines: unknown {unknown}; choose among {', '.join(LINES)}")
    return WorkloadSpec(data=args.data, out=args.out, store=args.store, model=args.model, queries=args.queries, zipf_s=args.zipf,
                        top_k=args.top_k, max_new_tokens=args.workload_tokens, rate=args.rate, lines=lines, seed=args.seed,
                        threads=args.threads, recompute_ratio=args.recompute_ratio, progress=not args.quiet)


def write(result: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "workload.json").write_text(json.dumps(result, indent=1))
    (out / "workload.md").write_text(format_report(result) + "\n")
    return [out / "workload.json", out / "workload.md", plot(result, out / "workload.png")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m chunkcache.bench.workload", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="QA JSONL or a shared set by name (2wikimqa, musique, ...)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--store", default=store_dir(),
                   help="store directory (the converted model; the bench's stores go under it)")
    p.add_argument("--model", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--from-journal", action="store_true",
                   help="do not run: summarize what OUT/journal-*.jsonl holds (a run in progress or stopped)")
    add_arguments(p)
    args = p.parse_args(argv)
    if args.from_journal:
        spec = spec_from_args(args)
        result = from_journal(Path(args.out), spec.lines)
        n = len(result["lines"]["full"]["records"])
        result["config"] = {"queries": n, "distinct": len(result["refs"]), "data": args.data, "zipf_s": spec.zipf_s,
                            "top_k": spec.top_k, "max_new_tokens": spec.max_new_tokens, "rate": float("nan"),
                            "blend_service_s": float("nan"), "machine": machine_line() + " (read back from the journal)"}
        print(format_report(result))
        return 0
    result = run(spec_from_args(args))
    paths = write(result, Path(args.out))
    print(format_report(result))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
