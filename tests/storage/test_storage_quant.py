import pytest
import torch

from chunkcache.kernels import unpack_int4
from chunkcache.storage import quant


def test_int8_key_scales_are_per_channel_and_value_scales_per_token():
    x = torch.randn(2, 3, 10, 8)  # [L, H, T, d]
    kq, ks = quant.quantize_int8_keys(x)
    vq, vs = quant.quantize_int8_values(x)
    assert kq.dtype == vq.dtype == torch.int8 and ks.dtype == vs.dtype == torch.float16
    assert ks.shape == (2, 3, 1, 8) and vs.shape == (2, 3, 10, 1)
    torch.testing.assert_close(ks.float(), (x.abs().amax(-2, keepdim=True) / 127).half().float())
    assert kq.abs().max() <= 127 and vq.abs().max() <= 127


@pytest.mark.parametrize("qmax", [quant.INT8_QMAX, quant.INT4_QMAX])
def test_dequantization_error_is_at_most_half_a_step(qmax):
    x = torch.randn(4, 3, 33, 16) * 5
    q, scale = quant.quantize_symmetric(x, dim=-1, qmax=qmax)
    err = (quant.dequantize_int8(q, scale) - x).abs()
    assert (err <= scale.float() / 2 + 1e-6).all()
    assert q.abs().max() <= qmax


def test_zero_and_empty_groups():
    q, scale = quant.quantize_int8_keys(torch.zeros(1, 1, 5, 4))
    assert (q == 0).all() and (scale == 0).all()
    q, scale = quant.quantize_int8_keys(torch.zeros(1, 1, 0, 4))
    assert q.shape == (1, 1, 0, 4) and scale.shape == (1, 1, 1, 4)


def test_int4_packing_layout():
    q = torch.tensor([[-7, 7, 0, -1, 3]], dtype=torch.int8)
    packed = quant.pack_int4(q)
    # element 2i low nibble, 2i+1 high nibble, stored as q + 8; odd length padded with 0 (8).
    assert packed.tolist() == [[(7 + 8) << 4 | (-7 + 8), (-1 + 8) << 4 | 8, 8 << 4 | (3 + 8)]]
    assert torch.equal(unpack_int4(packed, 5), q)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_int4_pack_round_trip(n):
    q = torch.randint(-8, 8, (3, 4, n), dtype=torch.int8)
    packed = quant.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 4, (n + 1) // 2)
    assert torch.equal(unpack_int4(packed, n), q)


def test_unpack_rejects_wrong_width():
    with pytest.raises(ValueError, match="n=9"):
        unpack_int4(torch.zeros(2, 4, dtype=torch.uint8), 9)
