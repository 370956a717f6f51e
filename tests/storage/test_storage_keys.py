import numpy as np
import pytest
import torch

from chunkcache.errors import ConfigError
from chunkcache.storage import FORMAT_VERSION, CodecSpec, chunk_key

BASE = dict(model_fingerprint="smollm2-135m@abc", prefix_digest="p0", token_ids=[1, 2, 3, 50000], codec="fp16")


def key(**changes):
    return chunk_key(**{**BASE, **changes})


def test_key_is_32_bytes_and_deterministic():
    assert len(key()) == 32
    assert key() == key()
    assert key() == key(token_ids=np.array([1, 2, 3, 50000])) == key(token_ids=torch.tensor([1, 2, 3, 50000]))
    assert key() == key(format_version=FORMAT_VERSION)


@pytest.mark.parametrize(
    "changes",
    [
        dict(model_fingerprint="smollm2-135m@abd"),
        dict(prefix_digest="p1"),
        dict(token_ids=[1, 2, 3, 50001]),
        dict(token_ids=[1, 2, 3]),
        dict(token_ids=[2, 1, 3, 50000]),
        dict(token_ids=[]),
        dict(codec="int8"),
        dict(codec=CodecSpec("fp16", 3).tag),
        dict(format_version=FORMAT_VERSION + 1),
    ],
)
def test_any_difference_changes_the_key(changes):
    assert key(**changes) != key()


def test_fields_do_not_run_into_each_other():
    # Length prefixes: moving a character between adjacent string fields changes the key.
    assert key(model_fingerprint="ab", prefix_digest="c") != key(model_fingerprint="a", prefix_digest="bc")


@pytest.mark.parametrize("bad", [[1.5, 2.0], [2**31], [-(2**31) - 1], [[1, 2]], ["1"]])
def test_bad_token_ids_raise_config_error(bad):
    with pytest.raises(ConfigError):
        key(token_ids=bad)


def test_non_str_fields_raise_config_error():
    with pytest.raises(ConfigError, match="codec"):
        key(codec=CodecSpec("fp16"))
