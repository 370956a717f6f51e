"""The decode-speed clock and the peak-memory probe of `chunkcache bench`."""

import sys

import pytest
import torch

from chunkcache.bench.decode import _TokenClock
from chunkcache.bench.memory import peak_rss_above_start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm (Linux only)")
def test_peak_memory_sees_a_transient_allocation():
    def work():
        big = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed before returning
        return float(big[0])

    value, peak = peak_rss_above_start(work)
    assert value == 1.0
    assert 60 * 2**20 <= peak < 200 * 2**20
    _, idle = peak_rss_above_start(lambda: None)
    assert idle < 16 * 2**20


def test_token_clock_skips_the_prompt_and_stamps_each_token():
    clock = _TokenClock()
    clock.put(torch.tensor([[1, 2, 3]]))  # generate hands over the prompt first
    for t in range(4):
        clock.put(torch.tensor([t]))
    clock.end()
    assert len(clock.stamps) == 4 and clock.stamps == sorted(clock.stamps)
