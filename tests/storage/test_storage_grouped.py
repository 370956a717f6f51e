"""The grouped codecs (kvq4, kvq3: packed codes; ans20v10, ans16, ans8v4: entropy-coded codes):
round trips, sizes, header, corruption, bit packing and the entropy coder. Header and corruption
tests also cover the fixed-step codecs (st4, st6; the rest of theirs: test_storage_stepped.py)."""

import struct
import zlib

import numpy as np
import pytest
import torch

from chunkcache.errors import ConfigError, CorruptEntryError
from chunkcache.kernels import Packing
from chunkcache.storage import CodecSpec, decode_kv, decode_payload, encode_kv, read_header
from chunkcache.storage import entropy, grouped, grouped_codec
from chunkcache.storage.codec import payload_size
from chunkcache.storage.grouped_codec import GROUPED_CODECS, LEVEL_CODECS
from chunkcache.storage.header import CODEC_IDS, HEADER_SIZE, KVHeader, pack_header

NAMES = tuple(LEVEL_CODECS)  # the fixed-step ones (st*): test_storage_stepped.py
ALL = tuple(GROUPED_CODECS)  # header and corruption tests: the level and the fixed-step codecs
PACKED = tuple(n for n, c in GROUPED_CODECS.items() if c.packing is Packing.BITS)
CODED = tuple(n for n, c in GROUPED_CODECS.items() if c.packing is Packing.ENTROPY)
# relative error bound of keys or values on the factory's KV at 64 tokens, by their levels
BOUNDS = {20: 0.07, 16: 0.1, 10: 0.18, 8: 0.22, 4: 0.5}


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def reference_dequant(kv, levels: tuple[int, int], group):
    """The documented arithmetic (storage/grouped.py), written out here, on the factory's KV."""
    L, _, H, T, d = kv.shape
    G = grouped.value_groups(d, group)
    out = torch.empty_like(kv, dtype=torch.float32)
    for part, dim, x in ((0, 2, kv[:, 0].float()), (1, 4, kv[:, 1].float().reshape(L, H, T, G, d // G))):
        lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
        step = ((hi - lo) / (levels[part] - 1)).half().float()
        off = lo.half().float()
        q = torch.where(step > 0, ((x - off) / torch.where(step > 0, step, 1)).round().clamp(0, levels[part] - 1), 0)
        out[:, part] = (q * step + off).reshape(L, H, T, d)
    return out


def test_storage_and_kernels_know_the_same_grouped_codecs():
    from chunkcache.kernels import GROUPED_CODECS as KERNEL_CODECS
    from chunkcache.names import CODECS

    assert tuple(GROUPED_CODECS) == KERNEL_CODECS and set(KERNEL_CODECS) <= set(CODECS)
    assert set(NAMES) == {n for n, c in GROUPED_CODECS.items() if c.packing is not Packing.STEPPED}


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_matches_the_documented_arithmetic(kv_factory, name):
    kv = kv_factory(tokens=64, layers=4)
    levels = GROUPED_CODECS[name].levels
    out = decode_kv(encode_kv(kv, CodecSpec(name)))
    assert out.dtype == torch.float32 and out.shape == kv.shape
    torch.testing.assert_close(out, reference_dequant(kv, levels, 64), rtol=0, atol=1e-5)
    for part in (0, 1):
        assert rel_err(out[:, part], kv[:, part]) < BOUNDS[levels[part]]


@pytest.mark.parametrize("name", NAMES)
def test_payload_decode_and_fused_reference_agree(kv_factory, name):
    kv = kv_factory(tokens=21, layers=2)
    blob = encode_kv(kv, CodecSpec(name))
    p = decode_payload(blob)
    assert p.codec == name and p.q.dtype == torch.uint8 and p.q.shape == kv.shape
    assert [int(p.q[:, part].max()) < n for part, n in enumerate(GROUPED_CODECS[name].levels)] == [True, True]
    torch.testing.assert_close(p.decode(), decode_kv(blob), rtol=0, atol=0)


def test_entropy_codecs_decode_the_same_values_as_packed_at_equal_levels(kv_factory):
    kv = kv_factory(tokens=50, layers=3)
    packed, coded = (encode_kv(kv, CodecSpec(n)) for n in ("kvq4", "ans16"))
    assert torch.equal(decode_kv(packed), decode_kv(coded))
    assert len(coded) < len(packed)  # the factory's Gaussian codes hold well under 4 bits of entropy


@pytest.mark.parametrize("name", PACKED)
def test_packed_size_is_exact_and_counts_everything(kv_factory, name):
    T = 64
    kv = kv_factory(tokens=T)
    blob = encode_kv(kv, CodecSpec(name))
    assert len(blob) == HEADER_SIZE + payload_size(name, tuple(kv.shape))
    L, _, H, _, d = kv.shape
    bits = sum(GROUPED_CODECS[name].bits)
    # codes + key step/offset per channel + value step/offset per token (one group: d = 64)
    expected = HEADER_SIZE + 8 + L * H * T * d * bits // 8 + 2 * (L * H * 2 * d + L * H * T * 2)
    assert len(blob) == expected


@pytest.mark.parametrize("name", CODED)
def test_entropy_coded_size_stays_under_its_bound_and_below_the_levels_bits(kv_factory, name):
    kv = kv_factory(tokens=64)
    blob = encode_kv(kv, CodecSpec(name))
    assert len(blob) <= HEADER_SIZE + payload_size(name, tuple(kv.shape))
    values = kv.numel()
    fixed_bits = np.log2(GROUPED_CODECS[name].levels).mean()
    assert (len(blob) - HEADER_SIZE) * 8 / values < fixed_bits + 0.6  # + scales and models


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 2, 1, 1, 2), (2, 2, 1, 7, 6), (3, 2, 2, 1, 64), (1, 2, 3, 0, 64), (2, 2, 3, 129, 64)])
def test_odd_shapes_round_trip(name, shape):
    kv = torch.randn(shape)
    blob = encode_kv(kv, CodecSpec(name))
    out = decode_kv(blob)
    assert out.shape == kv.shape
    if kv.numel():
        torch.testing.assert_close(out, reference_dequant(kv, GROUPED_CODECS[name].levels, 64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("group", [8, 32, 48])
def test_group_size_is_a_setting_and_recorded_in_the_entry(kv_factory, group):
    kv = kv_factory(tokens=30, layers=2)
    spec = CodecSpec("kvq4", group_size=group)
    assert spec.tag == f"kvq4g{group}"
    p = decode_payload(encode_kv(kv, spec))
    G = grouped.value_groups(64, group)  # 48 does not divide 64: one group a token
    assert p.v_scale.shape == (2, 3, 30, 2 * G)
    torch.testing.assert_close(p.decode(), reference_dequant(kv, (16, 16), group), rtol=0, atol=1e-5)
    finer = rel_err(decode_kv(encode_kv(kv, CodecSpec("kvq4", group_size=8)))[:, 1], kv[:, 1])
    assert finer <= rel_err(decode_kv(encode_kv(kv, CodecSpec("kvq4")))[:, 1], kv[:, 1])


@pytest.mark.parametrize("name", ["kvq3", "ans20v10"])
def test_zstd_round_trips(kv_factory, name):
    kv = kv_factory(tokens=16, layers=2)
    blob = encode_kv(kv, CodecSpec(name, 3))
    assert read_header(blob).zstd and torch.equal(decode_kv(blob), decode_kv(encode_kv(kv, CodecSpec(name))))


def test_group_size_is_validated():
    for bad in (0, 65536, True, 4.0):
        with pytest.raises(ConfigError, match="group_size"):
            CodecSpec("kvq4", group_size=bad)


def test_encoding_is_deterministic(kv_factory):
    kv = kv_factory(tokens=33, layers=2)
    for name in NAMES:
        assert encode_kv(kv, CodecSpec(name)) == encode_kv(kv.clone(), CodecSpec(name))


# -- header -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_header_carries_the_codec_id_and_rope_flag(kv_factory, name):
    kv = kv_factory(tokens=9, layers=2)
    blob = encode_kv(kv, CodecSpec(name), rotated=True)
    assert blob[6] == CODEC_IDS[name] and CODEC_IDS[name] >= 6  # appended after fp32 (5)
    h = read_header(blob)
    assert (h.codec, h.zstd, h.rope, h.shape) == (name, False, 1, (2, 2, 3, 9, 64))
    assert decode_payload(blob).rotated


# -- corruption ---------------------------------------------------------------------------------

def _reseal(name: str, shape, payload: bytes) -> bytes:
    """A blob whose checksum is right for a wrong payload: what a writer bug would store."""
    header = KVHeader(codec=name, source_dtype="float32", shape=shape, payload_len=len(payload), zstd=False)
    return pack_header(header, payload) + payload


@pytest.fixture(params=ALL)
def coded(request, kv_factory):
    kv = kv_factory(tokens=16, layers=2)
    return request.param, tuple(kv.shape), encode_kv(kv, CodecSpec(request.param))


@pytest.mark.parametrize("where", [HEADER_SIZE, HEADER_SIZE + 3, -1, -5])
def test_flipped_payload_byte_fails_the_checksum(coded, where):
    _, _, blob = coded
    b = bytearray(blob)
    b[where] ^= 0x10
    with pytest.raises(CorruptEntryError, match="checksum"):
        decode_kv(bytes(b))


def test_truncated_and_over_long(coded):
    _, _, blob = coded
    with pytest.raises(CorruptEntryError, match="truncated"):
        decode_kv(blob[:-3])
    with pytest.raises(CorruptEntryError, match="over-long"):
        decode_kv(blob + b"\0")


def test_wrong_preamble_is_refused(coded):
    name, shape, blob = coded
    payload = bytearray(blob[HEADER_SIZE:])
    payload[0] ^= 0x01  # key levels - 1
    with pytest.raises(CorruptEntryError, match="preamble"):
        decode_kv(_reseal(name, shape, bytes(payload)))


def test_short_or_long_body_is_refused_even_with_a_valid_checksum(coded):
    name, shape, blob = coded
    payload = blob[HEADER_SIZE:]
    for bad in (payload[:-4], payload + b"\0\0\0\0", payload[:3]):
        with pytest.raises(CorruptEntryError):
            decode_kv(_reseal(name, shape, bad))


@pytest.mark.parametrize("name", CODED)
def test_entropy_stream_with_bad_model_or_mode_is_refused(kv_factory, name):
    kv = kv_factory(tokens=16, layers=1)
    blob = encode_kv(kv, CodecSpec(name))
    body = 8 + grouped_codec.scale_bytes(tuple(kv.shape), 64)  # the preamble, the scales
    payload = bytearray(blob[HEADER_SIZE:])
    bad_mode = bytearray(payload)
    bad_mode[body] = 7
    with pytest.raises(CorruptEntryError, match="mode 7"):
        decode_kv(_reseal(name, tuple(kv.shape), bytes(bad_mode)))
    bad_count = bytearray(payload)
    first = struct.unpack_from("<I", bad_count, body + 1)[0]
    struct.pack_into("<I", bad_count, body + 1, first + 1)  # counts no longer sum to the values
    with pytest.raises(CorruptEntryError, match="counts sum"):
        decode_kv(_reseal(name, tuple(kv.shape), bytes(bad_count)))


# -- pieces -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100])
def test_bit_packing_round_trips(bits, n):
    g = torch.Generator().manual_seed(bits * 100 + n)
    codes = torch.randint(0, 1 << bits, (n,), generator=g, dtype=torch.int64).to(torch.uint8)
    packed = grouped.pack_bits(codes, bits)
    assert packed.numel() == grouped.packed_size(n, bits) == (n + 7) // 8 * bits
    assert torch.equal(grouped.unpack_bits(packed, bits, (n,)), codes)


def test_four_bit_packing_is_two_nibbles_a_byte_low_first():
    codes = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8], dtype=torch.uint8)
    assert grouped.pack_bits(codes, 4).tolist() == [0x21, 0x43, 0x65, 0x87]


def test_entropy_coder_picks_deltas_where_tokens_are_smooth_and_reports_bits():
    H, T, d, levels = 2, 200, 8, 16
    ramp = (torch.arange(T) // 20 % levels).to(torch.uint8)  # slow along tokens: deltas mostly 0
    smooth = ramp.view(1, 1, 1, T, 1).expand(1, 1, H, T, d)
    noisy = torch.randint(0, levels, (1, 1, H, T, d), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    codes = torch.cat([smooth, noisy], dim=1).contiguous()  # [1, 2, H, T, d]
    stream, stats = entropy.encode_codes(codes, (levels, levels))
    assert [s.mode for s in stats] == [entropy.DELTA, entropy.RAW]
    assert stats[0].code_bits < 0.35 * stats[0].values and stats[1].code_bits > 3.9 * stats[1].values
    assert sum(s.code_bits + s.model_bits for s in stats) == 8 * len(stream)
    assert torch.equal(entropy.decode_codes(memoryview(stream), (levels, levels), tuple(codes.shape)), codes)


def test_crc_covers_the_whole_entropy_payload(kv_factory):
    blob = encode_kv(kv_factory(tokens=8, layers=1), CodecSpec("ans8v4"))
    assert struct.unpack_from("<I", blob, 44)[0] == zlib.crc32(blob[HEADER_SIZE:], zlib.crc32(blob[:44]))
