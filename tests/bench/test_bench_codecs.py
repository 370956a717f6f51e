"""`chunkcache bench --codecs`: options, spec checks, the code-bits report and the table (no model)."""

import pytest
import torch

from chunkcache.bench.codecs import DEFAULT_CODECS, CodecBenchSpec, code_bits, format_codecs
from chunkcache.cli import build_parser
from chunkcache.errors import ConfigError


def test_codecs_option_takes_a_list_or_the_default():
    parser = build_parser()
    args = parser.parse_args(["bench", "--data", "d", "--out", "o", "--codecs", "fp16,ans16", "--threads", "1"])
    assert args.codecs == ("fp16", "ans16") and args.threads == 1
    assert parser.parse_args(["bench", "--data", "d", "--out", "o", "--codecs"]).codecs == DEFAULT_CODECS
    assert parser.parse_args(["bench", "--data", "d", "--out", "o"]).codecs is None


@pytest.mark.parametrize("bad", ["fp16,int3", ""])
def test_unknown_codecs_are_refused(bad):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--data", "d", "--out", "o", "--codecs", bad])
    assert exc.value.code == 2
    with pytest.raises(ConfigError):
        CodecBenchSpec(data="d", store="s", codecs=tuple(x for x in bad.split(",") if x) or ())


def test_code_bits_only_for_entropy_coded_codecs():
    kv = torch.randn(2, 2, 3, 40, 64)
    assert code_bits(kv, "kvq4") is None and code_bits(kv, "fp16") is None
    bits = code_bits(kv, "ans16")
    assert 3.0 < bits < 4.0  # Gaussian codes at 16 levels, the per-segment models included


def _rep(x: float) -> dict:
    rep = {"n": 3, "bytes_per_token": 23040 / x, "compression_vs_fp16": x}
    for m in ("fidelity", "fidelity_change", "first_token_kl", "first_token_kl_change", "fidelity_to_fp16", "kl_to_fp16"):
        rep[m], rep[m + "_lo"], rep[m + "_hi"] = 0.01, 0.0, 0.02
    return rep


def test_table_has_a_row_per_codec_with_its_intervals():
    result = {"examples": 3, "dataset": "2wikimqa", "machine": {"cpu": "x", "usable_cores": 2, "torch_threads": 1},
              "load": {"chunks": 10, "tokens_per_chunk": 256, "recompute_ms_10_chunks": 5000.0,
                       "codecs": {"fp16": {"compression_vs_fp16": 1.0, "code_bits_per_value": None, "lmdb_load_ms": 8.0,
                                           "redis_load_ms": 10.0},
                                  "ans16": {"compression_vs_fp16": 4.3, "code_bits_per_value": 3.3, "lmdb_load_ms": 90.0,
                                            "redis_load_ms": 95.0}}},
              "quality": {"fp16": _rep(1.0), "ans16": _rep(4.3)}}
    text = format_codecs(result)
    rows = [line for line in text.splitlines() if line.startswith("| fp16") or line.startswith("| ans16")]
    assert len(rows) == 2 and "| 4.30 |" in rows[1] and "3.30" in rows[1] and "[+0.000, +0.020]" in rows[1]
    assert "recompute of 10 chunks of 256 tokens: 5000 ms" in text
