"""The one percentile definition (nearest rank) every p50/p95/p99 of the project uses."""

import pytest

from chunkcache.errors import InvalidRequestError
from chunkcache.stats import percentile


def test_percentile_is_the_nearest_rank():
    assert percentile([1.0], 0.95) == 1.0
    assert percentile([float(i) for i in range(1, 21)], 0.95) == 19.0
    assert percentile([3.0, 1.0, 2.0], 0.95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0  # lower middle of an even count
    assert percentile([5.0, 1.0, 3.0], 0.0) == 1.0 and percentile([5.0, 1.0, 3.0], 1.0) == 5.0
    values = [float(i) for i in range(1, 101)]
    assert [percentile(values, q) for q in (0.5, 0.95, 0.99)] == [50.0, 95.0, 99.0]


def test_percentile_is_the_stores_and_the_benches():
    from chunkcache.storage.latency import LatencyRecorder

    rec = LatencyRecorder()
    for ms in [7.0, 1.0, 9.0, 3.0, 5.0]:
        rec.record(ms)
    assert (rec.summary().p50_ms, rec.summary().p95_ms) == (percentile([7, 1, 9, 3, 5], 0.5), percentile([7, 1, 9, 3, 5], 0.95))


@pytest.mark.parametrize("values,q", [([], 0.5), ([1.0], 1.5), ([1.0], -0.1)])
def test_percentile_rejects_what_it_cannot_answer(values, q):
    with pytest.raises(InvalidRequestError):
        percentile(values, q)
