"""The REST service over the ChunkCache facade: `create_app(cache, config)` and `serve(...)`.

`import chunkcache.api` stays light (like `import chunkcache`): the app, and with it the facade,
torch and transformers, is imported on first use of one of the names below, so the schemas
(`chunkcache.api.schemas`) and settings load without the model stack.
"""

__all__ = ["BackgroundServer", "ServiceConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from chunkcache.api.app import create_app

        return create_app
    if name in ("BackgroundServer", "serve"):
        from chunkcache.api import server

        return getattr(server, name)
    if name == "ServiceConfig":
        from chunkcache.api.settings import ServiceConfig

        return ServiceConfig
    raise AttributeError(f"module 'chunkcache.api' has no attribute {name!r}")
