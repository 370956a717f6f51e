"""The scheduler's bookkeeping (no model, no tensors): slots reserved whole and admitted in
arrival order, the token budget of a step shared."""

import threading
import time

import pytest

from chunkcache.errors import ConfigError, WorkingCacheFullError
from chunkcache.step_budget import Admission, SlotPool, share_budget


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


def test_decodes_ride_first_and_prompt_work_takes_the_rest_in_pieces():
    assert share_budget(3, [("p1", 500)], 64) == [("p1", 61)]  # the budget less the decode rows
    assert share_budget(0, [("done", 0), ("p", 5)], 64) == [("p", 5)]
    assert share_budget(0, [], 64) == []


def test_prompts_go_in_admission_order_and_the_next_takes_the_leftover():
    assert share_budget(0, [("p", 20), ("w", 200), ("x", 5)], 64) == [("p", 20), ("w", 44)]


def test_the_first_prompt_always_moves_even_when_decodes_fill_the_budget():
    assert share_budget(16, [("p", 500), ("q", 5)], 16) == [("p", 1)]
    assert share_budget(60, [("p", 500), ("q", 5)], 16) == [("p", 1)]


def test_every_prompt_row_is_planned_once_over_steps():
    """Replaying steps until every prompt is done covers each request's rows exactly once, within the budget."""
    left = {0: 130, 1: 7, 2: 64, 3: 300}
    done = dict.fromkeys(left, 0)
    while any(left.values()):
        share = share_budget(2, list(left.items()), 50)
        assert sum(n for _, n in share) <= 48 and share
        for rid, n in share:
            done[rid] += n
            left[rid] -= n
    assert done == {0: 130, 1: 7, 2: 64, 3: 300}


def test_share_budget_refuses_a_nonsense_budget():
    with pytest.raises(ConfigError, match="token_budget"):
        share_budget(0, [], 0)


def test_admission_refuses_at_once_what_can_never_fit():
    adm = Admission(SlotPool(100))
    with pytest.raises(WorkingCacheFullError, match="needs 101 working-cache tokens") as err:
        adm.acquire("big", 101)
    assert err.value.retry_after_s is None and adm.pool.used == 0


def test_admission_waits_for_slots_in_arrival_order():
    adm = Admission(SlotPool(100), poll_s=0.01)
    adm.acquire("running", 80)
    order = []

    def wait_for(rid, slots):
        adm.acquire(rid, slots)
        order.append(rid)

    big = threading.Thread(target=wait_for, args=("big", 50))
    big.start()
    while adm.waiting < 1:
        time.sleep(0.001)
    small = threading.Thread(target=wait_for, args=("small", 10))  # would fit now, but "big" came first
    small.start()
    while adm.waiting < 2:
        time.sleep(0.001)
    time.sleep(0.05)
    assert order == [] and adm.pool.used == 80
    adm.release("running")
    big.join(5)
    small.join(5)
    assert order == ["big", "small"] and adm.pool.used == 60


def test_a_waiting_request_that_gives_up_holds_nothing_and_unblocks_the_queue():
    adm = Admission(SlotPool(100), poll_s=0.01)
    adm.acquire("running", 90)
    with pytest.raises(WorkingCacheFullError, match="given up") as err:
        adm.acquire("impatient", 50, should_stop=lambda: True)
    assert err.value.retry_after_s == 1.0 and adm.waiting == 0 and adm.pool.used == 90
    adm.acquire("small", 10)  # nothing left in front of it
    assert adm.pool.used == 100
