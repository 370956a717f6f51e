"""The CHUNKCACHE_* environment variables: the one place the process environment is read.

Only the edges call this (the CLI and the benches for the store directory, `ServiceConfig.from_env`
for the service settings); everything below them gets frozen configs built from it.
"""

import os
from collections.abc import Mapping

PREFIX = "CHUNKCACHE_"
DEFAULT_STORE_DIR = "./chunkcache-store"


def variable(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """CHUNKCACHE_<NAME> (upper case) from `environ` (default: the process's), None when unset or empty."""
    env = os.environ if environ is None else environ
    return env.get(PREFIX + name.upper()) or None


def store_dir() -> str:
    """The store directory commands default to: $CHUNKCACHE_STORE, else ./chunkcache-store."""
    return variable("store") or DEFAULT_STORE_DIR
