"""`chunkcache eval`: every mode on the same QA examples, measured in one run.

Every mean comes with a 95% percentile-bootstrap interval over the examples
(chunkcache.stats), so a difference between two runs can be told from noise.
"""

import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from chunkcache.config import DEVIATIONS, DIAGNOSTIC_DEVIATIONS, BlendConfig
from chunkcache.errors import InvalidRequestError
from chunkcache.scores import best_over, exact_match, kl_divergence, token_f1
from chunkcache.stats import bootstrap_ci, median_ratio, percentile
from chunkcache.names import MODES
from chunkcache.sampling import SamplingParams

# The public QA samples shipped beside the repository (../shared/data/qa/, see SOURCES.md there).
QA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qa"
QA_SETS = ("2wikimqa", "hotpotqa", "hotpotqa_fullwiki", "musique")
ORACLE = "oracle"  # the diagnostic BlendConfig.deviation_of (config.DIAGNOSTIC_DEVIATIONS): the true deviation


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    answers: tuple[str, ...]
    passages: tuple[dict, ...]


def resolve_data(data: str | Path, qa_dir: Path = QA_DIR) -> tuple[Path, str]:
    """A QA set's short name (one of QA_SETS, looked up in qa_dir) or a file path -> (path, dataset name)."""
    if str(data) in QA_SETS:
        path = qa_dir / f"{data}.jsonl"
        if not path.is_file():
            raise InvalidRequestError(f"QA set {str(data)!r} is not at {path}; the short names {', '.join(QA_SETS)} "
                                      f"are looked up in {qa_dir} (pass a file path otherwise)")
        return path, str(data)
    return Path(data), Path(data).stem


def load_examples(path: str | Path, limit: int | None = None) -> list[QAExample]:
    """Read the shared QA JSONL format: question, answers, passages [{title, text}]."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"eval data file {path} does not exist (short names: {', '.join(QA_SETS)})")
    out = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                passages = tuple({"title": p.get("title") or "", "text": p["text"]} for p in row["passages"])
                out.append(QAExample(str(row.get("id", line_no)), row["question"], tuple(row.get("answers") or ()), passages))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise InvalidRequestError(f"{path}:{line_no}: not a QA record with question/answers/passages ({exc})") from exc
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise InvalidRequestError(f"{path} holds no examples")
    return out


@dataclass(frozen=True)
class RunSpec:
    """One column of the evaluation: a mode and, for blend, a recompute ratio.

    timed: False for a diagnostic whose TTFT includes work no server would do (the oracle's
    full prefill); its time is recorded but no speedup is reported.
    """

    mode: str
    ratio: float | None = None
    label: str = ""
    blend: BlendConfig | None = None  # selection settings; None = the cache's own
    timed: bool = True

    @property
    def name(self) -> str:
        return self.label or self.mode


def blend_name(ratio: float, selection: str | None = None) -> str:
    """blend@0.15, or blend[probe]@0.15 when several selections are compared."""
    return f"blend[{selection}]@{ratio:g}" if selection else f"blend@{ratio:g}"


def parse_variants(text: str | None) -> tuple[str, ...]:
    """"probe,vattn" -> ("probe", "vattn"), each a serving selection (config.DEVIATIONS)."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    diagnostic = [v for v in names if v in DIAGNOSTIC_DEVIATIONS]
    if diagnostic:
        raise InvalidRequestError(f"{', '.join(diagnostic)} is a diagnostic, not a variant: use --oracle")
    unknown = [v for v in names if v not in DEVIATIONS]
    if unknown or not names:
        raise InvalidRequestError(f"unknown blend variants {unknown or text!r}; choose from {', '.join(DEVIATIONS)}")
    return names


def parse_repairs(text: str | None) -> tuple[tuple[float, int], ...]:
    """"0.1x1,0x0" -> ((0.1, 1), (0.0, 0)): repair budgets (share of the context x steps) to compare."""
    if not text:
        return ()
    out = []
    for item in (v.strip() for v in text.split(",")):
        ratio, sep, steps = item.partition("x")
        try:
            budget = (float(ratio), int(steps))
        except ValueError:
            budget = None
        if not sep or budget is None or not 0 <= budget[0] <= 1 or budget[1] < 0:
            raise InvalidRequestError(f"a repair budget is RATIOxSTEPS (ratio in [0, 1]), e.g. 0.1x1 or 0x0 (none), got {item!r}")
        out.append(budget)
    return tuple(dict.fromkeys(out))


def parse_runs(modes: str, ratios: list[float], variants: tuple[str, ...] = (), oracle: bool = False,
               blend: BlendConfig | None = None, repairs: tuple[tuple[int, int], ...] = ()) -> list[RunSpec]:
    """"full,reuse,blend" x ratios -> run specs; `full` always runs first (every comparison needs it).

    variants: blend selections (deviation_of values) to compare; each gives blend[<v>]@<r> at every
    ratio in place of the plain blend runs. oracle: add oracle@<r> at every ratio. blend: the
    cache's blend settings, which variants and the oracle change only in deviation_of.
    repairs: (ratio, steps) repair budgets; each gives blend[repair RxS]@<r> at every ratio in
    place of the plain blend runs (with the variants: one run per selection and budget).
    """
    names = [m.strip() for m in modes.split(",") if m.strip()]
    for m in names:
        if m not in MODES:
            raise InvalidRequestError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    if (variants or repairs) and "blend" not in names:
        names.append("blend")
    if ("blend" in names or oracle) and not ratios:
        raise InvalidRequestError("blend needs at least one recompute ratio")
    base = blend or BlendConfig()
    runs = [RunSpec("full")]
    for m in names:
        if m == "full":
            continue
        if m == "blend" and (variants or repairs):
            for v in variants or (None,):
                for t, k in repairs or ((None, None),):
                    cfg = base if v is None else replace(base, deviation_of=v)
                    cfg = cfg if t is None else replace(cfg, repair_ratio=t, repair_steps=k)
                    label = ", ".join(x for x in (v, None if t is None else f"repair {t:g}x{k}") if x)
                    runs.extend(RunSpec("blend", r, blend_name(r, label), cfg) for r in ratios)
        elif m == "blend":
            many = len(ratios) > 1
            runs.extend(RunSpec("blend", r, blend_name(r) if many else "blend") for r in ratios)
        else:
            runs.append(RunSpec(m))
    if oracle:
        runs.extend(RunSpec("blend", r, f"{ORACLE}@{r:g}", replace(base, deviation_of=ORACLE), timed=False) for r in ratios)
    return runs


@dataclass
class RunSamples:
    """One run's per-example measurements, in example order."""

    f1: list[float] = field(default_factory=list)
    em: list[float] = field(default_factory=list)
    fidelity: list[float] = field(default_factory=list)
    first_token_agreement: list[float] = field(default_factory=list)
    first_token_kl: list[float] = field(default_factory=list)
    teacher_agreement: list[float] = field(default_factory=list)  # empty for full (it is the teacher)
    recomputed_share: list[float] = field(default_factory=list)
    cache_hit_ratio: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)  # first token to last of a max_new_tokens answer
    ms_per_token: list[float] = field(default_factory=list)  # decode time per token after the first


def _saving_kept(quads: list[tuple[float, float, float, float]]) -> float:
    """mean(full total - run total) / mean(full TTFT - run TTFT) over (full ttft, run ttft, full total, run total)."""
    ttft_saving = statistics.fmean(f - r for f, r, _, _ in quads)
    total_saving = statistics.fmean(fa - ra for _, _, fa, ra in quads)
    return total_saving / ttft_saving if ttft_saving > 0 else float("nan")


def summarize_run(s: RunSamples, full_ttfts: list[float], timed: bool = True, n_resamples: int = 2000, seed: int = 0,
                  full_totals: list[float] | None = None) -> dict:
    """Means over the examples; fidelity, first_token_kl, teacher_agreement and ttft_speedup also get
    <metric>_lo and <metric>_hi, a 95% percentile-bootstrap interval over the examples.

    ttft_speedup = median(full TTFT) / median(run TTFT); its interval resamples examples (pairs);
    total_speedup likewise for the whole answer's time. saving_kept = mean(full total - run total)
    / mean(full TTFT - run TTFT): the share of the first token's saving still there when the
    answer ends (1 = decoding costs what full's does; < 0 = slower than full end to end).
    A metric that was not measured (teacher agreement of full, speedup of an untimed run) is None.
    """
    mean = statistics.fmean

    def ci(values: list, stat=mean) -> tuple[float, float]:
        return bootstrap_ci(values, stat, n_resamples=n_resamples, seed=seed)

    pairs = list(zip(full_ttfts, s.ttft_s))  # (full, run) TTFT per example: the speedup resamples whole examples
    total_pairs = list(zip(full_totals or s.total_s, s.total_s))
    quads = [(ft, rt, fa, ra) for (ft, rt), (fa, ra) in zip(pairs, total_pairs)]
    out: dict = {"n": len(s.ttft_s), "f1": mean(s.f1), "em": mean(s.em), "fidelity": mean(s.fidelity),
                 "first_token_agreement": mean(s.first_token_agreement), "first_token_kl": mean(s.first_token_kl),
                 "teacher_agreement": mean(s.teacher_agreement) if s.teacher_agreement else None,
                 "ttft_median_s": statistics.median(s.ttft_s), "ttft_p95_s": percentile(s.ttft_s, 0.95),
                 "ttft_speedup": median_ratio(pairs) if timed else None, "timed": timed,
                 "total_median_s": statistics.median(s.total_s) if s.total_s else None,
                 "total_speedup": median_ratio(total_pairs) if timed and s.total_s else None,
                 "ms_per_token": mean(s.ms_per_token) if timed and s.ms_per_token else None,
                 "saving_kept": _saving_kept(quads) if timed and quads and full_totals and s.total_s is not full_totals else None,
                 "recomputed_share": mean(s.recomputed_share), "cache_hit_ratio": mean(s.cache_hit_ratio)}
    samples = {"fidelity": s.fidelity, "first_token_kl": s.first_token_kl, "teacher_agreement": s.teacher_agreement}
    for metric, values in samples.items():
        out[f"{metric}_lo"], out[f"{metric}_hi"] = ci(values) if values else (None, None)
    out["ttft_speedup_lo"], out["ttft_speedup_hi"] = ci(pairs, median_ratio) if timed else (None, None)
    out["total_speedup_lo"], out["total_speedup_hi"] = ci(total_pairs, median_ratio) if out["total_speedup"] else (None, None)
    out["ms_per_token_lo"], out["ms_per_token_hi"] = ci(s.ms_per_token) if out["ms_per_token"] is not None else (None, None)
    out["saving_kept_lo"], out["saving_kept_hi"] = ci(quads, _saving_kept) if out["saving_kept"] is not None else (None, None)
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def _answer_text(cache, ans) -> tuple[tuple[int, ...], str]:
    """The tokens up to and including the first end-of-sequence token, and their text: what the
    answer is when decoding stops there (the timed answer goes on to max_new_tokens)."""
    eos = set(cache.generator.spec.eos_token_ids)
    token_ids = ans.token_ids
    cut = next((i + 1 for i, t in enumerate(token_ids) if t in eos), None)
    if cut is None:
        return tuple(token_ids), ans.text
    kept = tuple(token_ids[:cut])
    return kept, cache.generator.tokenizer.decode(list(kept), skip_special_tokens=True).strip()


def evaluate(cache, examples: list[QAExample], runs: list[RunSpec], max_new_tokens: int = 32, progress: bool = True,
             n_resamples: int = 2000, seed: int = 0) -> dict:
    """Warm every example's passages, then answer each example in every run (full first).

    Every other run is also teacher-forced on full's tokens (share of top-1 matches).
    Answers are timed at their full length (`max_new_tokens`, past an end-of-sequence token:
    the total time of an answer of that length); quality is scored on the answer up to its
    first end-of-sequence token, which greedy decoding gives unchanged. Chain entries are off:
    every run sees each context as new (an exact repeat is not what blend's quality measures).
    Returns {"runs": {name: summary}, "examples": [...per-example answers...]}.
    """
    if not runs or runs[0].mode != "full":
        raise InvalidRequestError("the first run must be full: every other run is compared with it")
    cache.warm([p for ex in examples for p in ex.passages], progress=progress, desc="warm-up")
    samples = {r.name: RunSamples() for r in runs}
    per_example = []
    bar = tqdm(total=len(examples) * len(runs), desc="eval", unit="answer", disable=not progress)
    for ex in examples:
        row = {"id": ex.id, "question": ex.question, "answers": list(ex.answers), "outputs": {}}
        full = None
        for run in runs:
            ans = cache.answer(ex.question, list(ex.passages), mode=run.mode, recompute_ratio=run.ratio, max_new_tokens=max_new_tokens,
                               return_logprobs=True, blend=run.blend, teacher_ids=None if full is None else full_ids,
                               sampling=SamplingParams(ignore_eos=True), chain=False)
            ids, text = _answer_text(cache, ans)
            if full is None:
                full, full_ids, full_text = ans, ids, text
            s = samples[run.name]
            s.f1.append(best_over(token_f1, text, list(ex.answers)))
            s.em.append(best_over(exact_match, text, list(ex.answers)))
            s.fidelity.append(token_f1(text, full_text))
            s.first_token_agreement.append(float(ans.token_ids[0] == full.token_ids[0]))
            s.first_token_kl.append(kl_divergence(full.first_logprobs, ans.first_logprobs))
            if ans is not full:
                s.teacher_agreement.append(ans.teacher_agreement)
            s.recomputed_share.append(ans.recomputed_tokens / max(1, ans.context_tokens))
            s.cache_hit_ratio.append(ans.cache_hits / max(1, len(ans.passages)))
            s.ttft_s.append(ans.ttft_s)
            s.total_s.append(ans.ttft_s + ans.timings.decode)
            if ans.generated_tokens > 1:
                s.ms_per_token.append(1e3 * ans.timings.decode / (ans.generated_tokens - 1))
            row["outputs"][run.name] = {"text": text, "ttft_s": round(ans.ttft_s, 4), "total_s": round(s.total_s[-1], 4),
                                        "recomputed_tokens": ans.recomputed_tokens,
                                        "fidelity": round(s.fidelity[-1], 5), "first_token_kl": round(s.first_token_kl[-1], 6),
                                        "teacher_agreement": None if ans is full else round(ans.teacher_agreement, 5)}
            bar.update(1)
        per_example.append(row)
    bar.close()
    full_ttfts, full_totals = samples[runs[0].name].ttft_s, samples[runs[0].name].total_s
    return {
        "runs": {r.name: summarize_run(samples[r.name], full_ttfts, r.timed, n_resamples, seed, full_totals) for r in runs},
        "examples": per_example,
        "bootstrap": {"level": 0.95, "resamples": n_resamples, "seed": seed, "over": "examples"},
    }


def with_interval(rep: dict, metric: str, digits: int = 3) -> str:
    """"0.652 [0.551, 0.748]"; "n/a" for a metric that was not measured."""
    value = rep.get(metric)
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    lo, hi = rep.get(f"{metric}_lo"), rep.get(f"{metric}_hi")
    return text if lo is None else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_table(result: dict) -> str:
    """One row per run; fidelity, KL, teacher agreement and speedup with their 95% intervals."""
    head = ["run", "n", "f1", "em", "fidelity", "1st-token agree", "1st-token KL", "teacher agree", "TTFT median s", "speedup",
            "total median s", "total speedup", "ms/token", "saving kept", "recomputed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    untimed = []
    for name, rep in result["runs"].items():
        timed = rep.get("timed", True)
        if not timed:
            untimed.append(name)
        cells = [name, str(rep["n"]), f"{rep['f1']:.3f}", f"{rep['em']:.3f}", with_interval(rep, "fidelity"),
                 f"{rep['first_token_agreement']:.3f}", with_interval(rep, "first_token_kl", 4), with_interval(rep, "teacher_agreement"),
                 f"{rep['ttft_median_s']:.3f}" if timed else "n/a", with_interval(rep, "ttft_speedup", 2),
                 f"{rep['total_median_s']:.3f}" if timed and rep.get("total_median_s") is not None else "n/a",
                 with_interval(rep, "total_speedup", 2), with_interval(rep, "ms_per_token", 1), with_interval(rep, "saving_kept", 2)]
        lines.append("| " + " | ".join(cells + [f"{rep['recomputed_share']:.3f}"]) + " |")
    boot = result.get("bootstrap")
    if boot:
        lines.append(f"\n[lo, hi]: {boot['level']:.0%} percentile bootstrap over the examples ({boot['resamples']} resamples, seed {boot['seed']}).")
        lines.append("total: the first token to the last of a max-new-tokens answer; saving kept: mean(full total - run total) / "
                     "mean(full TTFT - run TTFT), the share of the first token's saving left at the answer's end.")
    if untimed:
        lines.append(f"{', '.join(untimed)}: diagnostic (selection by the true deviation from a full prefill); its TTFT is not meaningful.")
    return "\n".join(lines)
