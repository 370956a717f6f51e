"""The api's light modules stay light: schemas and settings describe the facade's types without
importing storage or torch, and the CLI builds its parser without importing the api."""

import subprocess
import sys

import pytest


def heavy_modules_after(code: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('chunkcache.storage', 'chunkcache.api.app'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return eval(out)


@pytest.mark.parametrize("code", [
    "import chunkcache.api.schemas, chunkcache.api.chat_schemas",
    "from chunkcache.api.settings import ServiceConfig; ServiceConfig.from_env({})",
    "from chunkcache.cli import build_parser; build_parser()",
])
def test_light_modules_import_no_storage_or_torch(code):
    assert heavy_modules_after(code) == []
