"""CacheConfig.device / dtype: validation, the CLI flags, bf16 on the CPU, and every tensor of a
request on the configured device (the CUDA cases run when a GPU is present)."""

import pytest
import torch

from chunkcache import ChunkCache
from chunkcache.cli import _cache_config, build_parser
from chunkcache.config import DTYPES, BlendConfig, CacheConfig
from chunkcache.errors import ConfigError

PASSAGES = [
    {"title": "Alder", "text": "Alder trees grow along wet river banks and fix nitrogen in the soil."},
    {"title": "Birch", "text": "Birch bark peels in thin white sheets and burns even when damp."},
    {"title": "Cedar", "text": "Cedar wood resists rot, which is why it is used for shingles."},
]
QUESTION = "Which tree has bark that burns when damp?"
NO_GPU = "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU))]


@pytest.mark.parametrize("kwargs,named", [
    (dict(device="gpu"), "'gpu'"),
    (dict(device="cuda:x"), "'cuda:x'"),
    (dict(device="cpu:0"), "'cpu:0'"),
    (dict(dtype="fp8"), "'fp8'"),
    (dict(dtype="half"), "'half'"),
])
def test_bad_device_or_dtype_is_a_config_error_naming_the_value(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        CacheConfig(store_dir="x", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_says_so(device):
    with pytest.raises(ConfigError, match=f"'{device}' requested but CUDA is not available on this machine"):
        CacheConfig(store_dir="x", device=device)


def test_defaults_and_cli_flags():
    c = CacheConfig(store_dir="x")
    assert (c.device, c.dtype, c.torch_dtype) == ("cpu", "float32", torch.float32)
    args = build_parser().parse_args(["answer", "q", "--passage", "p", "--store", "x", "--dtype", "bfloat16"])
    config = _cache_config(args)
    assert (config.device, config.dtype, config.torch_dtype) == ("cpu", "bfloat16", torch.bfloat16)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["answer", "q", "--store", "x", "--device", "tpu"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["answer", "q", "--store", "x", "--dtype", "float64"])
    assert set(DTYPES) == {"float32", "bfloat16", "float16"}


@pytest.fixture(scope="module")
def bf16(tmp_path_factory, tiny_model_dir):
    cc = ChunkCache(store_dir=str(tmp_path_factory.mktemp("bf16")), model=str(tiny_model_dir), dtype="bfloat16",
                    chain_entries=False)  # blend against full: no exact repeats
    yield cc
    cc.close()


def test_bfloat16_on_the_cpu_runs_every_mode(bf16):
    assert bf16.generator.dtype == torch.bfloat16 and bf16.prefix.k.dtype == torch.bfloat16
    full = bf16.answer(QUESTION, PASSAGES, mode="full", max_new_tokens=6, return_logprobs=True)
    blend = bf16.answer(QUESTION, PASSAGES, mode="blend", recompute_ratio=1.0, max_new_tokens=6, return_logprobs=True)
    assert blend.recomputed_tokens == blend.context_tokens
    # bf16 keeps 8 mantissa bits: the same prompt computed along two paths agrees to about 1e-2.
    torch.testing.assert_close(blend.first_logprobs, full.first_logprobs, rtol=0.05, atol=0.05)
    for mode in ("reuse", "blend", "ape"):
        ans = bf16.answer(QUESTION, PASSAGES, mode=mode, max_new_tokens=6)
        assert ans.generated_tokens >= 1 and all(p.hit for p in ans.passages)


@pytest.mark.parametrize("device", DEVICES)
def test_every_tensor_of_a_request_lives_on_the_device(tmp_path, tiny_model_dir, device):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), device=device, codec="int8", chain_entries=False) as cc:
        assert cc.generator.device.type == device
        assert cc.prefix.k.device.type == device and cc.prefix.q.device.type == device
        full = cc.answer(QUESTION, PASSAGES, mode="full", max_new_tokens=6, return_logprobs=True)
        blend = cc.answer(QUESTION, PASSAGES, mode="blend", recompute_ratio=1.0, max_new_tokens=6, return_logprobs=True)
        assert blend.token_ids == full.token_ids  # float32: blend at ratio 1 is the full prefill
        torch.testing.assert_close(blend.first_logprobs, full.first_logprobs, rtol=1e-3, atol=1e-3)
        for mode, ratio, deviation in (("reuse", None, "probe"), ("blend", 0.3, "probe"), ("blend", 0.3, "vattn"), ("ape", None, "probe")):
            ans = cc.answer(QUESTION, PASSAGES, mode=mode, recompute_ratio=ratio, max_new_tokens=6,
                            blend=BlendConfig(deviation_of=deviation, sink_tokens=2))
            assert ans.generated_tokens >= 1 and all(p.hit for p in ans.passages)


@pytest.mark.parametrize("device", DEVICES[1:])
def test_cuda_answers_match_the_cpu(tmp_path, tiny_model_dir, device):
    """The same request on `device` and on the CPU gives the same tokens (float32)."""
    answers = {}
    for dev in ("cpu", device):
        with ChunkCache(store_dir=str(tmp_path / dev), model=str(tiny_model_dir), device=dev) as cc:
            answers[dev] = [cc.answer(QUESTION, PASSAGES, mode=m, max_new_tokens=6).token_ids for m in ("full", "reuse", "blend")]
    assert answers[device] == answers["cpu"]
