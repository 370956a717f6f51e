"""`chunkcache eval`: every mode on the same QA examples, measured in one run."""

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from chunkcache.config import BlendConfig
from chunkcache.errors import InvalidRequestError
from chunkcache.metrics import best_over, exact_match, kl_divergence, token_f1
from chunkcache.types import MODES


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    answers: tuple[str, ...]
    passages: tuple[dict, ...]


def load_examples(path: str | Path, limit: int | None = None) -> list[QAExample]:
    """Read the shared QA JSONL format: question, answers, passages [{title, text}]."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"eval data file {path} does not exist")
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
    """One column of the evaluation: a mode and, for blend, a recompute ratio."""

    mode: str
    ratio: float | None = None
    label: str = ""
    blend: BlendConfig | None = None  # selection settings; None = the cache's own

    @property
    def name(self) -> str:
        return self.label or self.mode


def parse_runs(modes: str, ratios: list[float]) -> list[RunSpec]:
    """"full,reuse,blend" x ratios -> run specs; `full` always runs (every comparison needs it)."""
    names = [m.strip() for m in modes.split(",") if m.strip()]
    for m in names:
        if m not in MODES:
            raise InvalidRequestError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    runs = [RunSpec("full")]
    for m in names:
        if m == "full":
            continue
        if m == "blend":
            if not ratios:
                raise InvalidRequestError("blend needs at least one recompute ratio")
            many = len(ratios) > 1
            runs.extend(RunSpec("blend", r, f"blend@{r:g}" if many else "blend") for r in ratios)
        else:
            runs.append(RunSpec(m))
    return runs


@dataclass
class ModeReport:
    n: int = 0
    f1: float = 0.0
    em: float = 0.0
    fidelity: float = 0.0
    first_token_agreement: float = 0.0
    first_token_kl: float = 0.0
    ttft_median_s: float = 0.0
    ttft_p95_s: float = 0.0
    ttft_speedup: float = 0.0
    recomputed_share: float = 0.0
    cache_hit_ratio: float = 0.0
    ttfts: list[float] = field(default_factory=list, repr=False)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def evaluate(cache, examples: list[QAExample], runs: list[RunSpec], max_new_tokens: int = 32, progress: bool = True) -> dict:
    """Warm every example's passages, then answer each example in every run (full first).

    Returns {"runs": {name: report}, "examples": [...per-example answers...]}.
    """
    cache.warm([p for ex in examples for p in ex.passages], progress=progress, desc="warm-up")
    reports = {r.name: ModeReport() for r in runs}
    sums = {r.name: {"f1": 0.0, "em": 0.0, "fid": 0.0, "agree": 0.0, "kl": 0.0, "rec": 0.0, "hit": 0.0} for r in runs}
    per_example = []
    bar = tqdm(total=len(examples) * len(runs), desc="eval", unit="answer", disable=not progress)
    for ex in examples:
        row = {"id": ex.id, "question": ex.question, "answers": list(ex.answers), "outputs": {}}
        full = None
        for run in runs:
            ans = cache.answer(ex.question, list(ex.passages), mode=run.mode, recompute_ratio=run.ratio, max_new_tokens=max_new_tokens,
                               return_logprobs=True, blend=run.blend)
            if run.mode == "full":
                full = ans
            s = sums[run.name]
            s["f1"] += best_over(token_f1, ans.text, list(ex.answers))
            s["em"] += best_over(exact_match, ans.text, list(ex.answers))
            s["fid"] += token_f1(ans.text, full.text)
            s["agree"] += float(ans.token_ids[0] == full.token_ids[0])
            s["kl"] += kl_divergence(full.first_logprobs, ans.first_logprobs)
            s["rec"] += ans.recomputed_tokens / max(1, ans.context_tokens)
            s["hit"] += ans.cache_hits / max(1, len(ans.passages))
            reports[run.name].ttfts.append(ans.ttft_s)
            row["outputs"][run.name] = {"text": ans.text, "ttft_s": round(ans.ttft_s, 4), "recomputed_tokens": ans.recomputed_tokens}
            bar.update(1)
        per_example.append(row)
    bar.close()
    full_median = statistics.median(reports["full"].ttfts)
    for name, rep in reports.items():
        s, n = sums[name], len(examples)
        rep.n = n
        rep.f1, rep.em, rep.fidelity = s["f1"] / n, s["em"] / n, s["fid"] / n
        rep.first_token_agreement, rep.first_token_kl = s["agree"] / n, s["kl"] / n
        rep.recomputed_share, rep.cache_hit_ratio = s["rec"] / n, s["hit"] / n
        rep.ttft_median_s = statistics.median(rep.ttfts)
        rep.ttft_p95_s = _p95(rep.ttfts)
        rep.ttft_speedup = full_median / rep.ttft_median_s
    return {
        "runs": {name: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(rep).items() if k != "ttfts"} for name, rep in reports.items()},
        "examples": per_example,
    }


def format_table(result: dict) -> str:
    cols = ["n", "f1", "em", "fidelity", "first_token_agreement", "first_token_kl", "ttft_median_s", "ttft_speedup", "recomputed_share"]
    head = "| run | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for name, rep in result["runs"].items():
        lines.append(f"| {name} | " + " | ".join(f"{rep[c]:.3f}" if isinstance(rep[c], float) else str(rep[c]) for c in cols) + " |")
    return "\n".join(lines)
