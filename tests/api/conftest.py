"""The REST service tests' shared fixture: one real ChunkCache (default model) per module."""

from collections.abc import Iterator

import pytest

from chunkcache.config import CacheConfig
from chunkcache.facade import ChunkCache


@pytest.fixture(scope="module")
def cache(tmp_path_factory, default_model_dir) -> Iterator[ChunkCache]:
    cc = ChunkCache(config=CacheConfig(store_dir=str(tmp_path_factory.mktemp("api-store")), model=str(default_model_dir)))
    yield cc
    cc.close()
