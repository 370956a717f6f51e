"""The workload bench's bookkeeping (no model): the stream, the arrivals, the summary, the report."""

import collections

import pytest

from chunkcache.bench.workload import QueryRecord, format_report, plot, poisson_arrivals, summarize, zipf_stream


def test_zipf_stream_is_seeded_and_popularity_falls_with_rank():
    stream = zipf_stream(400, 3000, 1.1, seed=3)
    assert stream == zipf_stream(400, 3000, 1.1, seed=3) and stream != zipf_stream(400, 3000, 1.1, seed=4)
    counts = collections.Counter(stream).most_common()
    assert all(0 <= q < 400 for q in stream)
    assert counts[0][1] > 5 * counts[20][1]  # rank 1 drawn about 21^1.1 = 28 times as often as rank 21
    assert len(counts) < 400  # the tail is thin: not every question comes


def test_poisson_arrivals_have_the_asked_rate():
    times = poisson_arrivals(4000, rate=2.0, seed=0)
    assert times == sorted(times) and times[0] > 0
    assert times[-1] / len(times) == pytest.approx(0.5, rel=0.05)


def _record(i, q, ttft, fidelity, passages):
    r = QueryRecord(i, q, ttft, ttft + 1.0, fidelity, passages, 8)
    return {**r.__dict__, "kind": r.kind}


def test_answers_are_exact_blended_or_computed_by_their_passages():
    assert QueryRecord(0, 0, 0.1, 1, 1.0, ["exact", "exact"], 4).kind == "exact"
    assert QueryRecord(0, 0, 0.1, 1, 1.0, ["exact", "hit"], 4).kind == "blended"
    assert QueryRecord(0, 0, 0.1, 1, 1.0, ["exact", "miss"], 4).kind == "computed"  # prefix mode prefilled the rest
    assert QueryRecord(0, 0, 0.1, 1, 1.0, ["hit", "miss"], 4).kind == "blended"


def test_summary_speedup_is_mean_full_over_mean_line_and_shares_add_up():
    refs = {0: {"ttft_s": 2.0, "total_s": 4.0}, 1: {"ttft_s": 4.0, "total_s": 6.0}}
    records = [_record(0, 0, 1.0, 0.5, ["hit", "miss"]), _record(1, 0, 0.5, 1.0, ["exact", "exact"]),
               _record(2, 1, 0.5, 1.0, ["exact", "exact"])]
    s = summarize(records, refs, n_resamples=200)
    assert s["ttft_speedup"] == pytest.approx((2 + 2 + 4) / (1 + 0.5 + 0.5))
    assert s["fidelity"] == pytest.approx(2.5 / 3) and s["fidelity_exact"] == 1.0 and s["fidelity_not_exact"] == 0.5
    assert s["answers"] == {"exact": pytest.approx(2 / 3), "blended": pytest.approx(1 / 3), "computed": 0.0}
    assert s["passages"]["exact"] == pytest.approx(4 / 6) and s["errors"] == 0
    lo, hi = s["fidelity_ci"]
    assert 0.5 <= lo <= s["fidelity"] <= hi <= 1.0


def test_report_and_plot_from_a_result(tmp_path):
    refs = {"0": {"ttft_s": 2.0, "total_s": 4.0}}
    line = {"records": [_record(0, 0, 1.0, 0.8, ["hit"]), _record(1, 0, 0.2, 1.0, ["exact"])], "utilization": 0.48}
    line["summary"] = summarize(line["records"], {0: refs["0"]}, n_resamples=100)
    result = {"lines": {"blend+refine": line}, "refs": refs, "order": {"score": {"exact_passages": 0.5, "exact_answers": 0.5}},
              "config": {"queries": 2, "distinct": 1, "data": "qa.jsonl", "zipf_s": 1.1, "top_k": 1, "max_new_tokens": 8,
                         "rate": 0.5, "blend_service_s": 1.0, "machine": "test"}}
    text = format_report(result)
    assert "| blend+refine | 2 | 0.900" in text and "3.33x" in text and "order=score: 0.500" in text
    assert plot(result, tmp_path / "w.png").stat().st_size > 1000


def test_a_stopped_run_is_summarized_from_its_journal(tmp_path):
    from chunkcache.bench.workload import WorkloadSpec, _journal, from_journal

    spec = WorkloadSpec(data="x", out=str(tmp_path), store="s")
    _journal(spec, "full", {"question": 7, "text": "the lighthouse keeper", "ttft_s": 2.0, "total_s": 3.0})
    _journal(spec, "blend+refine", _record(1, 7, 0.5, 0.0, ["exact"]) | {"text": "the lighthouse keeper"})
    _journal(spec, "blend+refine", _record(0, 7, 1.0, 0.0, ["hit"]) | {"text": "a keeper"})
    _journal(spec, "blend+refine", _record(2, 9, 1.0, 0.0, ["hit"]) | {"text": "no reference yet"})
    result = from_journal(tmp_path, ("blend+refine",))
    rows = result["lines"]["blend+refine"]["records"]
    assert [r["index"] for r in rows] == [0, 1]  # in stream order; question 9 has no reference answer yet
    assert rows[1]["fidelity"] == 1.0 and 0 < rows[0]["fidelity"] < 1
    assert result["lines"]["blend+refine"]["summary"]["ttft_speedup"] == pytest.approx(4 / 1.5)
