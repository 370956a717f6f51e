"""Entropy coding of quantized chunk KV codes (CacheGen-style), with constriction's ANS coder.

codes [L, 2, H, T, d] uint8 (keys and values each with their own levels) are coded as L * 2 segments, one per (layer, K or V),
each [H, T, d] in C order with its own probability model, because the code statistics differ
between layers and between keys and values. A segment is coded either as is or as deltas along
tokens (code[t] - code[t - 1], the first token as is), whichever has the lower empirical
entropy: CacheGen's observation is that neighbouring tokens' KV is close.

Stream layout, little-endian, segment after segment:

    u8   mode: 0 = codes, 1 = deltas along tokens (symbol = delta + levels - 1)
    u32  x alphabet   symbol counts (the part's levels, or 2 * levels - 1 for deltas): the model
    u32  words        compressed length in 32-bit words
    u32  x words      constriction AnsCoder output

The model is Categorical(counts / sum(counts)) built the same way on both sides, so decoding
needs nothing but the stream. Decode speed: about 30 ns a value on one core (90 ms for a
256-token chunk of the default model, 2.9 M values), far below recomputing the chunk.
"""

import struct
from dataclasses import dataclass

import numpy as np
import torch

from chunkcache.errors import CorruptEntryError

_MODE = struct.Struct("<B")
_U32 = struct.Struct("<I")
RAW, DELTA = 0, 1


@dataclass(frozen=True)
class SegmentStats:
    """One segment's coding: its mode and its size in bits (model + code words)."""

    mode: int
    values: int
    code_bits: int
    model_bits: int


def _model(counts: np.ndarray):
    import constriction  # imported on first use: only entropy-coded entries need it

    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def _symbols(seg: np.ndarray, levels: int) -> tuple[int, np.ndarray, np.ndarray]:
    """seg: [H, T, d] int32 codes -> (mode, symbols int32 [H*T*d], counts) of the cheaper coding."""
    raw = seg.reshape(-1)
    raw_counts = np.bincount(raw, minlength=levels).astype(np.float64)
    delta = seg.copy()
    delta[:, 1:] -= seg[:, :-1]  # [H, T, d]: along tokens
    delta = delta.reshape(-1) + (levels - 1)
    delta_counts = np.bincount(delta, minlength=2 * levels - 1).astype(np.float64)
    # the model costs 32 bits a symbol of the alphabet: count it against each choice
    if _entropy_bits(delta_counts) + 32 * len(delta_counts) < _entropy_bits(raw_counts) + 32 * len(raw_counts):
        return DELTA, delta.astype(np.int32), delta_counts
    return RAW, raw.astype(np.int32), raw_counts


def encode_codes(codes: torch.Tensor, levels: tuple[int, int]) -> tuple[bytes, list[SegmentStats]]:
    """codes: [L, 2, H, T, d] uint8, keys in [0, levels[0]), values in [0, levels[1])
    -> (stream bytes, per-segment stats)."""
    import constriction

    L, two, H, T, d = codes.shape
    arr = codes.numpy().astype(np.int32)
    parts, stats = [], []
    for i, seg in enumerate(arr.reshape(L * two, H, T, d)):
        mode, symbols, counts = _symbols(seg, levels[i % two])
        words = np.zeros(0, dtype=np.uint32)
        if symbols.size:
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(symbols, _model(counts))
            words = coder.get_compressed()
        parts += [_MODE.pack(mode), counts.astype("<u4").tobytes(), _U32.pack(len(words)), words.astype("<u4").tobytes()]
        stats.append(SegmentStats(mode, int(symbols.size), 32 * len(words), 32 * (len(counts) + 1) + 8))
    return b"".join(parts), stats


def decode_codes(stream: memoryview, levels: tuple[int, int], shape: tuple[int, ...]) -> torch.Tensor:
    """stream (exactly the bytes encode_codes wrote) -> codes [L, 2, H, T, d] uint8.

    Raises CorruptEntryError when the stream does not parse, decodes to codes outside
    [0, levels of their part), or leaves bytes over."""
    import constriction

    L, two, H, T, d = shape
    n = H * T * d
    out = np.empty((L * two, H, T, d), dtype=np.uint8)
    at = 0
    all_levels = levels
    for i in range(L * two):
        levels = all_levels[i % two]
        mode = _take(stream, at, 1, "mode")[0]
        at += 1
        if mode not in (RAW, DELTA):
            raise CorruptEntryError(f"entropy segment {i}: mode {mode} is neither codes (0) nor deltas (1)")
        alphabet = levels if mode == RAW else 2 * levels - 1
        counts = np.frombuffer(_take(stream, at, 4 * alphabet, "model"), dtype="<u4").astype(np.float64)
        at += 4 * alphabet
        (nwords,) = _U32.unpack(_take(stream, at, 4, "length"))
        at += 4
        words = np.frombuffer(_take(stream, at, 4 * nwords, "words"), dtype="<u4").astype(np.uint32)
        at += 4 * nwords
        if n == 0:
            out[i] = 0
            continue
        if counts.sum() != n:
            raise CorruptEntryError(f"entropy segment {i}: model counts sum to {counts.sum():.0f}, expected {n} values")
        symbols = constriction.stream.stack.AnsCoder(words).decode(_model(counts), n).astype(np.int32)
        seg = symbols.reshape(H, T, d)
        if mode == DELTA:
            seg = np.cumsum(seg - (levels - 1), axis=1)  # [H, T, d]: undo the deltas along tokens
        if seg.min() < 0 or seg.max() >= levels:
            raise CorruptEntryError(f"entropy segment {i}: decoded codes outside [0, {levels})")
        out[i] = seg
    if at != len(stream):
        raise CorruptEntryError(f"entropy stream has {len(stream) - at} bytes after its last segment")
    return torch.from_numpy(out).view(L, two, H, T, d)


def _take(stream: memoryview, at: int, size: int, what: str) -> memoryview:
    if at + size > len(stream):
        raise CorruptEntryError(f"entropy stream ends inside a segment's {what} (needs {at + size} bytes, has {len(stream)})")
    return stream[at : at + size]


# -- compact models (the st* codecs, `storage/stepped_codec.py`) ----------------------------------
#
# 8-bit codes over up to 256 symbols: a table of 4-byte counts would cost a 70-token chunk of the
# default model ~0.4 bits a value, so a segment's model is its used symbol range and one byte a
# symbol, q = 1 + round(8 * log2(count)) (0: absent), the probability ~ 2 ** ((q - 1) / 8)
# (within 4.5% of the count's share: costs under 0.01 bits a value). Segment layout:
#
#     u8   lo, u8 hi   the symbols' range
#     u8 x (hi-lo+1)   q per symbol
#     u32  words       compressed length in 32-bit words (0 when lo == hi: every symbol is lo)
#     u32 x words      constriction AnsCoder output (symbols - lo)


def _compact_probs(q: np.ndarray) -> np.ndarray:
    p = np.where(q > 0, np.exp2((q.astype(np.float64) - 1) / 8), 0.0)
    return p / p.sum()


def encode_compact(segments: torch.Tensor) -> tuple[bytes, list[SegmentStats]]:
    """segments: uint8 [S, n] (n > 0) -> (stream bytes, per-segment stats), each segment coded with
    its own compact model."""
    import constriction

    parts, stats = [], []
    for seg in segments.numpy():
        counts = np.bincount(seg, minlength=256)
        used = np.flatnonzero(counts)
        lo, hi = int(used[0]), int(used[-1])
        c = counts[lo : hi + 1]
        q = np.where(c > 0, np.minimum(255, 1 + np.round(8 * np.log2(np.maximum(c, 1)))), 0).astype(np.uint8)
        words = np.zeros(0, dtype=np.uint32)
        if hi > lo:  # one symbol: its range says it all
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(seg.astype(np.int32) - lo, constriction.stream.model.Categorical(_compact_probs(q), perfect=False))
            words = coder.get_compressed()
        parts += [bytes([lo, hi]), q.tobytes(), _U32.pack(len(words)), words.astype("<u4").tobytes()]
        stats.append(SegmentStats(RAW, int(seg.size), 32 * len(words), 8 * (2 + len(q) + 4)))
    return b"".join(parts), stats


def decode_compact(stream: memoryview, segments: int, n: int) -> torch.Tensor:
    """stream (exactly the bytes encode_compact wrote) -> uint8 [segments, n].

    Raises CorruptEntryError when the stream does not parse or leaves bytes over."""
    import constriction

    out = np.empty((segments, n), dtype=np.uint8)
    at = 0
    for i in range(segments):
        lo, hi = _take(stream, at, 2, "symbol range")
        at += 2
        if hi < lo:
            raise CorruptEntryError(f"entropy segment {i}: symbol range {lo}..{hi} is empty")
        q = np.frombuffer(_take(stream, at, hi - lo + 1, "model"), dtype=np.uint8)
        at += hi - lo + 1
        if not q.any():
            raise CorruptEntryError(f"entropy segment {i}: its model gives every symbol probability 0")
        (nwords,) = _U32.unpack(_take(stream, at, 4, "length"))
        at += 4
        words = np.frombuffer(_take(stream, at, 4 * nwords, "words"), dtype="<u4").astype(np.uint32)
        at += 4 * nwords
        if hi == lo:
            if nwords:
                raise CorruptEntryError(f"entropy segment {i}: one symbol, yet {nwords} code words")
            out[i] = lo
            continue
        try:  # constriction refuses a model of one symbol and words that are not a coder's state
            model = constriction.stream.model.Categorical(_compact_probs(q), perfect=False)
            symbols = constriction.stream.stack.AnsCoder(words).decode(model, n)
        except Exception as e:
            raise CorruptEntryError(f"entropy segment {i} does not decode: {e}") from e
        if int(symbols.max(initial=0)) > hi - lo:
            raise CorruptEntryError(f"entropy segment {i}: decoded symbols outside {lo}..{hi}")
        out[i] = symbols + lo
    if at != len(stream):
        raise CorruptEntryError(f"entropy stream has {len(stream) - at} bytes after its last segment")
    return torch.from_numpy(out)
