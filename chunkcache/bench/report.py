"""The bench's outputs: a machine description, DIR/bench.json and a Markdown summary."""

import datetime
import json
import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa() -> list[str]:
    """The vector extensions that decide float32 vs bfloat16 speed on this CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f" {f}" in flags]


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on Unix
        return None


def describe_machine() -> dict:
    import torch
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "isa": _isa(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "loadavg": _loadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_line() -> str:
    """describe_machine() in one line, printed beside every figure."""
    m = describe_machine()
    return (f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch threads {m['torch_threads']}, "
            f"ISA {'/'.join(m['isa']) or 'unknown'}, load {m['loadavg']}")


def write_json(result: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return path


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def format_ttft(ttft: dict) -> list[str]:
    sizes = [str(n) for n in ttft["sizes"]]
    largest = sizes[-1]
    head = ["variant"] + [f"{n} chunks ({ttft['context_tokens'][n]} tok)" for n in sizes] + [f"speedup @{largest}", f"load @{largest}"]
    rows = []
    for name, row in ttft["variants"].items():
        cells = [f"{_ms(row['by_size'][n]['median_s'])} ({_ms(row['by_size'][n]['p95_s'])})" for n in sizes]
        last = row["by_size"][largest]
        rows.append([name] + cells + [f"{last['speedup_vs_full']:.2f}x", _ms(last["load_median_s"])])
    lines = [f"### TTFT: median (p95) ms over {ttft['repeats']} repeats, chunks of ~{ttft['chunk_tokens']} tokens, warm LMDB store", ""]
    lines += _table(head, rows)
    lines += ["", "load = median time reading and decoding the chunk KV from LMDB (ms), part of TTFT."]
    lines += [f"- {p['name']}: {p['detail']}" for p in ttft["peers"]]
    return lines


def _cell(r: dict, metric: str, digits: int = 3, unit: str = "") -> str:
    """"0.800 [0.700, 0.900]" with the run's 95% interval when it has one; "n/a" when not measured."""
    value = r.get(metric)
    if value is None:
        return "n/a"
    lo, hi = r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
    text = f"{value:.{digits}f}{unit}"
    return text if lo is None else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_quality(quality: dict) -> list[str]:
    head = ["run", "recomputed", "fidelity", "F1 gold", "1st-token agree", "1st-token KL", "teacher agree", "TTFT ms", "speedup",
            "total ms", "total speedup", "ms/token", "saving kept"]
    rows = []
    for name, r in quality["runs"].items():
        rows.append([name, f"{r['recomputed_share']:.3f}", _cell(r, "fidelity"), f"{r['f1']:.3f}", f"{r['first_token_agreement']:.2f}",
                     _cell(r, "first_token_kl", 4), _cell(r, "teacher_agreement"), _ms(r["ttft_median_s"]), _cell(r, "ttft_speedup", 2, "x"),
                     _ms(r.get("total_median_s")), _cell(r, "total_speedup", 2, "x"), _cell(r, "ms_per_token", 1),
                     _cell(r, "saving_kept", 2)])
    lines = [f"### Quality vs recompute ratio: {quality['n_examples']} examples as given, {quality['max_new_tokens']}-token greedy answers", ""]
    lines += _table(head, rows)
    lines += ["", "fidelity = token F1 against full prefill's answer; KL(full || run) of the first token's distribution, nats; "
              "teacher agree = share of top-1 tokens equal to full's when full's answer is fed; [lo, hi] = 95% bootstrap over the examples; "
              "total = first token to the last of the answer; ms/token = decode time per token after the first; saving kept = "
              "mean(full total - run total) / mean(full TTFT - run TTFT), the share of the first token's saving left at the answer's end."]
    return lines


def dominates(a: dict, b: dict) -> bool:
    """Run a is at least as good as run b on both fidelity and TTFT speedup."""
    return a["fidelity"] >= b["fidelity"] and a["ttft_speedup"] >= b["ttft_speedup"]


def speed_tied(a: dict, b: dict) -> bool:
    """The two speedups' 95% intervals overlap: at the same ratio the compute is the same, and a
    difference inside the timing noise says nothing (False when intervals are missing)."""
    lo_a, hi_a, lo_b, hi_b = (r.get(k) for r in (a, b) for k in ("ttft_speedup_lo", "ttft_speedup_hi"))
    if None in (lo_a, hi_a, lo_b, hi_b):
        return False
    return lo_a <= hi_b and lo_b <= hi_a


def verdict(a: dict, b: dict) -> str:
    """"yes" (a dominates b), "tied speed" (better or equal fidelity, speedups equal within their
    95% intervals), or "no"."""
    if dominates(a, b):
        return "yes"
    if a["fidelity"] >= b["fidelity"] and speed_tied(a, b):
        return "tied speed"
    return "no"


def format_selections(quality: dict) -> list[str]:
    """Per ratio, the default selection against each other selection on the speed/fidelity plane (pareto.png)."""
    default = quality.get("default_selection")
    by_sel: dict[str, dict[float, dict]] = {}
    for r in quality["runs"].values():
        if r.get("mode") == "blend" and r.get("ratio") is not None and r.get("selection"):
            by_sel.setdefault(r["selection"], {})[r["ratio"]] = r
    if default not in by_sel or len(by_sel) < 2:
        return []
    lines = []
    for other in (s for s in by_sel if s != default):
        ratios = sorted(set(by_sel[default]) & set(by_sel[other]))
        rows, wins, ties = [], 0, 0
        for x in ratios:
            a, b = by_sel[default][x], by_sel[other][x]
            v = verdict(a, b)
            wins, ties = wins + (v == "yes"), ties + (v == "tied speed")
            rows.append([f"{x:g}", _cell(a, "fidelity"), _cell(b, "fidelity"), _cell(a, "ttft_speedup", 2, "x"),
                         _cell(b, "ttft_speedup", 2, "x"), v])
        lines += [f"### Selection {default} (default) vs {other}: {default} dominates at {wins} of {len(ratios)} ratios"
                  + (f", and at {ties} more has the better fidelity at a speedup equal within the 95% intervals" if ties else ""), ""]
        lines += _table(["r", f"fidelity {default}", f"fidelity {other}", f"speedup {default}", f"speedup {other}", "dominates"], rows)
        lines += [""]
    return lines[:-1]


def format_figures(plots: list[str]) -> list[str]:
    titles = {"pareto.png": "speed vs fidelity per selection (Pareto)", "fidelity_vs_ratio.png": "quality vs recompute ratio",
              "ttft_vs_chunks.png": "TTFT vs context size"}
    return ["### Figures", ""] + [f"- [{name}]({name}): {titles.get(name, name)}" for name in plots] + \
        ([f"", f"![speed vs fidelity](pareto.png)"] if "pareto.png" in plots else [])


def format_decode(decode: dict) -> list[str]:
    rows = []
    for name, r in decode["variants"].items():
        rate = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}"
        per = "-" if r["ms_per_token"] is None else f"{r['ms_per_token']:.0f}"
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        rows.append([name, rate, per, ", ".join(map(str, r["tokens"])), peak])
    lines = [f"### Decode speed at {decode['chunks']} chunks, peak memory at {decode['memory_chunks']} chunks "
             f"(greedy answers of up to {decode['max_new_tokens']} tokens, median of {decode['repeats']})", ""]
    lines += _table(["variant", "tokens/s after the first", "ms/token", "tokens decoded", f"peak MiB @{decode['memory_chunks']}"], rows)
    lines += ["", "peak = resident memory one whole answer adds above the level before it (RSS polled every ms after "
              "malloc_trim; the CUDA allocator's peak on a GPU). With repair on (--repair-ratio), blend's first decode step also repairs context tokens."]
    return lines


def format_kernels(kernels: list[dict]) -> list[str]:
    rows = [[k["op"], k["impl"], f"{k['median_ms']:.3f}", f"{k['p95_ms']:.3f}", k["shape"]] for k in kernels]
    return ["### Kernels (chunkcache.bench.kernels)", ""] + _table(["op", "impl", "median ms", "p95 ms", "shape"], rows)


def format_summary(result: dict, plots: list[str] | tuple[str, ...] = ()) -> str:
    """The Markdown summary; plots: file names of the figures written beside it."""
    m = result["machine"]
    lines = [
        "## chunkcache bench",
        "",
        f"{m['cpu']}, {m['usable_cores']} usable cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"transformers {m['transformers']}, {m['date']}; load average {_load(m.get('loadavg'))} -> {_load(m.get('loadavg_end'))}",
        f"model: {Path(result['model']['dir']).name} ({result['model']['n_layers']} layers)",
        "",
    ]
    lines += format_ttft(result["ttft"]) + [""] + format_quality(result["quality"])
    if result.get("decode"):
        lines += [""] + format_decode(result["decode"])
    selections = format_selections(result["quality"])
    if selections:
        lines += [""] + selections
    if result.get("kernels"):
        lines += [""] + format_kernels(result["kernels"])
    if plots:
        lines += [""] + format_figures(list(plots))
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "?" if not values else f"{values[0]:.2f}"


def write_summary(result: dict, out_dir: Path, plots: list[str] | tuple[str, ...] = ()) -> tuple[Path, str]:
    text = format_summary(result, plots)
    path = out_dir / "summary.md"
    path.write_text(text)
    return path, text
