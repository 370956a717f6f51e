"""The bench's pure pieces: statistics, run lists, presets, the summary and the plots, on a fake result."""

import json

import pytest

from chunkcache.bench.report import format_summary, write_json, write_summary
from chunkcache.bench.runner import BenchSpec, p95, quality_runs, rotated, summarize
from chunkcache.bench.variants import Sample
from chunkcache.errors import ConfigError


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
    for name, mode, ratio, fid, share in (("full", "full", 1.0, 1.0, 1.0), ("reuse", "reuse", 0.0, 0.6, 0.0), ("ape", "ape", 0.0, 0.5, 0.0),
                                          ("blend@0", "blend", 0.0, 0.6, 0.0), ("blend@0.15", "blend", 0.15, 0.8, 0.15),
                                          ("blend@1", "blend", 1.0, 1.0, 1.0), ("adaptive@0.5", "blend", None, 0.75, 0.09)):
        runs[name] = {"n": 2, "f1": fid / 2, "em": 0.0, "fidelity": fid, "first_token_agreement": fid, "first_token_kl": (1 - fid) / 3,
                      "ttft_median_s": 0.1 + share, "ttft_p95_s": 0.2 + share, "ttft_speedup": 1.1 / (0.1 + share),
                      "recomputed_share": share, "cache_hit_ratio": 1.0, "mode": mode, "ratio": ratio}
    return {
        "machine": {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "torch_threads": 2, "loadavg": [0.5, 0.4, 0.3], "loadavg_end": [1.0, 0.5, 0.3],
                    "torch": "2.x", "transformers": "5.x", "date": "2026-01-01T00:00:00+00:00"},
        "model": {"dir": "/x/smollm2-135m-instruct", "n_layers": 30},
        "ttft": {"sizes": sizes, "chunk_tokens": 256, "context_tokens": {"2": 514, "5": 1285}, "repeats": 3, "variants": variants,
                 "peers": [{"name": "hf_generate", "available": True, "detail": "generate"},
                           {"name": "llama.cpp", "available": False, "detail": "skipped: not installed"}]},
        "quality": {"runs": runs, "n_examples": 2, "max_new_tokens": 8, "examples": []},
        "kernels": [{"op": "rerotate", "impl": "reference", "median_ms": 1.5, "p95_ms": 2.0, "shape": "[30, 3, 2560, 64]"}] if kernels else None,
    }


def test_p95_is_the_nearest_rank():
    assert p95([1.0]) == 1.0
    assert p95([float(i) for i in range(1, 21)]) == 19.0
    assert p95([3.0, 1.0, 2.0]) == 3.0


def test_summarize_reports_median_p95_and_load():
    s = summarize([Sample(0.3, 0.01, 100), Sample(0.1, 0.03, 100), Sample(0.2, 0.02, 100)])
    assert s["median_s"] == 0.2 and s["p95_s"] == 0.3 and s["n"] == 3
    assert s["load_median_s"] == 0.02 and s["prompt_tokens"] == 100
    assert summarize([Sample(1.0)])["load_median_s"] is None


def test_rotation_gives_every_variant_every_position():
    items = ["a", "b", "c"]
    assert rotated(items, 0) == items and rotated(items, 1) == ["b", "c", "a"] and rotated(items, 4) == ["b", "c", "a"]
    assert {tuple(rotated(items, k))[0] for k in range(3)} == set(items)


def test_quality_runs_start_with_full_and_cover_every_ratio():
    spec = BenchSpec(data="x", store="y", quality_ratios=(0.0, 0.15, 1.0), adaptive_coverage=0.6, adaptive_max_ratio=0.4)
    runs = quality_runs(spec)
    names = [r.name for r, _ in runs]
    assert names[0] == "full"
    assert names == ["full", "reuse", "ape", "blend@0", "blend@0.15", "blend@1", "adaptive@0.6"]
    adaptive, meta = runs[-1]
    assert adaptive.ratio == 0.4 and adaptive.blend.adaptive_coverage == 0.6 and meta["max_ratio"] == 0.4


@pytest.mark.parametrize("bad", [{"sizes": ()}, {"sizes": (0, 2)}, {"repeats": 0}, {"quality_ratios": (1.5,)},
                                 {"adaptive_coverage": 0.0}, {"peers": ("vllm",)}])
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


def test_pareto_front_keeps_only_unbeaten_points():
    from chunkcache.bench.plots import pareto_front

    points = {"full": (1.0, 1.0), "blend@1": (1.0, 0.9), "blend@0.15": (0.8, 2.5), "adaptive": (0.75, 2.0), "reuse": (0.6, 4.0)}
    assert pareto_front(points) == ["reuse", "blend@0.15", "full"]


def test_kernel_table_comes_from_the_kernel_bench():
    from types import SimpleNamespace

    from chunkcache.bench.report import format_kernels
    from chunkcache.bench.runner import measure_kernels

    cache = SimpleNamespace(generator=SimpleNamespace(spec=SimpleNamespace(n_layers=2, n_kv_heads=1, head_dim=16)))
    rows = measure_kernels(cache, BenchSpec(data="x", store="y", chunk_tokens=16, kernel_repeats=1))
    assert {r["op"] for r in rows} >= {"rerotate", "scatter_rows", "token_deviation", "dequant_rope[int8]"}
    assert all(r["median_ms"] >= 0 for r in rows)
    assert "| rerotate | reference |" in "\n".join(format_kernels(rows))
