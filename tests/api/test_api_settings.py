"""ServiceConfig: defaults, validation messages that carry the value, the one env reader."""

import pytest

from chunkcache.api.settings import ServiceConfig
from chunkcache.errors import ConfigError


def test_defaults_are_safe():
    config = ServiceConfig()
    assert config.host == "127.0.0.1" and config.api_key is None and config.ingest_root is None
    assert not config.auth_enabled and config.workers == 16


@pytest.mark.parametrize("field, value", [
    ("port", 70000), ("queue_size", 0), ("workers", 0), ("request_timeout_s", 0), ("max_body_bytes", 10),
    ("max_top_k", 0), ("max_new_tokens_limit", 0), ("port", True), ("api_key", "short"), ("ingest_root", "relative/dir"),
])
def test_invalid_values_name_field_and_value(field, value):
    with pytest.raises(ConfigError) as err:
        ServiceConfig(**{field: value})
    assert field in str(err.value)
    if field != "api_key":  # the key itself is never echoed
        assert repr(value) in str(err.value)


def test_missing_ingest_root(tmp_path):
    with pytest.raises(ConfigError, match="not an existing directory"):
        ServiceConfig(ingest_root=str(tmp_path / "nope"))


def test_from_env_reads_prefixed_variables(tmp_path):
    env = {"CHUNKCACHE_API_KEY": "s3cret-key", "CHUNKCACHE_PORT": "9001", "CHUNKCACHE_REQUEST_TIMEOUT_S": "2.5",
           "CHUNKCACHE_INGEST_ROOT": str(tmp_path), "CHUNKCACHE_QUEUE_SIZE": "", "UNRELATED": "x"}
    config = ServiceConfig.from_env(env)
    assert config.api_key == "s3cret-key" and config.auth_enabled
    assert config.port == 9001 and config.request_timeout_s == 2.5 and config.ingest_root == str(tmp_path)
    assert config.queue_size == 8  # empty means unset


def test_from_env_overrides_win_and_bad_numbers_are_named():
    assert ServiceConfig.from_env({"CHUNKCACHE_PORT": "9001"}, port=9002, host=None).port == 9002
    with pytest.raises(ConfigError, match=r"CHUNKCACHE_WORKERS must be an integer, got 'two'"):
        ServiceConfig.from_env({"CHUNKCACHE_WORKERS": "two"})
    with pytest.raises(ConfigError, match="unknown ServiceConfig fields"):
        ServiceConfig.from_env({}, prot=1)
