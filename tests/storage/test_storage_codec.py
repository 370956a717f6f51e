import struct

import pytest
import torch

from chunkcache.errors import ConfigError, CorruptEntryError
from chunkcache.storage import CODECS, FORMAT_VERSION, CodecSpec, decode_kv, encode_kv, read_header
from chunkcache.storage.codec import payload_size
from chunkcache.storage.grouped_codec import GROUPED_CODECS
from chunkcache.storage.header import HEADER_SIZE

ZSTD = [None, 3]
FIXED_SIZE = [c for c in CODECS if c not in GROUPED_CODECS]  # the grouped codecs: test_storage_grouped.py
# relative error of a round trip of Gaussian KV: the grouped codecs' levels set theirs
ROUND_TRIP_BOUND = {"int4": 0.3, "kvq4": 0.15, "kvq3": 0.3, "ans20v10": 0.3, "ans16": 0.15, "ans8v4": 0.6, "st4": 0.3, "st6": 0.7}


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("level", ZSTD)
@pytest.mark.parametrize("name,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_raw_codecs_are_exact_to_their_dtype(kv_factory, name, dtype, level):
    kv = kv_factory(tokens=50)
    out = decode_kv(encode_kv(kv, CodecSpec(name, level)))
    assert out.dtype == torch.float32 and out.shape == kv.shape
    assert torch.equal(out, kv.to(dtype).float())


@pytest.mark.parametrize("level", ZSTD)
@pytest.mark.parametrize("name,bound", [("int8", 0.02), ("int4", 0.25)])
def test_quantized_codecs_stay_within_error_bounds(kv_factory, name, bound, level):
    kv = kv_factory(tokens=100)
    out = decode_kv(encode_kv(kv, CodecSpec(name, level)))
    assert out.shape == kv.shape
    for part in (0, 1):  # keys and values each
        assert rel_err(out[:, part], kv[:, part]) < bound


@pytest.mark.parametrize("name", FIXED_SIZE)
def test_blob_size_matches_layout(kv_factory, name):
    kv = kv_factory(tokens=64)
    blob = encode_kv(kv, CodecSpec(name))
    assert len(blob) == HEADER_SIZE + payload_size(name, tuple(kv.shape))
    bytes_per_token = (len(blob) - HEADER_SIZE) / 64
    fp16_per_token = 30 * 2 * 3 * 64 * 2
    assert bytes_per_token / fp16_per_token == pytest.approx({"fp16": 1, "bf16": 1, "int8": 0.5, "int4": 0.25, "fp32": 2}[name], rel=0.08)  # + scales


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("shape", [(1, 2, 1, 1, 1), (2, 2, 1, 7, 5), (3, 2, 2, 1, 63), (1, 2, 3, 0, 64), (2, 2, 3, 257, 64)])
def test_odd_shapes_round_trip(name, shape):
    kv = torch.randn(shape)
    out = decode_kv(encode_kv(kv, CodecSpec(name, 1)))
    assert out.shape == kv.shape
    if kv.numel():
        assert rel_err(out, kv) < ROUND_TRIP_BOUND.get(name, 0.02)


@pytest.mark.parametrize("src", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_none_returns_the_encoded_dtype(kv_factory, src):
    kv = kv_factory(tokens=8, layers=2, dtype=src)
    blob = encode_kv(kv, CodecSpec("bf16" if src == torch.bfloat16 else "fp16"))
    assert read_header(blob).source_dtype == str(src).removeprefix("torch.")
    out = decode_kv(blob, dtype=None)
    assert out.dtype == src
    assert decode_kv(blob, dtype=torch.float16).dtype == torch.float16


def test_header_fields(kv_factory):
    kv = kv_factory(tokens=9, layers=2)
    blob = encode_kv(kv, CodecSpec("int8", 5))
    assert blob[:4] == b"CCKV"
    h = read_header(blob)
    assert (h.version, h.codec, h.zstd, h.rope, h.shape) == (FORMAT_VERSION, "int8", True, 0, (2, 2, 3, 9, 64))
    assert h.payload_len == len(blob) - HEADER_SIZE


def test_fp32_is_lossless_and_rotated_flag_round_trips(kv_factory):
    from chunkcache.storage import decode_payload

    kv = kv_factory(tokens=9, layers=2)
    blob = encode_kv(kv, CodecSpec("fp32"), rotated=True)
    assert read_header(blob).rope == 1
    assert torch.equal(decode_kv(blob), kv.float())
    payload = decode_payload(blob)
    assert payload.rotated and payload.codec == "fp32"
    assert not decode_payload(encode_kv(kv, CodecSpec("fp32"))).rotated


def test_unknown_rope_flag_is_refused(kv_factory):
    from chunkcache.storage.header import HEADER_SIZE as H, KVHeader, pack_header

    payload = kv_factory(tokens=2, layers=1).to(torch.float16).numpy().tobytes()
    header = KVHeader(codec="fp16", source_dtype="float32", shape=(1, 2, 3, 2, 64), payload_len=len(payload), zstd=False, rope=2)
    with pytest.raises(CorruptEntryError, match="rope flag 2"):
        decode_kv(pack_header(header, payload) + payload)
    assert H == 48


def test_decoded_tensor_is_writable_and_owns_no_shared_state(kv_factory):
    kv = kv_factory(tokens=4, layers=1)
    blob = encode_kv(kv, CodecSpec("fp16"))
    a, b = decode_kv(blob, dtype=None), decode_kv(blob, dtype=None)
    a.zero_()
    assert not torch.equal(a, b)


# -- corruption -------------------------------------------------------------------------------

@pytest.fixture
def blob(kv_factory):
    return encode_kv(kv_factory(tokens=16, layers=2), CodecSpec("int8", 3))


def test_wrong_magic(blob):
    with pytest.raises(CorruptEntryError, match="magic"):
        decode_kv(b"XXXX" + blob[4:])


def test_unsupported_version(blob):
    with pytest.raises(CorruptEntryError, match="version 7"):
        decode_kv(blob[:4] + struct.pack("<H", 7) + blob[6:])


@pytest.mark.parametrize("where", [10, 20, HEADER_SIZE, -1])
def test_flipped_byte_fails_the_checksum(blob, where):
    b = bytearray(blob)
    b[where] ^= 0x01
    with pytest.raises(CorruptEntryError, match="checksum"):
        decode_kv(bytes(b))


@pytest.mark.parametrize("cut", [1, 100, len(b"CCKV")])
def test_truncated(blob, cut):
    with pytest.raises(CorruptEntryError, match="truncated|shorter"):
        decode_kv(blob[: len(blob) - cut] if cut != 4 else blob[:cut])


def test_over_long(blob):
    with pytest.raises(CorruptEntryError, match="over-long"):
        decode_kv(blob + b"\0")


def test_empty(blob):
    with pytest.raises(CorruptEntryError, match="shorter"):
        decode_kv(b"")


# -- validation -------------------------------------------------------------------------------

def test_codec_spec_validation_and_tag():
    assert CodecSpec("fp16").tag == "fp16"
    assert CodecSpec("int8", 3).tag == "int8+zstd3"
    with pytest.raises(ConfigError, match="int3"):
        CodecSpec("int3")
    for bad in (0, 23, True, 2.5):
        with pytest.raises(ConfigError, match="zstd_level"):
            CodecSpec("fp16", bad)
    with pytest.raises(Exception):
        CodecSpec("fp16").name = "int8"  # frozen


@pytest.mark.parametrize("kv", [torch.zeros(2, 3, 1, 4, 8), torch.zeros(2, 2, 1, 4), torch.zeros(1, 2, 1, 4, 8, dtype=torch.int32)])
def test_encode_rejects_bad_tensors(kv):
    with pytest.raises(ConfigError):
        encode_kv(kv, CodecSpec("fp16"))
