"""The REST service over the ChunkCache facade: `create_app(cache, config)` and `serve(...)`."""

from chunkcache.api.app import create_app
from chunkcache.api.server import BackgroundServer, serve
from chunkcache.api.settings import ServiceConfig

__all__ = ["BackgroundServer", "ServiceConfig", "create_app", "serve"]
