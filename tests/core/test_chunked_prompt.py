"""A prompt phase run in pieces by the scheduler equals the same phase run whole and alone.

Whole: `prompt_phase.start` (what an answer with `teacher_ids` runs: one prefill, one blend).
Pieces: `prompt_work.PromptWork` in scheduler steps of `token_budget` rows, here small enough
that every prompt takes several steps, alone and beside other requests' decodes.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from chunkcache import ChunkCache
from chunkcache.config import BlendConfig
from chunkcache.scheduler import IDLE_BUDGET_FACTOR

DEMO = Path(__file__).resolve().parents[2] / "chunkcache" / "demo" / "demo_qa.jsonl"
MODES = [("full", None), ("reuse", None), ("ape", None), ("blend", 0.15), ("blend", 0.5), ("blend", 1.0), ("prefix", None)]


def _examples():
    return [json.loads(line) for line in DEMO.read_text().splitlines()]


def _whole(cc, job):
    """The same answer through the whole-phase path (a teacher replay does not change the answer)."""
    return cc.answer(**job, return_logprobs=True, teacher_ids=[0])


def _pieces(cc, job):
    return cc.answer(**job, return_logprobs=True)


def _check(whole, pieces, tol):
    assert pieces.token_ids == whole.token_ids
    assert pieces.recomputed_tokens == whole.recomputed_tokens
    assert torch.allclose(pieces.first_logprobs, whole.first_logprobs, atol=tol, rtol=0)


@pytest.mark.parametrize("budget", [1, 4])
def test_pieces_equal_the_whole_phase_in_every_mode_on_the_tiny_model(tmp_path, tiny_model_dir, budget):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), token_budget=budget) as cc:
        steps_before = cc.scheduler.steps
        for ex in _examples()[:3]:
            for mode, ratio in MODES:
                job = dict(question=ex["question"], passages=ex["passages"], mode=mode, recompute_ratio=ratio,
                           max_new_tokens=5)
                _check(_whole(cc, job), _pieces(cc, job), 1e-4)
        # 4 decode steps an answer, and prompts of tens of tokens at a few rows a step (alone:
        # IDLE_BUDGET_FACTOR budgets a step, nothing decoding beside them).
        answers = 3 * len(MODES)
        per_step = IDLE_BUDGET_FACTOR * budget
        assert cc.scheduler.prompt_rows > answers * per_step
        assert cc.scheduler.steps - steps_before >= answers * 4 + cc.scheduler.prompt_rows // per_step


def test_pieces_beside_other_decodes_equal_the_whole_phase(tmp_path, tiny_model_dir):
    """Prompt pieces share forwards with running decodes (and repair rows) and change nothing."""
    repair = BlendConfig(repair_ratio=0.2, repair_steps=3)
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), token_budget=9, max_batch=8) as cc:
        jobs = []
        for i, ex in enumerate(_examples()[:4] * 2):
            mode, ratio = MODES[i % len(MODES)]
            jobs.append(dict(question=ex["question"], passages=ex["passages"], mode=mode, recompute_ratio=ratio,
                             max_new_tokens=4 + 3 * (i % 3), chain=False,  # no answer turns another's exact
                             **({"blend": repair} if mode == "blend" else {})))
        whole = [_whole(cc, job) for job in jobs]
        barrier = threading.Barrier(len(jobs))

        def one(job):
            barrier.wait()
            return _pieces(cc, job)

        mixed_before = cc.scheduler.mixed_steps
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(one, jobs))
        for w, p in zip(whole, together):
            _check(w, p, 1e-4)
            assert p.repaired_tokens == w.repaired_tokens
        assert cc.scheduler.mixed_steps - mixed_before > 10  # prompt pieces rode in decode steps
        assert cc.scheduler.admission.pool.used == 0  # every request gave its working cache back


@pytest.mark.slow  # the real default model
def test_pieces_equal_the_whole_phase_on_the_default_model(tmp_path, default_model_dir):
    with ChunkCache(store_dir=str(tmp_path), model=str(default_model_dir), token_budget=64) as cc:
        for ex in _examples()[:3]:
            for mode, ratio in [("full", None), ("blend", 0.15), ("reuse", None)]:
                job = dict(question=ex["question"], passages=ex["passages"], mode=mode, recompute_ratio=ratio,
                           max_new_tokens=12)
                _check(_whole(cc, job), _pieces(cc, job), 2e-3)


def test_a_prompt_cancelled_between_its_pieces_stops_there(tmp_path, tiny_model_dir):
    from chunkcache.errors import RequestCancelledError

    ex = _examples()[0]
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), token_budget=2) as cc:
        polls = {"n": 0}

        def stop_after_three_polls():
            polls["n"] += 1
            return polls["n"] > 3

        before = cc.scheduler.prompt_rows
        with pytest.raises(RequestCancelledError, match="before its first token"):
            cc.answer(ex["question"], ex["passages"], mode="full", max_new_tokens=4, should_stop=stop_after_three_polls)
        ran = cc.scheduler.prompt_rows - before
        assert ran <= 3 * 2 * IDLE_BUDGET_FACTOR  # three steps of (alone) 4 x 2 rows
        assert cc.scheduler.admission.pool.used == 0
        whole = cc.answer(ex["question"], ex["passages"], mode="full", max_new_tokens=4)
        assert whole.generated_tokens == 4
        assert ran < whole.prompt_tokens - len(cc.prompt.prefix_ids) - 6  # the cancelled one stopped well short
