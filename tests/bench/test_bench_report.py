"""The bench's pure pieces: statistics, run lists, presets, the summary and the plots, on a fake result."""

import json
from dataclasses import replace

import pytest

from chunkcache.bench.report import format_summary, write_json, write_summary
from chunkcache.bench.runner import BenchSpec, default_selections, quality_runs, rotated, summarize
from chunkcache.bench.variants import Sample
from chunkcache.config import BlendConfig
from chunkcache.errors import ConfigError

# (name, mode, ratio, selection, fidelity, speedup, recomputed share); probe beats vattn at 0.15, ties at 1, is slower at 0
QUALITY_ROWS = (("full", "full", 1.0, None, 1.0, 1.0, 1.0), ("reuse", "reuse", 0.0, None, 0.6, 6.0, 0.0),
                ("ape", "ape", 0.0, None, 0.5, 6.0, 0.0),
                ("blend[probe]@0", "blend", 0.0, "probe", 0.6, 5.0, 0.0), ("blend[probe]@0.15", "blend", 0.15, "probe", 0.8, 4.0, 0.15),
                ("blend[probe]@1", "blend", 1.0, "probe", 1.0, 1.0, 1.0),
                ("blend[vattn]@0", "blend", 0.0, "vattn", 0.6, 5.5, 0.0), ("blend[vattn]@0.15", "blend", 0.15, "vattn", 0.7, 3.5, 0.15),
                ("blend[vattn]@1", "blend", 1.0, "vattn", 1.0, 1.0, 1.0),
                ("adaptive@0.5", "blend", None, "probe", 0.75, 4.5, 0.09))


def fake_result(kernels: bool = False) -> dict:
    sizes = [2, 5]
    variants = {}
    for name, kind, base in (("full", "chunkcache", 1.0), ("reuse", "chunkcache", 0.2), ("blend@0.15", "chunkcache", 0.4),
                             ("hf_generate", "peer", 1.1)):
        by_size = {}
        for n in sizes:
            median = base * n / 10
            by_size[str(n)] = {"n": 3, "median_s": median, "p95_s": median * 1.2, "load_median_s": None if name in ("full", "hf_generate") else 0.003,
                               "prompt_tokens": 60 + 256 * n, "samples_s": [median] * 3, "speedup_vs_full": 1.0 / base}
        variants[name] = {"kind": kind, "by_size": by_size}
    runs = {}
    for name, mode, ratio, selection, fid, speedup, share in QUALITY_ROWS:
        runs[name] = {"n": 2, "f1": fid / 2, "em": 0.0, "fidelity": fid, "first_token_agreement": fid, "first_token_kl": (1 - fid) / 3,
                      "teacher_agreement": None if name == "full" else fid, "ttft_median_s": 0.1 + share, "ttft_p95_s": 0.2 + share,
                      "ttft_speedup": speedup, "timed": True, "recomputed_share": share, "cache_hit_ratio": 1.0, "mode": mode, "ratio": ratio}
        if selection:
            runs[name]["selection"] = selection
        if name.startswith("blend[probe]"):  # intervals on some runs only: the report must handle both
            runs[name].update(fidelity_lo=fid - 0.1, fidelity_hi=min(1.0, fid + 0.05), ttft_speedup_lo=speedup * 0.9, ttft_speedup_hi=speedup * 1.1,
                              total_median_s=1.25, total_speedup=1.5, ms_per_token=61.0, ms_per_token_lo=60.0, ms_per_token_hi=62.0,
                              saving_kept=0.8, saving_kept_lo=0.7, saving_kept_hi=0.9)
    return {
        "machine": {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "torch_threads": 2, "loadavg": [0.5, 0.4, 0.3], "loadavg_end": [1.0, 0.5, 0.3],
                    "torch": "2.x", "transformers": "5.x", "date": "2026-01-01T00:00:00+00:00"},
        "model": {"dir": "/x/smollm2-135m-instruct", "n_layers": 30},
        "ttft": {"sizes": sizes, "chunk_tokens": 256, "context_tokens": {"2": 514, "5": 1285}, "repeats": 3, "variants": variants,
                 "peers": [{"name": "hf_generate", "available": True, "detail": "generate"},
                           {"name": "llama.cpp", "available": False, "detail": "skipped: not installed"}]},
        "quality": {"runs": runs, "n_examples": 2, "max_new_tokens": 8, "examples": [], "selections": ["probe", "vattn"],
                    "default_selection": "probe"},
        "kernels": [{"op": "rerotate", "impl": "reference", "median_ms": 1.5, "p95_ms": 2.0, "shape": "[30, 3, 2560, 64]"}] if kernels else None,
    }


def test_summarize_reports_median_p95_and_load():
    s = summarize([Sample(0.3, 0.01, 100), Sample(0.1, 0.03, 100), Sample(0.2, 0.02, 100)])
    assert s["median_s"] == 0.2 and s["p95_s"] == 0.3 and s["n"] == 3
    assert s["load_median_s"] == 0.02 and s["prompt_tokens"] == 100
    assert summarize([Sample(1.0)])["load_median_s"] is None


def test_rotation_gives_every_variant_every_position():
    items = ["a", "b", "c"]
    assert rotated(items, 0) == items and rotated(items, 1) == ["b", "c", "a"] and rotated(items, 4) == ["b", "c", "a"]
    assert {tuple(rotated(items, k))[0] for k in range(3)} == set(items)


def test_quality_runs_start_with_full_and_cover_every_ratio_for_every_selection():
    spec = BenchSpec(data="x", store="y", quality_ratios=(0.0, 0.15, 1.0), selections=("probe", "vattn"), adaptive_coverage=0.6,
                     adaptive_max_ratio=0.4)
    runs = quality_runs(spec)
    names = [r.name for r, _ in runs]
    assert names == ["full", "reuse", "ape", "blend[probe]@0", "blend[probe]@0.15", "blend[probe]@1",
                     "blend[probe+repair]@0", "blend[probe+repair]@0.15", "blend[probe+repair]@1",
                     "blend[vattn]@0", "blend[vattn]@0.15", "blend[vattn]@1", "adaptive@0.6"]
    default = BlendConfig()
    assert default.repair_ratio == 0  # the default does not repair (README: the trade), so a repair line is drawn
    for run, meta in runs[3:-1]:
        assert run.ratio == meta["ratio"]
        if meta["selection"] == "probe":  # the default exactly as it serves
            assert run.blend == default
        elif meta["selection"] == "probe+repair":  # the default plus the repair option; nothing else differs
            assert (run.blend.repair_ratio, run.blend.repair_steps) == (0.1, 1)
            assert replace(run.blend, repair_ratio=0.0) == default
            continue
        else:  # other lines: their selection, without repair; nothing else differs
            assert run.blend.repair_ratio == 0
            assert run.blend.deviation_of == meta["selection"]
            assert replace(run.blend, deviation_of=default.deviation_of, repair_ratio=default.repair_ratio,
                           repair_steps=default.repair_steps) == default
    adaptive, meta = runs[-1]
    assert adaptive.ratio == 0.4 and adaptive.blend.adaptive_coverage == 0.6 and meta["max_ratio"] == 0.4
    assert meta["selection"] == BlendConfig().deviation_of


def test_default_selections_are_the_configured_default_then_vattn():
    selections = default_selections()
    assert selections[0] == BlendConfig().deviation_of and "vattn" in selections
    assert len(set(selections)) == len(selections) == (1 if BlendConfig().deviation_of == "vattn" else 2)
    assert BenchSpec(data="x", store="y").selections == selections


@pytest.mark.parametrize("bad", [{"sizes": ()}, {"sizes": (0, 2)}, {"repeats": 0}, {"quality_ratios": (1.5,)},
                                 {"adaptive_coverage": 0.0}, {"peers": ("sglang",)}, {"selections": ()}, {"selections": ("bogus",)},
                                 {"selections": ("oracle",)}])
def test_spec_refuses_bad_values(bad):
    with pytest.raises(ConfigError):
        BenchSpec(data="x", store="y", **bad)


def test_summary_has_every_table_row():
    text = format_summary(fake_result(kernels=True))
    assert "Test CPU" in text
    assert "| variant | 2 chunks (514 tok) | 5 chunks (1285 tok) | speedup @5 | load @5 |" in text
    assert "| reuse | 40 (48) | 100 (120) | 5.00x | 3 |" in text
    assert "| full | 200 (240) | 500 (600) | 1.00x | - |" in text
    assert "llama.cpp: skipped: not installed" in text
    assert "| adaptive@0.5 | 0.090 | 0.750 |" in text
    assert "| blend[probe]@0.15 | 0.150 | 0.800 [0.700, 0.850] |" in text and "| 4.00x [3.60, 4.40] |" in text
    assert "| blend[vattn]@0.15 | 0.150 | 0.700 | 0.350 |" in text and "| full | 1.000 | 1.000 | 0.500 | 1.00 | 0.0000 | n/a |" in text
    assert "| rerotate | reference | 1.500 |" in text
    assert "Kernels" not in format_summary(fake_result(kernels=False))


def test_json_and_summary_are_written(tmp_path):
    result = fake_result()
    path = write_json(result, tmp_path / "out")
    assert json.loads(path.read_text()) == result
    md, text = write_summary(result, tmp_path / "out")
    assert md.read_text() == text


def test_plots_are_readable_pngs(tmp_path):
    import matplotlib.image

    from chunkcache.bench.plots import PLOT_FILES, write_plots

    paths = write_plots(fake_result(), tmp_path)
    assert [p.name for p in paths] == list(PLOT_FILES)
    for p in paths:
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.shape[2] in (3, 4)


def test_summary_compares_the_default_selection_with_the_other_at_every_ratio():
    text = format_summary(fake_result())
    assert "### Selection probe (default) vs vattn: probe dominates at 2 of 3 ratios" in text
    assert "| 0 | 0.600 [0.500, 0.650] | 0.600 | 5.00x [4.50, 5.50] | 5.50x | no |" in text
    assert "| 0.15 | 0.800 [0.700, 0.850] | 0.700 | 4.00x [3.60, 4.40] | 3.50x | yes |" in text
    one = fake_result()
    one["quality"]["runs"] = {k: v for k, v in one["quality"]["runs"].items() if "vattn" not in k}
    assert "### Selection" not in format_summary(one)


def test_summary_lists_the_figures():
    text = format_summary(fake_result(), ["ttft_vs_chunks.png", "pareto.png"])
    assert "- [pareto.png](pareto.png)" in text and "![speed vs fidelity](pareto.png)" in text
    assert "### Figures" not in format_summary(fake_result())


def test_selection_curves_group_blend_runs_by_selection_in_ratio_order():
    from chunkcache.bench.plots import selection_curves

    runs = fake_result()["quality"]["runs"]
    shuffled = dict(reversed(list(runs.items())))
    curves = selection_curves(shuffled)
    assert set(curves) == {"probe", "vattn"}
    assert [name for name, _ in curves["probe"]] == ["blend[probe]@0", "blend[probe]@0.15", "blend[probe]@1"]  # adaptive left out
    assert [r["ratio"] for _, r in curves["vattn"]] == [0.0, 0.15, 1.0]


def test_kernel_table_comes_from_the_kernel_bench():
    from types import SimpleNamespace

    from chunkcache.bench.report import format_kernels
    from chunkcache.bench.runner import measure_kernels

    cache = SimpleNamespace(generator=SimpleNamespace(spec=SimpleNamespace(n_layers=2, n_kv_heads=1, head_dim=16)))
    rows = measure_kernels(cache, BenchSpec(data="x", store="y", chunk_tokens=16, kernel_repeats=1))
    assert {r["op"] for r in rows} >= {"rerotate", "scatter_rows", "token_deviation", "dequant_rope[int8]"}
    # Real timings of the cache's shapes (2 layers, 1 KV head, head_dim 16, 10 chunks of 16 tokens).
    assert all(0 < r["median_ms"] <= r["p95_ms"] for r in rows)
    assert next(r for r in rows if r["op"] == "rerotate")["shape"].startswith("[2, 1, 160, 16]")
    table = "\n".join(format_kernels(rows))
    for r in rows:  # every measured row is in the table, with its own numbers
        assert f"| {r['op']} | {r['impl']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {r['shape']} |" in table


def test_verdict_separates_domination_from_a_speed_tie():
    from chunkcache.bench.report import verdict

    def run(fid, sp, lo, hi):
        return {"fidelity": fid, "ttft_speedup": sp, "ttft_speedup_lo": lo, "ttft_speedup_hi": hi}

    assert verdict(run(0.9, 3.0, 2.8, 3.2), run(0.8, 2.9, 2.7, 3.1)) == "yes"
    assert verdict(run(0.9, 3.0, 2.8, 3.2), run(0.8, 3.1, 2.9, 3.3)) == "tied speed"
    assert verdict(run(0.9, 3.0, 2.8, 3.0), run(0.8, 3.5, 3.2, 3.7)) == "no"  # clearly slower
    assert verdict(run(0.7, 3.5, 3.4, 3.6), run(0.8, 3.0, 2.9, 3.1)) == "no"  # less faithful
    assert verdict(run(0.9, 3.0, None, None), run(0.8, 3.1, None, None)) == "no"


def test_the_quality_table_reports_the_whole_answer_beside_ttft():
    from chunkcache.bench.report import format_quality

    text = "\n".join(format_quality(fake_result()["quality"]))
    assert "| total ms | total speedup | ms/token | saving kept |" in text
    assert "| 1250 | 1.50x | 61.0 [60.0, 62.0] | 0.80 [0.70, 0.90] |" in text
