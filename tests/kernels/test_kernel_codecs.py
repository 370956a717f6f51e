"""kernels.codecs: the one description of every stored codec's layout."""

import pytest
import torch

from chunkcache.kernels import (
    LAYOUTS,
    KernelInputError,
    Packing,
    Scales,
    dequantize_reference,
    layout,
    lossless_codec,
    unpack_int4,
)


def test_ids_are_unique_and_the_kernel_dtypes_follow_the_layouts():
    from chunkcache.kernels import CODEC_DTYPES, GROUPED_CODECS

    assert len({c.id for c in LAYOUTS}) == len(LAYOUTS)
    assert CODEC_DTYPES == {c.name: c.stored for c in LAYOUTS}
    assert GROUPED_CODECS == tuple(c.name for c in LAYOUTS if c.scales is Scales.GROUPED)
    assert [c.name for c in LAYOUTS if c.packing is Packing.NIBBLES] == ["int4"]


def test_fixed_step_codecs_are_grouped_8_bit_codes_appended_after_ans8v4():
    stepped = [c for c in LAYOUTS if c.packing is Packing.STEPPED]
    assert [(c.name, c.id) for c in stepped] == [("st4", 11), ("st6", 12)]
    assert all(c.scales is Scales.GROUPED and c.stored == torch.uint8 and c.bits == (8, 8) for c in stepped)


def test_symmetric_levels_give_the_quantizers_qmax_and_packed_widths():
    assert (layout("int8").qmax, layout("int4").qmax) == (127, 7)
    assert layout("int4").stored_width(7) == 4 and layout("int4").head_dim(4) == 8
    assert layout("kvq3").bits == (3, 3) and layout("ans20v10").bits == (5, 4)


def test_lossless_codec_is_the_float_codec_of_that_dtype():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        c = lossless_codec(dtype)
        assert c.stored == dtype and c.scales is Scales.NONE and c.lossless_for(dtype)
    assert not layout("fp16").lossless_for(torch.float32)
    with pytest.raises(KernelInputError, match="no lossless codec"):
        lossless_codec(torch.int8)


def test_unknown_codec_names_the_known_ones():
    with pytest.raises(KernelInputError, match=r"codec='int2': expected one of \('fp16'"):
        layout("int2")


def test_int4_reference_dequantizes_through_the_one_unpack():
    q = torch.randint(-7, 8, (2, 3, 5, 8), dtype=torch.int8)  # [L, H, T, d]
    packed = ((q[..., 0::2] + 8).to(torch.uint8) | ((q[..., 1::2] + 8).to(torch.uint8) << 4))  # [L, H, T, d/2]
    scale = torch.rand(2, 3, 1, 8, dtype=torch.float16)
    assert torch.equal(unpack_int4(packed, 8), q)
    torch.testing.assert_close(dequantize_reference(packed, scale, "int4"), q.float() * scale.float(), rtol=0, atol=0)
