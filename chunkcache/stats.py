"""Summary statistics shared by the evaluation, the benches and the store: the one percentile
definition (nearest rank), and bootstrap intervals (is a difference between two runs signal or noise?)."""

import math
import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from chunkcache.errors import ConfigError, InvalidRequestError

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least a share `q` of the values at or
    below it (q in [0, 1]; q = 0.5 of an even count is the lower middle). Every p50/p95/p99 of
    the project is this one."""
    if not values:
        raise InvalidRequestError("percentile needs at least one value, got an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise InvalidRequestError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bootstrap_ci(
    values: Sequence[T],
    stat: Callable[[list[T]], float] = statistics.fmean,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `values`.

    Draws `n_resamples` samples of len(values) items with replacement (the same draws for a
    given seed), applies `stat` to each and returns the (1 - level) / 2 and (1 + level) / 2
    quantiles. `values` may hold tuples so that paired statistics resample whole examples,
    e.g. the ratio of two medians over (full_ttft, run_ttft) pairs.
    """
    n = len(values)
    if n == 0:
        raise InvalidRequestError("bootstrap_ci needs at least one value, got an empty sequence")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    items = list(values)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))  # [n_resamples, n] indices
    stats = np.array([stat([items[i] for i in row]) for row in draws.tolist()], dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    """median(first) / median(second) over (first, second) pairs: a TTFT speedup, full / run."""
    return statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs)
