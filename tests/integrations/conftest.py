"""The integration tests' shared fixtures: one real ChunkCache (default model, fresh store) per
module, and a real server over that cache."""

from collections.abc import Iterator

import pytest

from chunkcache.api import BackgroundServer, ServiceConfig, create_app
from chunkcache.config import CacheConfig
from chunkcache.facade import ChunkCache


@pytest.fixture(scope="module")
def cache(tmp_path_factory, default_model_dir) -> Iterator[ChunkCache]:
    cc = ChunkCache(config=CacheConfig(store_dir=str(tmp_path_factory.mktemp("integration-store")), model=str(default_model_dir)))
    yield cc
    cc.close()


@pytest.fixture(scope="module")
def server_url(cache) -> Iterator[str]:
    with BackgroundServer(create_app(cache, ServiceConfig(max_new_tokens_limit=16))) as server:
        yield server.url
