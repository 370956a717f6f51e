"""The shared tier's settings: CHUNKCACHE_REDIS_* variables, CLI flags over them, validation."""

import pytest

from chunkcache.api.settings import ServiceConfig
from chunkcache.cli import _redis_config, build_parser
from chunkcache.errors import ConfigError
from chunkcache.storage import RedisConfig


def test_no_redis_by_default():
    assert ServiceConfig.from_env({}).redis is None


def test_environment_builds_the_redis_config():
    env = {"CHUNKCACHE_REDIS_URL": "redis://cache:6380/2", "CHUNKCACHE_REDIS_PREFIX": "prod-a",
           "CHUNKCACHE_REDIS_TTL_S": "3600", "CHUNKCACHE_REDIS_TIMEOUT_S": "0.1"}
    assert ServiceConfig.from_env(env).redis == RedisConfig("redis://cache:6380/2", prefix="prod-a", ttl_s=3600, timeout_s=0.1)
    assert ServiceConfig.from_env({"CHUNKCACHE_REDIS_URL": "redis://c"}).redis == RedisConfig("redis://c")


def test_flags_win_over_the_environment():
    env = {"CHUNKCACHE_REDIS_URL": "redis://env:6379", "CHUNKCACHE_REDIS_TTL_S": "60"}
    config = ServiceConfig.from_env(env, redis_url="redis://flag:6379", redis_ttl_s=None)
    assert config.redis == RedisConfig("redis://flag:6379", ttl_s=60)


@pytest.mark.parametrize("env, match", [
    ({"CHUNKCACHE_REDIS_URL": "redis://c", "CHUNKCACHE_REDIS_TTL_S": "soon"}, "CHUNKCACHE_REDIS_TTL_S must be an integer"),
    ({"CHUNKCACHE_REDIS_URL": "redis://c", "CHUNKCACHE_REDIS_TTL_S": "0"}, "ttl_s"),
    ({"CHUNKCACHE_REDIS_URL": "cache:6379"}, "redis url"),
    ({"CHUNKCACHE_REDIS_PREFIX": "p"}, "need redis_url"),
])
def test_bad_settings_raise_config_error(env, match):
    with pytest.raises(ConfigError, match=match):
        ServiceConfig.from_env(env)


@pytest.mark.parametrize("command", [["warm"], ["query", "q"], ["serve"], ["ingest", "docs"]])
def test_cli_flags_build_the_redis_config(command, monkeypatch):
    monkeypatch.setenv("CHUNKCACHE_REDIS_PREFIX", "from-env")
    args = build_parser().parse_args(command + ["--redis-url", "redis://127.0.0.1:7000/1", "--redis-ttl", "120", "--redis-timeout", "0.5"])
    assert _redis_config(args) == RedisConfig("redis://127.0.0.1:7000/1", prefix="from-env", ttl_s=120, timeout_s=0.5)
