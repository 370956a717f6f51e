"""`chunkcache bench` end to end, quick and small, on the real default model."""

import json

import pytest

from chunkcache.bench.cli import PRESETS, spec_from_args
from chunkcache.bench.runner import default_selections
from chunkcache.cli import DEMO_QA, build_parser, main


def test_bench_has_help_and_presets(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["bench", "--help"])
    assert exc.value.code == 0
    assert "usage: chunkcache bench" in capsys.readouterr().out
    args = parser.parse_args(["bench", "--data", "d.jsonl", "--out", "o", "--quick"])
    spec = spec_from_args(args)
    assert spec.repeats == PRESETS["quick"]["repeats"] and spec.quality_limit == PRESETS["quick"]["limit"]
    assert spec.selections == default_selections()
    args = parser.parse_args(["bench", "--data", "d.jsonl", "--out", "o", "--limit", "7", "--sizes", "3,4", "--peers", "none",
                              "--selections", "v,k"])
    spec = spec_from_args(args)
    assert spec.quality_limit == 7 and spec.sizes == (3, 4) and spec.peers == () and spec.repeats == PRESETS["default"]["repeats"]
    assert spec.selections == ("v", "k")


@pytest.mark.parametrize("argv", [["--sizes", "2,x"], ["--sizes", "0"], ["--ratios", "0.1,2"], ["--peers", "sglang"],
                                  ["--selections", "oracle"], ["--selections", ""]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--data", "d", "--out", "o", *argv])
    assert exc.value.code == 2


@pytest.mark.slow
def test_quick_bench_writes_json_summary_and_plots(tmp_path, default_model_dir, capsys):
    import matplotlib.image

    out = tmp_path / "bench"
    rc = main([
        "bench", "--data", str(DEMO_QA), "--out", str(out), "--quick", "--limit", "2", "--sizes", "2,5", "--chunk-tokens", "128",
        "--repeats", "1", "--ratios", "0,0.15,1", "--selections", "probe,vattn", "--max-new-tokens", "6", "--decode-tokens", "4", "--model", str(default_model_dir),
        "--store", str(tmp_path / "store"), "--quiet",
    ])
    assert rc == 0
    report = json.loads((out / "bench.json").read_text())
    for key in ("cpu", "cores", "torch", "transformers", "date"):
        assert report["machine"][key]
    ttft = report["ttft"]
    assert ttft["sizes"] == [2, 5]
    names = set(ttft["variants"])
    assert {"full", "reuse", "blend@0.05", "blend@0.15", "blend@0.3", "ape", "hf_generate"} <= names
    for name, row in ttft["variants"].items():
        for n in ("2", "5"):
            cell = row["by_size"][n]
            assert cell["n"] == 1 and 0 < cell["median_s"] <= cell["p95_s"], (name, n)
    assert ttft["variants"]["full"]["by_size"]["5"]["speedup_vs_full"] == 1.0
    assert ttft["variants"]["reuse"]["by_size"]["5"]["load_median_s"] > 0  # chunk KV read from LMDB
    peers = {p["name"]: p for p in ttft["peers"]}
    assert peers["hf_generate"]["available"] and "llama.cpp" in peers
    assert ("llama.cpp" in names) == peers["llama.cpp"]["available"]
    runs = report["quality"]["runs"]
    assert report["quality"]["selections"] == ["probe", "vattn"]
    assert list(runs) == ["full", "reuse", "ape", "blend[probe]@0", "blend[probe]@0.15", "blend[probe]@1",
                          "blend[probe+repair]@0", "blend[probe+repair]@0.15", "blend[probe+repair]@1",
                          "blend[vattn]@0", "blend[vattn]@0.15", "blend[vattn]@1", "adaptive@0.5"]
    for name in ("blend[probe]@1", "blend[probe+repair]@1", "blend[vattn]@1"):
        assert runs[name]["fidelity"] == 1.0 and runs[name]["first_token_kl"] < 1e-4 and runs[name]["teacher_agreement"] == 1.0
    for rep in runs.values():
        assert rep["fidelity_lo"] <= rep["fidelity"] <= rep["fidelity_hi"]
    decode = report["decode"]
    assert decode["chunks"] == 5 and decode["memory_chunks"] == 5 and decode["max_new_tokens"] == 4
    assert set(decode["variants"]) == {"full", "reuse", "blend@0.15", "hf_generate"}
    for name, row in decode["variants"].items():
        assert all(1 <= t <= 3 for t in row["tokens"]), (name, row)
        assert row["tokens_per_s"] > 0 and row["peak_mib"] is not None, (name, row)
    assert report["store"]["tiers"] == ["lmdb"]  # memory tier off: every load reads LMDB
    for name in ("ttft_vs_chunks.png", "fidelity_vs_ratio.png", "pareto.png"):
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    summary = (out / "summary.md").read_text()
    assert "| blend@0.15 |" in summary and "| blend[vattn]@0.15 |" in summary and "| hf_generate |" in summary
    assert "### Decode speed at 5 chunks, peak memory at 5 chunks" in summary
    assert "### Selection probe (default) vs vattn" in summary and "- [pareto.png](pareto.png)" in summary
    assert summary in capsys.readouterr().out
