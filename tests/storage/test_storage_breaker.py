"""CircuitBreaker bookkeeping on a fake clock, and RedisConfig validation (no network)."""

import pytest

from chunkcache.errors import ConfigError
from chunkcache.storage import RedisConfig
from chunkcache.storage.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_breaker_allows_every_call():
    b = CircuitBreaker(1.0, 8.0, Clock())
    assert all(b.allow() for _ in range(5)) and not b.is_open


def test_failure_opens_for_a_doubling_backoff_capped_at_max():
    clock = Clock()
    b = CircuitBreaker(1.0, 4.0, clock)
    assert b.failed() == 1.0
    assert b.is_open and not b.allow()
    clock.now += 1.0
    assert b.allow()  # the probe
    assert not b.allow()  # others keep skipping while the probe runs
    assert b.failed() == 2.0
    clock.now += 2.0
    assert b.allow()
    assert b.failed() == 4.0
    clock.now += 4.0
    assert b.allow()
    assert b.failed() == 4.0  # capped


def test_success_closes_and_says_it_recovered():
    clock = Clock()
    b = CircuitBreaker(1.0, 4.0, clock)
    assert b.succeeded() is False
    b.failed()
    clock.now += 1.0
    assert b.allow()
    assert b.succeeded() is True
    assert not b.is_open and b.allow() and b.allow()
    assert b.failed() == 1.0  # the back-off starts over


@pytest.mark.parametrize("args", [(0, 1), (2, 1), (-1, 5)])
def test_bad_backoffs_raise_config_error(args):
    with pytest.raises(ConfigError, match="backoff"):
        CircuitBreaker(*args)


def test_redis_config_defaults_and_prefix():
    c = RedisConfig("redis://cache:6379/0")
    assert (c.prefix, c.ttl_s, c.key_prefix) == ("chunkcache", None, b"chunkcache:")


@pytest.mark.parametrize("kwargs, match", [
    ({"url": "http://cache:6379"}, "url"),
    ({"url": "redis://x", "prefix": "a b"}, "prefix"),
    ({"url": "redis://x", "prefix": "keys*"}, "prefix"),
    ({"url": "redis://x", "ttl_s": 0}, "ttl_s"),
    ({"url": "redis://x", "ttl_s": 1.5}, "ttl_s"),
    ({"url": "redis://x", "timeout_s": 0}, "timeout_s"),
    ({"url": "redis://x", "backoff_s": 60, "max_backoff_s": 30}, "backoff_s"),
])
def test_redis_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RedisConfig(**kwargs)
