"""The bench's figures (matplotlib, Agg backend: no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_FILES = ("ttft_vs_chunks.png", "fidelity_vs_ratio.png", "speedup_vs_fidelity.png")


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


def plot_fidelity(quality: dict, path: Path) -> Path:
    """Fidelity to full and first-token KL against the recompute ratio; adaptive at its mean share."""
    runs = quality["runs"]
    curve = sorted((r["ratio"], r) for name, r in runs.items() if name.startswith("blend@"))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot([x for x, _ in curve], [r["fidelity"] for _, r in curve], "o-", color="C0", label="blend: fidelity to full")
    ax.plot([x for x, _ in curve], [r["f1"] for _, r in curve], "s:", color="C2", label="blend: F1 vs gold")
    for name, r in runs.items():
        if name.startswith("adaptive"):
            ax.plot([r["recomputed_share"]], [r["fidelity"]], "*", color="C3", markersize=14, label=f"{name} (at its mean share)")
        if name == "ape":
            ax.axhline(r["fidelity"], color="C4", linestyle="--", label="ape: fidelity")
    ax.set_xlabel("recompute ratio r")
    ax.set_ylabel("token F1")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    kl = ax.twinx()
    kl.plot([x for x, _ in curve], [max(r["first_token_kl"], 1e-6) for _, r in curve], "^--", color="C1", label="blend: first-token KL")
    kl.set_yscale("log")
    kl.set_ylabel("KL(full || run) of the first token, nats")
    lines = ax.get_legend_handles_labels()
    more = kl.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    ax.set_title(f"Quality vs recompute ratio ({quality['n_examples']} examples)")
    return _save(fig, path)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats on both axes (higher x and higher y are better),
    ordered by x. points: name -> (fidelity, speedup)."""
    front = []
    for name, (x, y) in points.items():
        beaten = any(ox >= x and oy >= y and (ox, oy) != (x, y) for other, (ox, oy) in points.items() if other != name)
        if not beaten:
            front.append(name)
    return sorted(front, key=lambda n: points[n])


def plot_frontier(quality: dict, path: Path) -> Path:
    """TTFT speedup over full against fidelity, each run a point; the line joins the Pareto front."""
    points = {name: (r["fidelity"], r["ttft_speedup"]) for name, r in quality["runs"].items()}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, (x, y) in points.items():
        ax.plot([x], [y], "o", color="C3" if name.startswith("adaptive") else "C0")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(points)
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "-", color="C1", alpha=0.7, label="Pareto front")
    ax.legend(fontsize=8)
    ax.set_xlabel("fidelity to full (token F1 of answers)")
    ax.set_ylabel("TTFT speedup over full (median)")
    ax.set_title("Trade-off: speedup vs fidelity")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def write_plots(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ttft_png, fid_png, frontier_png = (out_dir / f for f in PLOT_FILES)
    return [plot_ttft(result["ttft"], ttft_png), plot_fidelity(result["quality"], fid_png), plot_frontier(result["quality"], frontier_png)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
