"""The bench's figures (matplotlib, Agg backend: no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_FILES = ("ttft_vs_chunks.png", "fidelity_vs_ratio.png", "pareto.png")


def plot_ttft(ttft: dict, path: Path) -> Path:
    """Median TTFT per variant against context size (log y); bars reach up to the p95."""
    sizes = ttft["sizes"]
    tokens = [ttft["context_tokens"][str(n)] for n in sizes]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, row in ttft["variants"].items():
        med = [row["by_size"][str(n)]["median_s"] * 1000 for n in sizes]
        up = [row["by_size"][str(n)]["p95_s"] * 1000 - m for n, m in zip(sizes, med)]
        style = "--" if row["kind"] == "peer" else "-"
        ax.errorbar(sizes, med, yerr=[[0] * len(med), up], fmt="o" + style, capsize=3, label=name)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{n}\n({t} tok)" for n, t in zip(sizes, tokens)])
    ax.set_xlabel("chunks in the prompt (context tokens)")
    ax.set_ylabel("time to first token, ms (median; bar to p95)")
    ax.set_title("TTFT vs context size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def selection_curves(runs: dict) -> dict[str, list[tuple[str, dict]]]:
    """The blend runs at fixed ratios grouped by selection, each sorted by ratio: {selection: [(name, run), ...]}."""
    curves: dict[str, list[tuple[str, dict]]] = {}
    for name, r in runs.items():
        if r.get("mode") == "blend" and r.get("ratio") is not None and r.get("selection"):
            curves.setdefault(r["selection"], []).append((name, r))
    return {sel: sorted(points, key=lambda p: p[1]["ratio"]) for sel, points in curves.items()}


def _label(selection: str, quality: dict) -> str:
    return f"blend[{selection}]" + (" (default)" if selection == quality.get("default_selection") else "")


def plot_fidelity(quality: dict, path: Path) -> Path:
    """Fidelity to full and first-token KL against the recompute ratio, one line each per selection;
    F1 against gold for the default selection; adaptive at its mean share."""
    runs = quality["runs"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    kl = ax.twinx()
    for i, (sel, curve) in enumerate(selection_curves(runs).items()):
        xs = [r["ratio"] for _, r in curve]
        ax.plot(xs, [r["fidelity"] for _, r in curve], "o-", color=f"C{i}", label=f"{_label(sel, quality)}: fidelity to full")
        kl.plot(xs, [max(r["first_token_kl"], 1e-6) for _, r in curve], "^--", color=f"C{i}", alpha=0.6, label=f"blend[{sel}]: first-token KL")
        if sel == quality.get("default_selection"):
            ax.plot(xs, [r["f1"] for _, r in curve], "s:", color=f"C{i}", alpha=0.6, label=f"blend[{sel}]: F1 vs gold")
    for name, r in runs.items():
        if name.startswith("adaptive"):
            ax.plot([r["recomputed_share"]], [r["fidelity"]], "*", color="C3", markersize=14, label=f"{name} (at its mean share)")
        if name == "ape":
            ax.axhline(r["fidelity"], color="C4", linestyle="--", label="ape: fidelity")
    ax.set_xlabel("recompute ratio r")
    ax.set_ylabel("token F1")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    kl.set_yscale("log")
    kl.set_ylabel("KL(full || run) of the first token, nats")
    lines = ax.get_legend_handles_labels()
    more = kl.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    ax.set_title(f"Quality vs recompute ratio ({quality['n_examples']} examples)")
    return _save(fig, path)


def _err(r: dict, metric: str) -> list[list[float]]:
    """matplotlib's [[below], [above]] from a run's 95% interval (0 when the run has none)."""
    lo, hi = r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
    return [[0.0], [0.0]] if lo is None else [[max(0.0, r[metric] - lo)], [max(0.0, hi - r[metric])]]


def plot_pareto(quality: dict, path: Path) -> Path:
    """TTFT speedup over full (x) against fidelity to full (y): one line per blend selection through its
    ratios (points labelled with r), reuse and full as points; bars are the 95% bootstrap intervals."""
    runs = quality["runs"]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for i, (sel, curve) in enumerate(selection_curves(runs).items()):
        timed = [(n, r) for n, r in curve if r.get("ttft_speedup") is not None]
        xs, ys = [r["ttft_speedup"] for _, r in timed], [r["fidelity"] for _, r in timed]
        ax.plot(xs, ys, "o-", color=f"C{i}", label=_label(sel, quality))
        for _, r in timed:
            ax.errorbar([r["ttft_speedup"]], [r["fidelity"]], xerr=_err(r, "ttft_speedup"), yerr=_err(r, "fidelity"),
                        color=f"C{i}", alpha=0.35, capsize=2)
            ax.annotate(f"r={r['ratio']:g}", (r["ttft_speedup"], r["fidelity"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=f"C{i}")
    for name, marker in (("reuse", "D"), ("full", "s")):
        r = runs.get(name)
        if r is not None and r.get("ttft_speedup") is not None:
            ax.errorbar([r["ttft_speedup"]], [r["fidelity"]], xerr=_err(r, "ttft_speedup"), yerr=_err(r, "fidelity"),
                        fmt=marker, color="black", capsize=2, markersize=7)
            ax.annotate(name, (r["ttft_speedup"], r["fidelity"]), textcoords="offset points", xytext=(5, -11), fontsize=8)
    ax.set_xlabel("TTFT speedup over full (median of full / median of run)")
    ax.set_ylabel("fidelity to full (token F1 of the answers)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Speed vs fidelity per selection ({quality['n_examples']} examples; bars: 95% bootstrap)")
    return _save(fig, path)


def write_plots(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ttft_png, fid_png, pareto_png = (out_dir / f for f in PLOT_FILES)
    return [plot_ttft(result["ttft"], ttft_png), plot_fidelity(result["quality"], fid_png), plot_pareto(result["quality"], pareto_png)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
