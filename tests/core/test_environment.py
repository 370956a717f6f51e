"""chunkcache.environment: CHUNKCACHE_* variables, read in one place."""

from chunkcache.environment import DEFAULT_STORE_DIR, store_dir, variable


def test_a_variable_is_prefixed_upper_case_and_empty_is_unset():
    env = {"CHUNKCACHE_API_KEY": "k" * 8, "CHUNKCACHE_PORT": ""}
    assert variable("api_key", env) == "k" * 8
    assert variable("port", env) is None and variable("host", env) is None


def test_the_store_directory_defaults_unless_chunkcache_store_is_set(monkeypatch):
    monkeypatch.delenv("CHUNKCACHE_STORE", raising=False)
    assert store_dir() == DEFAULT_STORE_DIR
    monkeypatch.setenv("CHUNKCACHE_STORE", "/srv/kv")
    assert store_dir() == "/srv/kv"
    from chunkcache.cli import build_parser

    assert build_parser().parse_args(["warm"]).store == "/srv/kv"
