"""Evaluation: bootstrap intervals, run lists, QA data, the report, on fakes and on the real model."""

import json
import random
import statistics
from types import SimpleNamespace

import pytest
import torch

from chunkcache import config
from chunkcache.config import BlendConfig
from chunkcache.errors import ConfigError, InvalidRequestError
from chunkcache.evaluation import (QA_DIR, QA_SETS, QAExample, RunSpec, evaluate, format_table, load_examples, parse_repairs,
                                   parse_runs, parse_variants, resolve_data)
from chunkcache.stats import bootstrap_ci, median_ratio


def noisy(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


# -- bootstrap_ci ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5, 40, 300])
def test_interval_contains_the_sample_mean(n):
    values = noisy(n)
    lo, hi = bootstrap_ci(values, n_resamples=500)
    assert lo < statistics.fmean(values) < hi


def test_interval_narrows_with_more_examples():
    small = bootstrap_ci(noisy(20), n_resamples=1000)
    large = bootstrap_ci(noisy(500), n_resamples=1000)
    assert (large[1] - large[0]) < (small[1] - small[0]) / 2  # about sqrt(25) = 5 times narrower


def test_interval_is_deterministic_for_a_seed():
    values = noisy(30)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_a_lower_level_gives_a_narrower_interval():
    values = noisy(50)
    lo95, hi95 = bootstrap_ci(values, level=0.95)
    lo50, hi50 = bootstrap_ci(values, level=0.5)
    assert lo95 < lo50 < hi50 < hi95


def test_equal_values_give_a_zero_width_interval():
    lo, hi = bootstrap_ci([0.4] * 12)
    assert lo == hi == statistics.fmean([0.4] * 12)
    assert bootstrap_ci([(2.0, 0.5)] * 5, median_ratio) == (4.0, 4.0)


def test_empty_input_and_bad_settings_are_refused():
    with pytest.raises(InvalidRequestError, match="at least one value"):
        bootstrap_ci([])
    with pytest.raises(ConfigError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.0)
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)


def test_paired_statistic_resamples_whole_examples():
    rng = random.Random(2)
    pairs = [(1.0 + 0.1 * rng.random(), 0.25 + 0.02 * rng.random()) for _ in range(40)]
    point = median_ratio(pairs)
    lo, hi = bootstrap_ci(pairs, median_ratio)
    assert 3.0 < lo <= point <= hi < 5.0
    assert median_ratio([(2.0, 1.0), (4.0, 1.0), (6.0, 2.0)]) == 4.0


# -- run lists ---------------------------------------------------------------------------------
def test_plain_runs_keep_their_names():
    assert [r.name for r in parse_runs("full,reuse,blend", [0.15])] == ["full", "reuse", "blend"]
    assert [r.name for r in parse_runs("reuse,blend,ape", [0.15, 1.0])] == ["full", "reuse", "blend@0.15", "blend@1", "ape"]


def test_variants_compare_selections_at_the_same_ratios():
    base = BlendConfig(check_layer=2, sink_tokens=3)
    runs = parse_runs("full,blend", [0.15, 0.3], parse_variants("v,vattn"), blend=base)
    assert [r.name for r in runs] == ["full", "blend[v]@0.15", "blend[v]@0.3", "blend[vattn]@0.15", "blend[vattn]@0.3"]
    for run in runs[1:]:
        assert run.blend.deviation_of == run.name[6:run.name.index("]")]
        assert run.blend.check_layer == 2 and run.blend.sink_tokens == 3  # only the selection changes
    assert [r.name for r in parse_runs("reuse", [0.15], ("k",))] == ["full", "reuse", "blend[k]@0.15"]


def test_variants_are_read_from_the_configs_deviations():
    assert parse_variants("vattn, v,vattn") == ("vattn", "v")
    assert parse_variants(",".join(config.DEVIATIONS)) == config.DEVIATIONS
    assert parse_variants(None) == ()
    with pytest.raises(InvalidRequestError, match="choose from " + ", ".join(config.DEVIATIONS)):
        parse_variants("v,bogus")
    with pytest.raises(InvalidRequestError, match="--oracle"):
        parse_variants("oracle")


def test_oracle_runs_are_untimed_blend_runs_at_every_ratio():
    runs = parse_runs("full,blend", [0.15, 0.5], oracle=True, blend=BlendConfig(check_layer=3))
    oracle = [r for r in runs if r.name.startswith("oracle")]
    assert [r.name for r in oracle] == ["oracle@0.15", "oracle@0.5"]
    assert all(r.mode == "blend" and not r.timed and r.blend.deviation_of == "oracle" and r.blend.check_layer == 3 for r in oracle)
    assert all(r.timed for r in runs if r not in oracle)


def test_bad_runs_are_refused():
    with pytest.raises(InvalidRequestError, match="unknown mode"):
        parse_runs("full,turbo", [0.15])
    with pytest.raises(InvalidRequestError, match="at least one recompute ratio"):
        parse_runs("blend", [])


# -- QA data -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", QA_SETS)
def test_every_shared_qa_set_loads_by_name(name):
    if not QA_DIR.is_dir():
        pytest.skip(f"the shared QA data is not at {QA_DIR}")
    path, dataset = resolve_data(name)
    assert dataset == name and path == QA_DIR / f"{name}.jsonl"
    examples = load_examples(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(examples) == len(lines)
    ids = [ex.id for ex in examples]
    assert len(set(ids)) == len(ids)
    for ex in examples:
        assert ex.question.strip() and ex.answers and ex.passages
        assert all(set(p) == {"title", "text"} and p["text"].strip() for p in ex.passages)
    assert len(load_examples(path, limit=3)) == 3


def test_a_missing_set_names_the_searched_path(tmp_path):
    with pytest.raises(InvalidRequestError, match=str(tmp_path / "musique.jsonl")):
        resolve_data("musique", qa_dir=tmp_path)
    path, dataset = resolve_data(str(tmp_path / "mine.jsonl"))
    assert dataset == "mine" and path == tmp_path / "mine.jsonl"
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_examples(path)


# -- evaluate on a fake cache ------------------------------------------------------------------
class FakeCache:
    """Full answers "ans <i>" in 1.0 s + noise; reuse drifts on odd examples, 4x faster; blend right, 2x faster."""

    def __init__(self):
        self.calls = []
        self.generator = SimpleNamespace(spec=SimpleNamespace(eos_token_ids=(99,)), tokenizer=None)

    def warm(self, passages, progress=False, desc=""):
        self.passages = list(passages)

    def answer(self, question, passages, mode, recompute_ratio=None, max_new_tokens=32, return_logprobs=False, blend=None,
               teacher_ids=None, sampling=None, chain=None):
        assert sampling.ignore_eos and chain is False  # timed at full length, every context new
        i = int(question.split()[-1])
        self.calls.append((mode, recompute_ratio, blend, teacher_ids))
        wrong = mode == "reuse" and i % 2 == 1
        logits = torch.tensor([2.0, 0.0, -1.0]) if not wrong else torch.tensor([0.0, 2.0, -1.0])
        ttft = {"full": 1.0, "reuse": 0.25, "blend": 0.5}[mode] * (1 + 0.01 * i)
        return SimpleNamespace(
            text=f"ans {i}" if not wrong else "other", token_ids=(7, i) if not wrong else (8, i), first_logprobs=logits.log_softmax(-1),
            teacher_agreement=None if teacher_ids is None else (0.5 if wrong else 1.0), recomputed_tokens=0 if mode != "blend" else 3,
            context_tokens=20, cache_hits=len(passages) if mode != "full" else 0, passages=passages, ttft_s=ttft,
            # decode: full 0.1 s per token after the first, reuse the same, blend 0.2 (it keeps half its saving)
            generated_tokens=2, timings=SimpleNamespace(decode={"full": 0.1, "reuse": 0.1, "blend": 0.35}[mode]))


def qa(n: int) -> list[QAExample]:
    return [QAExample(str(i), f"question {i}", (f"ans {i}",), ({"title": "t", "text": f"passage {i}"},)) for i in range(n)]


def test_evaluate_reports_means_intervals_and_teacher_agreement():
    cache = FakeCache()
    runs = parse_runs("full,reuse,blend", [0.15])
    result = evaluate(cache, qa(10), runs, progress=False, n_resamples=300)
    full, reuse, blend = (result["runs"][n] for n in ("full", "reuse", "blend"))
    teachers = [t for mode, _, _, t in cache.calls]
    assert teachers[0::3] == [None] * 10  # full is the teacher ...
    assert teachers[1::3] == [(7, i) for i in range(10)]  # ... of every other run, on the same example
    assert full["teacher_agreement"] is None and full["teacher_agreement_lo"] is None
    assert full["fidelity"] == 1.0 and full["fidelity_lo"] == full["fidelity_hi"] == 1.0 and full["ttft_speedup"] == 1.0
    assert reuse["fidelity"] == 0.5 and reuse["teacher_agreement"] == 0.75
    assert reuse["fidelity_lo"] < 0.5 < reuse["fidelity_hi"]
    assert reuse["teacher_agreement_lo"] < 0.75 < reuse["teacher_agreement_hi"]
    assert reuse["first_token_kl"] > 0 and reuse["first_token_kl_lo"] < reuse["first_token_kl"] < reuse["first_token_kl_hi"]
    assert reuse["ttft_speedup"] == pytest.approx(4.0, rel=1e-4)
    assert reuse["saving_kept"] == pytest.approx(1.0) and full["saving_kept"] is None
    assert blend["saving_kept"] == pytest.approx(0.5, rel=0.05) and blend["ms_per_token"] == pytest.approx(350)
    assert blend["total_speedup_lo"] <= blend["total_speedup"] <= blend["total_speedup_hi"]
    assert reuse["ttft_speedup_lo"] <= reuse["ttft_speedup"] <= reuse["ttft_speedup_hi"]
    assert blend["teacher_agreement"] == 1.0 and blend["first_token_kl"] == 0.0 and blend["recomputed_share"] == 0.15
    rows = result["examples"]
    assert [r["outputs"]["reuse"]["teacher_agreement"] for r in rows[:2]] == [1.0, 0.5]
    assert rows[1]["outputs"]["reuse"]["first_token_kl"] > 0 and rows[0]["outputs"]["full"]["teacher_agreement"] is None
    json.dumps(result)  # the report is plain JSON


def test_untimed_runs_report_no_speedup():
    run = RunSpec("blend", 0.15, "oracle@0.15", timed=False)
    result = evaluate(FakeCache(), qa(4), [RunSpec("full"), run], progress=False, n_resamples=100)
    rep = result["runs"]["oracle@0.15"]
    assert rep["timed"] is False and rep["ttft_speedup"] is None and rep["ttft_speedup_lo"] is None
    table = format_table(result)
    row = next(line for line in table.splitlines() if line.startswith("| oracle@0.15 |"))
    assert row.count("n/a") == 6  # TTFT, speedup, total, total speedup, ms/token, saving kept
    assert "oracle@0.15: diagnostic" in table


def test_table_shows_values_with_their_intervals():
    result = evaluate(FakeCache(), qa(6), parse_runs("full,reuse", []), progress=False, n_resamples=200)
    rep = result["runs"]["reuse"]
    row = next(line for line in format_table(result).splitlines() if line.startswith("| reuse |"))
    assert f"{rep['fidelity']:.3f} [{rep['fidelity_lo']:.3f}, {rep['fidelity_hi']:.3f}]" in row
    assert f"{rep['ttft_speedup']:.2f} [{rep['ttft_speedup_lo']:.2f}, {rep['ttft_speedup_hi']:.2f}]" in row
    assert f"{rep['teacher_agreement']:.3f} [" in row


def test_evaluate_needs_full_first():
    with pytest.raises(InvalidRequestError, match="first run must be full"):
        evaluate(FakeCache(), qa(2), [RunSpec("reuse"), RunSpec("full")], progress=False)


# -- the real model, tiny ----------------------------------------------------------------------
@pytest.mark.slow  # the real default model
def test_eval_compares_variants_with_teacher_agreement(tmp_path, default_store, default_model_dir, capsys):
    from chunkcache.cli import main

    out = tmp_path / "eval.json"
    rc = main(["eval", "--limit", "2", "--modes", "full,reuse,blend", "--variants", "v,vattn", "--oracle", "--recompute-ratio", "0.15,1",
               "--max-new-tokens", "4", "--bootstrap-resamples", "200", "--store", str(default_store), "--memory-only",
               "--model", str(default_model_dir), "--threads", "1", "--json", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert list(runs) == ["full", "reuse", "blend[v]@0.15", "blend[v]@1", "blend[vattn]@0.15", "blend[vattn]@1", "oracle@0.15", "oracle@1"]
    assert report["config"]["dataset"] == "demo_qa" and report["bootstrap"]["resamples"] == 200
    assert report["config"]["blend"]["deviation_of"] == BlendConfig().deviation_of  # the cache's settings, recorded whole
    assert runs["full"]["teacher_agreement"] is None
    assert runs["oracle@1"]["timed"] is False and runs["oracle@1"]["ttft_speedup"] is None
    for name in ("blend[v]@1", "blend[vattn]@1", "oracle@1"):  # everything recomputed = full prefill: the teacher's tokens exactly
        assert runs[name]["teacher_agreement"] == 1.0 and runs[name]["fidelity"] == 1.0
    for rep in runs.values():
        assert rep["fidelity_lo"] <= rep["fidelity"] <= rep["fidelity_hi"]
        if rep["timed"]:
            assert rep["ttft_speedup_lo"] <= rep["ttft_speedup"] <= rep["ttft_speedup_hi"]
    assert 0.0 <= runs["reuse"]["teacher_agreement"] <= 1.0
    for row in report["examples"]:
        assert set(row["outputs"]) == set(runs)
        assert row["outputs"]["blend[v]@1"]["teacher_agreement"] == 1.0 and row["outputs"]["reuse"]["first_token_kl"] >= 0
    assert "| blend[vattn]@0.15 |" in capsys.readouterr().out


def test_repair_budgets_become_blend_runs_that_differ_only_in_repair():
    from chunkcache.config import BlendConfig

    assert parse_repairs("0x0, 0.1x1,0.1x1") == ((0.0, 0), (0.1, 1))
    for bad in ("128", "1.5x1", "0.1x-1", "ax2"):
        with pytest.raises(InvalidRequestError, match="RATIOxSTEPS"):
            parse_repairs(bad)
    runs = parse_runs("full", [0.15], repairs=parse_repairs("0x0,0.2x4"))
    assert [r.name for r in runs] == ["full", "blend[repair 0x0]@0.15", "blend[repair 0.2x4]@0.15"]
    assert runs[2].blend == BlendConfig(repair_ratio=0.2, repair_steps=4)
    with_variants = parse_runs("blend", [0.15], ("probe", "vattn"), repairs=((0.0, 0),))
    assert [r.name for r in with_variants][1:] == ["blend[probe, repair 0x0]@0.15", "blend[vattn, repair 0x0]@0.15"]
