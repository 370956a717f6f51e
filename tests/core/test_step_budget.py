"""The step's bookkeeping (no model, no tensors): slots reserved whole, the token budget shared."""

import pytest

from chunkcache.errors import ConfigError
from chunkcache.step_budget import SlotPool, Waiting, plan_step


def test_pool_reserves_and_frees_and_keeps_its_peak():
    pool = SlotPool(100)
    pool.allocate("a", 60)
    assert not pool.can_allocate(41) and pool.can_allocate(40)
    pool.allocate("b", 40)
    assert (pool.used, pool.free_slots, pool.peak) == (100, 0, 100)
    pool.free("a")
    pool.free("never-admitted")  # freeing nothing is harmless: a request that failed before admission
    assert (pool.used, pool.peak) == (40, 100)
    with pytest.raises(ValueError, match="already holds"):
        pool.allocate("b", 1)
    with pytest.raises(ValueError, match="cannot allocate 61"):
        pool.allocate("c", 61)
    assert pool.fits(100) and not pool.fits(101)


def test_pool_refuses_a_nonsense_capacity():
    with pytest.raises(ConfigError, match="at least 1 slot"):
        SlotPool(0)


def test_decodes_ride_first_and_prompt_work_takes_the_rest_in_chunks():
    pool = SlotPool(10_000)
    plan = plan_step(["d1", "d2", "d3"], [("p1", 500)], [], pool, token_budget=64, max_running=16)
    assert plan.decodes == ("d1", "d2", "d3")
    assert plan.prompt == (("p1", 61),)  # the budget less one row per decode
    assert plan.rows == 64 and plan.admitted == ()


def test_a_prompt_under_way_goes_before_a_new_one_and_a_new_one_gets_the_leftover():
    pool = SlotPool(10_000)
    plan = plan_step(["d"], [("p", 20)], [Waiting("w", slots=300, prompt_rows=200)], pool, token_budget=64, max_running=16)
    assert plan.prompt == (("p", 20), ("w", 43))
    assert plan.admitted == ("w",) and pool.used == 300


def test_admission_waits_for_slots_and_the_head_is_never_overtaken():
    pool = SlotPool(1000)
    pool.allocate("running", 800)
    queue = [Waiting("big", slots=500, prompt_rows=10), Waiting("small", slots=50, prompt_rows=10)]
    plan = plan_step(["running"], [], queue, pool, token_budget=256, max_running=16)
    assert plan.admitted == () and plan.prompt == ()  # "small" would fit, but it does not jump the queue
    pool.free("running")
    plan = plan_step([], [], queue, pool, token_budget=256, max_running=16)
    assert plan.admitted == ("big", "small") and pool.used == 550


def test_admission_stops_at_max_running_and_when_the_budget_is_spent():
    pool = SlotPool(10_000)
    queue = [Waiting(i, slots=10, prompt_rows=100) for i in range(4)]
    assert plan_step(["a", "b"], [], queue, pool, token_budget=1000, max_running=3).admitted == (0,)
    pool = SlotPool(10_000)
    plan = plan_step([], [], queue, pool, token_budget=150, max_running=16)
    assert plan.admitted == (0, 1) and plan.prompt == ((0, 100), (1, 50))  # 1 is admitted with a first chunk
    assert plan_step(["x"] * 8, [], queue, SlotPool(10_000), token_budget=8, max_running=16).admitted == ()


def test_every_prompt_row_is_planned_once_over_steps():
    """Replaying plans until every prompt is done covers each request's rows exactly once."""
    pool = SlotPool(10_000)
    rows = {0: 130, 1: 7, 2: 64, 3: 300}
    waiting = [Waiting(rid, slots=100, prompt_rows=n) for rid, n in rows.items()]
    left: dict[int, int] = {}
    done = dict.fromkeys(rows, 0)
    while waiting or left:
        plan = plan_step([], list(left.items()), waiting, pool, token_budget=50, max_running=2)
        assert plan.rows <= 50
        waiting = [w for w in waiting if w.rid not in plan.admitted]
        left |= {rid: rows[rid] for rid in plan.admitted}
        for rid, n in plan.prompt:
            done[rid] += n
            left[rid] -= n
            if left[rid] == 0:
                del left[rid]
                pool.free(rid)
    assert done == rows and pool.used == 0


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="token_budget"):
        plan_step([], [], [], SlotPool(1), token_budget=0, max_running=1)
