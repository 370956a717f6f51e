"""The fixed-step codecs (st*: 8-bit codes at a step a key channel and a value token, entropy-coded
with compact models): round trips against the documented arithmetic, sizes, corruption and the
compact coder."""

import itertools
import math
import struct

import numpy as np
import pytest
import torch

from chunkcache.errors import ConfigError, CorruptEntryError
from chunkcache.kernels import BY_NAME, Packing, apply_rope_reference, dequant_rope, rope_cos_sin
from chunkcache.storage import CodecSpec, decode_kv, decode_payload, encode_kv, read_header
from chunkcache.storage import entropy, stepped, stepped_codec
from chunkcache.storage.codec import payload_size
from chunkcache.storage.header import CODEC_IDS, HEADER_SIZE
from test_storage_grouped import _reseal  # a right checksum over a wrong payload

NAMES = tuple(n for n, c in BY_NAME.items() if c.packing is Packing.STEPPED)


def _index(wanted: float, at_least: float, top: int) -> int:
    i = min(max(round(8 * math.log2(max(wanted, 2.0**-15))) + 112, 0), top)
    while 2 ** ((i - 112) / 8) < at_least and i < top:  # fp16 rounding aside: STEPS is exact at 2**k
        i += 1
    return i


def reference(kv: torch.Tensor, plan: stepped_codec.StepPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented arithmetic (storage/stepped.py), written out head by head and token by
    token -> (kv_hat, step of every value [L, 2, H, T, d])."""
    L, _, H, T, d = kv.shape
    kr, vr = plan.ratios(L)
    out = torch.empty_like(kv, dtype=torch.float32)
    steps = torch.empty_like(out)
    for l, h in itertools.product(range(L), range(H)):
        x = kv[l, 0, h].float()  # [T, d]
        mean, lo, hi = x.mean(0), x.amin(0), x.amax(0)  # per channel
        spread = (x - mean).square().mean(0).mean().sqrt()  # rms over channels of their std
        s = stepped.STEPS[_index(float(kr[l] * spread), float((hi - lo).max()) / 252, 239)].float()
        off = torch.minimum(torch.maximum(mean - 128 * s, hi - 253 * s), lo - s).half().float()  # [d]
        out[l, 0, h] = ((x - off) / s).round().clamp(0, 255) * s + off
        steps[l, 0, h] = s
        for t in range(T):
            x = kv[l, 1, h, t].float()  # [d]
            rms = x.square().mean().sqrt()
            s = stepped.STEPS[_index(float(vr[l] * rms), float(x.abs().max()) / 126, 183)].float()
            out[l, 1, h, t] = ((x + 128 * s) / s).round().clamp(0, 255) * s - 128 * s
            steps[l, 1, h, t] = s
    return out, steps


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_matches_the_documented_arithmetic_within_half_a_step(kv_factory, name):
    kv = kv_factory(tokens=24, layers=3)
    out = decode_kv(encode_kv(kv, CodecSpec(name)))
    ref, steps = reference(kv, stepped_codec.PLANS[name])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert bool(((out - kv).abs() <= steps / 2 * 1.001).all())


def test_steps_are_a_byte_an_eighth_of_an_octave_apart():
    assert stepped.STEPS.dtype == torch.float16 and stepped.STEPS.shape == (256,)
    assert stepped.STEPS[0] == 2.0**-14 and stepped.STEPS[112] == 1 and stepped.STEPS[120] == 2
    assert torch.isfinite(stepped.STEPS).all() and stepped.STEPS[239] == stepped.STEPS[255]
    assert torch.isfinite(stepped.STEPS[183] * -128)


def test_an_outlier_widens_its_tokens_step_and_stays_within_half_a_step(kv_factory):
    kv = kv_factory(tokens=30, layers=1)
    kv[0, 1, 0, 5, 7] = 1000.0  # one value far outside its token
    out = decode_kv(encode_kv(kv, CodecSpec(NAMES[0])))
    _, steps = reference(kv, stepped_codec.PLANS[NAMES[0]])
    assert steps[0, 1, 0, 5, 0] >= 1000.0 / 126 > 10 * steps[0, 1, 0, 4, 0]
    assert abs(out[0, 1, 0, 5, 7] - 1000.0) <= steps[0, 1, 0, 5, 0] / 2


@pytest.mark.parametrize("name", NAMES)
def test_payload_is_the_kernels_grouped_layout_and_the_fused_path_agrees(kv_factory, name):
    kv = kv_factory(tokens=21, layers=2)
    blob = encode_kv(kv, CodecSpec(name))
    p = decode_payload(blob)
    assert p.codec == name and p.q.dtype == torch.uint8 and p.q.shape == kv.shape
    assert p.k_scale.shape == (2, 3, 2, 64) and p.v_scale.shape == (2, 3, 21, 2)
    assert p.k_scale.dtype == p.v_scale.dtype == torch.float16
    assert bool((p.k_scale[:, :, 0] == p.k_scale[:, :, 0, :1]).all())  # one key step a head
    assert bool((p.v_scale[..., 1] == -128 * p.v_scale[..., 0]).all())
    torch.testing.assert_close(p.decode(), decode_kv(blob), rtol=0, atol=0)
    positions, inv_freq = torch.arange(21), 1.0 / (10000 ** (torch.arange(32) / 32))
    k_rot, v = dequant_rope(p.k, p.k_scale, p.v, p.v_scale, positions, inv_freq, 1.0, name, torch.float32)
    torch.testing.assert_close(v, decode_kv(blob)[:, 1], rtol=0, atol=0)
    cos, sin = rope_cos_sin(positions, inv_freq, 1.0)
    torch.testing.assert_close(k_rot, apply_rope_reference(decode_kv(blob)[:, 0], cos, sin), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 2, 1, 1, 2), (2, 2, 1, 7, 6), (3, 2, 2, 1, 64), (1, 2, 3, 0, 64), (2, 2, 3, 129, 64)])
def test_odd_shapes_round_trip(name, shape):
    kv = torch.randn(shape)
    blob = encode_kv(kv, CodecSpec(name))
    assert len(blob) <= HEADER_SIZE + payload_size(name, shape)
    out = decode_kv(blob)
    assert out.shape == kv.shape
    if kv.numel():
        torch.testing.assert_close(out, reference(kv, stepped_codec.PLANS[name])[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_zero_kv_is_exact_and_constant_key_channels_nearly(name):
    assert torch.equal(decode_kv(encode_kv(torch.zeros(2, 2, 3, 5, 8), CodecSpec(name))), torch.zeros(2, 2, 3, 5, 8))
    kv = torch.full((2, 2, 3, 5, 8), 3.25)
    out = decode_kv(encode_kv(kv, CodecSpec(name)))
    torch.testing.assert_close(out[:, 0], kv[:, 0], rtol=0, atol=2.0**-14)  # std 0: the smallest step
    torch.testing.assert_close(out, reference(kv, stepped_codec.PLANS[name])[0], rtol=0, atol=0)


def test_coarser_plans_are_smaller_and_finer_ones_closer(kv_factory):
    kv = kv_factory(tokens=64, layers=4)
    sizes, errors = [], []
    for ratio in (0.2, 0.4, 0.8):
        plan = stepped_codec.StepPlan((ratio,), (ratio,))
        raw = stepped_codec.encode(kv, plan)[0]
        p = stepped_codec.parse(bytearray(raw), NAMES[0], tuple(kv.shape), False)
        sizes.append(len(raw))
        errors.append(((p.decode() - kv).norm() / kv.norm()).item())
    assert sizes[0] > sizes[1] > sizes[2] and errors[0] < errors[1] < errors[2]


def test_plans_spread_over_any_depth_and_refuse_bad_ratios(kv_factory):
    plan = stepped_codec.StepPlan((1.0, 2.0, 3.0), (0.5,))
    k, v = plan.ratios(6)
    assert k.tolist() == [1, 1, 2, 2, 3, 3] and v.tolist() == [0.5] * 6
    assert plan.ratios(2)[0].tolist() == [1, 2]
    with pytest.raises(ConfigError, match="step ratios"):
        stepped.quantize(kv_factory(tokens=4, layers=2), torch.zeros(2), torch.ones(2))


@pytest.mark.parametrize("name", NAMES)
def test_size_counts_everything_and_the_stats_count_the_stream(kv_factory, name):
    kv = kv_factory(tokens=64)
    raw, stats = stepped_codec.encode(kv, stepped_codec.PLANS[name])
    side = 4 + stepped_codec.side_bytes(tuple(kv.shape))
    assert 8 * (len(raw) - side) == sum(s.code_bits + s.model_bits for s in stats)
    assert len(raw) + HEADER_SIZE == len(encode_kv(kv, CodecSpec(name)))
    assert len(raw) <= payload_size(name, tuple(kv.shape))


def test_encoding_is_deterministic_and_zstd_round_trips(kv_factory):
    kv = kv_factory(tokens=33, layers=2)
    for name in NAMES:
        assert encode_kv(kv, CodecSpec(name)) == encode_kv(kv.clone(), CodecSpec(name))
        blob = encode_kv(kv, CodecSpec(name, 3))
        assert read_header(blob).zstd and torch.equal(decode_kv(blob), decode_kv(encode_kv(kv, CodecSpec(name))))


# -- header and corruption (flipped bytes, truncation, preamble: test_storage_grouped.py) -------

def test_ids_are_appended_after_ans8v4(kv_factory):
    for name in NAMES:
        assert encode_kv(kv_factory(tokens=3, layers=1), CodecSpec(name))[6] == CODEC_IDS[name] == BY_NAME[name].id >= 11


@pytest.fixture(params=NAMES)
def coded(request, kv_factory):
    kv = kv_factory(tokens=16, layers=2)
    return request.param, tuple(kv.shape), encode_kv(kv, CodecSpec(request.param))


def test_side_data_cut_short_or_a_stream_ending_early_is_refused(coded):
    name, shape, blob = coded
    payload = blob[HEADER_SIZE:]
    for bad in (payload[:100], payload[: 4 + stepped_codec.side_bytes(shape) + 5], payload[:-4]):
        with pytest.raises(CorruptEntryError):
            decode_kv(_reseal(name, shape, bad))


def test_bad_symbol_range_or_empty_model_is_refused(coded):
    name, shape, blob = coded
    at = HEADER_SIZE + 4 + stepped_codec.side_bytes(shape)  # the first segment's lo, hi
    empty = bytearray(blob[HEADER_SIZE:])
    empty[at - HEADER_SIZE : at - HEADER_SIZE + 2] = bytes([9, 3])
    with pytest.raises(CorruptEntryError, match="range 9..3"):
        decode_kv(_reseal(name, shape, bytes(empty)))
    lo, hi = blob[at], blob[at + 1]
    zero = bytearray(blob[HEADER_SIZE:])
    start = at - HEADER_SIZE + 2
    zero[start : start + hi - lo + 1] = bytes(hi - lo + 1)
    with pytest.raises(CorruptEntryError, match="probability 0"):
        decode_kv(_reseal(name, shape, bytes(zero)))


# -- the compact coder --------------------------------------------------------------------------

def test_compact_coder_round_trips_and_costs_about_the_entropy():
    g = np.random.default_rng(0)
    wide = np.clip(np.round(g.laplace(128, 6, 20000)), 0, 255).astype(np.uint8)
    one = np.full(20000, 77, dtype=np.uint8)  # a single symbol: model only
    edges = np.array([0, 255] * 10000, dtype=np.uint8)
    segs = torch.from_numpy(np.stack([wide, one, edges]))
    stream, stats = entropy.encode_compact(segs)
    assert torch.equal(entropy.decode_compact(memoryview(stream), 3, 20000), segs)
    assert sum(s.code_bits + s.model_bits for s in stats) == 8 * len(stream)
    counts = np.bincount(wide)
    p = counts[counts > 0] / wide.size
    ideal = -(counts[counts > 0] * np.log2(p)).sum()
    assert ideal <= stats[0].code_bits < ideal * 1.01 + 64
    assert stats[1].code_bits <= 64 and stats[2].code_bits < 1.01 * 20000 + 64
    with pytest.raises(CorruptEntryError, match="after its last segment"):
        entropy.decode_compact(memoryview(stream + b"\0"), 3, 20000)
    with pytest.raises(CorruptEntryError, match="ends inside"):
        entropy.decode_compact(memoryview(stream[:-4]), 3, 20000)


def test_compact_stream_words_are_little_endian_u32(kv_factory):
    kv = kv_factory(tokens=8, layers=1)
    raw = stepped_codec.encode(kv, stepped_codec.PLANS[NAMES[0]])[0]
    at = 4 + stepped_codec.side_bytes(tuple(kv.shape))
    lo, hi = raw[at], raw[at + 1]
    (words,) = struct.unpack_from("<I", raw, at + 2 + hi - lo + 1)
    assert 0 < words < 3 * 64 * 8  # under 4 bytes a code of the 8 x 3 x 64 first segment
