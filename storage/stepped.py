"""Fixed-step quantization of chunk KV to 8-bit codes for entropy coding (the `st*` codecs).

The level codecs (`grouped.py`) split each group's range into a fixed number of levels, so an
outlier widens every step of its group, and each key channel and value token pays 32 bits of
fp16 scales. Here a step is a share of a spread: keys one step a head, a share of the rms over
its channels of each channel's standard deviation over the chunk's tokens (each channel keeps
its own offset); values one step a token, a share of its rms over the head's channels. The
entropy coder (`entropy.encode_compact`) spends on each code what its frequency asks, outliers
included, and a step costs one byte: an index into a table of steps 1/8 octave apart (`STEPS`).
Measured with scripts/codec_proxy.py (24 2WikiMQA questions, blend against an fp16 store, ~4x
smaller than fp16): one key step a head moved the first token less than a step a channel
proportional to its std (first-token KL 0.0013 against 0.0017; halfway, std**0.5: 0.0014), while
values need their step a token (one a head doubled the KL on 12 questions).

    kv     [L, 2, H, T, d] float (keys before RoPE)
    codes  [L, 2, H, T, d] uint8
    kstep  [L, H]    uint8  key step a head (index into STEPS)
    koff   [L, H, d] fp16   key offset a channel (code 0's value)
    vstep  [L, H, T] uint8  value step a token; its offset is -128 steps (values sit around 0)

Arithmetic, exactly (the kernels' grouped dequantization, `code * step + offset`):
  1. keys: mean, std, lo, hi of each channel over the tokens (fp32); the step wanted is
     ratio * sqrt(mean of std**2 over the head's channels), at least the widest (hi - lo) / 252
     so every channel fits in 0..255;
     values: rms and max |x| of each token over its d channels; ratio * rms, at least max / 126;
  2. step index = clamp(round(8 * log2(wanted)) + 112, 0, top), raised by one while
     STEPS[index] is below the "at least" bound and under top; step = float32(STEPS[index]);
     top 239 for keys (steps 2**-14..60097), 183 for values (up to 469, so -128 steps is an fp16);
  3. key offset = fp16(clamp(mean - 128 * step, hi - 253 * step, lo - step)) (code 128 about
     the channel's mean, lo and hi a step inside 0 and 255); value offset = -128 * step (exact);
  4. code = clamp(round_half_even((x - float32(offset)) / step), 0, 255);
  5. dequantized x = float32(code) * step + float32(offset): within step / 2 of x (a key offset
     more than 2048 steps from 0 may lose up to a step to its fp16 rounding).
"""

import torch

from chunkcache.errors import ConfigError

_MAX_INDEX = 239  # 2 ** (127 / 8) = 60097 < 65504, the largest fp16
_MAX_VALUE_INDEX = 183  # 2 ** (71 / 8) = 469: its offset, -128 steps, stays a finite fp16
# STEPS[i] = 2 ** ((i - 112) / 8) in fp16: 2**-14 (the smallest normal fp16) at 0, 1 at 112
STEPS = torch.exp2((torch.arange(256, dtype=torch.float64).clamp(max=_MAX_INDEX) - 112) / 8).to(torch.float16)


def step_index(wanted: torch.Tensor, at_least: torch.Tensor, top: int = _MAX_INDEX) -> torch.Tensor:
    """fp32 step wanted and lower bound (same shape) -> uint8 index into STEPS, at most `top` (step 2)."""
    i = (torch.log2(wanted.clamp(min=2.0**-15)) * 8).round().add_(112).clamp_(0, top).long()
    table = STEPS.float()
    for _ in range(256):  # a few rounds at most: each raises the short ones by 1/8 octave
        short = (table[i] < at_least) & (i < top)
        if not bool(short.any()):
            break
        i += short.long()
    return i.to(torch.uint8)


def _codes(x: torch.Tensor, step: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return (x - offset).div_(step).round_().clamp_(0, 255).to(torch.uint8)


def quantize(kv: torch.Tensor, key_ratio: torch.Tensor, value_ratio: torch.Tensor):
    """kv [L, 2, H, T, d]; key_ratio, value_ratio [L] float (step as a share of the spread)
    -> (codes uint8 [L, 2, H, T, d], kstep uint8 [L, H], koff fp16 [L, H, d], vstep uint8 [L, H, T])."""
    L, two, H, T, d = kv.shape
    if key_ratio.shape != (L,) or value_ratio.shape != (L,) or bool((key_ratio <= 0).any() | (value_ratio <= 0).any()):
        raise ConfigError(f"step ratios must be [{L}] positive floats, got {list(key_ratio.shape)}, {list(value_ratio.shape)}")
    codes = torch.zeros((L, 2, H, T, d), dtype=torch.uint8)
    kstep, koff = torch.zeros((L, H), dtype=torch.uint8), torch.zeros((L, H, d), dtype=torch.float16)
    vstep = torch.zeros((L, H, T), dtype=torch.uint8)
    if T == 0 or d == 0:
        return codes, kstep, koff, vstep
    k = kv[:, 0].float()  # [L, H, T, d]
    mean = k.mean(dim=2)  # [L, H, d]
    spread = (k - mean[:, :, None]).square().mean(dim=(2, 3)).sqrt()  # [L, H]: rms of the channels' std
    lo, hi = torch.aminmax(k, dim=2)  # [L, H, d] each
    kstep = step_index(key_ratio[:, None] * spread, (hi - lo).amax(dim=-1) / 252)  # [L, H]
    s = STEPS[kstep.long()].float()[:, :, None]  # [L, H, 1]
    koff = torch.minimum(torch.maximum(mean - 128 * s, hi - 253 * s), lo - s).clamp(-65504, 65504).to(torch.float16)
    codes[:, 0] = _codes(k, s[:, :, None], koff[:, :, None].float())
    v = kv[:, 1].float()  # [L, H, T, d]
    rms = v.square().mean(dim=-1).sqrt()  # [L, H, T]
    vstep = step_index(value_ratio[:, None, None] * rms, v.abs().amax(dim=-1) / 126, _MAX_VALUE_INDEX)
    s = STEPS[vstep.long()].float()[..., None]  # [L, H, T, 1]
    codes[:, 1] = _codes(v, s, -128 * s)
    return codes, kstep, koff, vstep


def scales(kstep: torch.Tensor, koff: torch.Tensor, vstep: torch.Tensor):
    """The kernels' grouped scales: -> (k_scale [L, H, 2, d], v_scale [L, H, T, 2]) fp16, one
    value group a token (`kernels.dequantize_grouped_reference`)."""
    ks = STEPS[kstep.long()][:, :, None].expand(koff.shape)  # [L, H, d]
    vs = STEPS[vstep.long()]  # [L, H, T]
    return torch.stack([ks, koff], dim=2), torch.stack([vs, vs * -128], dim=-1)
