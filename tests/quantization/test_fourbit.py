"""4-bit blockwise quantization against its definition: error bounds, packing, double quant, bytes."""
import numpy as np
import pytest

from minibertgen.quantization import (NF4_CODE, QuantizedWeight4bit, code_book, dequantize_4bit, dynamic_code_8bit,
                                      pack_nibbles, quantize_4bit, unpack_nibbles)
from minibertgen.quantization.fourbit import dequantize_blockwise_8bit, quantize_blockwise_8bit


def weights(shape, seed=0, outliers=True):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    if outliers:  # a few large values, as real checkpoints have
        flat = w.reshape(-1)
        flat[rng.integers(0, flat.size, 5)] = rng.choice([-1.0, 1.0], 5) * 0.8
    return w


def half_largest_gap(code):
    """The largest rounding error for values in [-1, 1]: half the widest gap between levels,
    or the distance from an end of [-1, 1] to the outermost level when that is larger
    (the 8-bit dynamic map stops at -0.99297, so -1 rounds up by 0.00703)."""
    code = np.sort(code.astype(np.float64))
    return max(np.diff(code).max() / 2, code[0] + 1.0, 1.0 - code[-1])


ULP = 2.0 ** -23  # float32 rounding of a product level * absmax, relative to absmax


def block_absmax(w, blocksize=64):
    flat = np.zeros(-(-w.size // blocksize) * blocksize, np.float32)
    flat[:w.size] = w.reshape(-1)
    return np.abs(flat.reshape(-1, blocksize)).max(axis=1)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", [(96, 384), (37, 50), (7,)])  # whole blocks, a short last block, one tiny block
def test_round_trip_error_is_within_half_the_largest_gap_times_absmax(quant_type, shape):
    w = weights(shape, outliers=len(shape) == 2)
    q = quantize_4bit(w, quant_type)
    restored = dequantize_4bit(q)
    assert restored.shape == w.shape and restored.dtype == np.float32
    bound = half_largest_gap(code_book(quant_type)) * block_absmax(w)  # [blocks]
    error = np.zeros(bound.size * 64, np.float32)
    error[:w.size] = np.abs(restored - w).reshape(-1)
    assert np.all(error.reshape(-1, 64) <= bound[:, None] + ULP * block_absmax(w)[:, None])
    # and every value is reconstructed from the level nearest to it (no bound could hide a wrong pick)
    level = restored.reshape(-1) / np.repeat(block_absmax(w), 64)[:w.size]
    scaled = w.reshape(-1) / np.repeat(block_absmax(w), 64)[:w.size]
    nearest = code_book(quant_type)[np.abs(scaled[:, None] - code_book(quant_type)[None, :]).argmin(axis=1)]
    np.testing.assert_allclose(level, nearest, atol=1e-6)


def test_block_maxima_are_exact_and_zero_blocks_stay_zero():
    w = weights((4, 128))
    w[1] = 0.0  # two all-zero blocks
    restored = dequantize_4bit(quantize_4bit(w, "nf4"))
    np.testing.assert_array_equal(restored[1], 0.0)
    blocks, restored_blocks = w.reshape(-1, 64), restored.reshape(-1, 64)
    at_max = np.abs(blocks).argmax(axis=1)
    rows = np.arange(blocks.shape[0])
    np.testing.assert_allclose(restored_blocks[rows, at_max], blocks[rows, at_max], rtol=1e-6)  # code +-1 is exact


def test_packing_order_high_nibble_first():
    codes = np.array([1, 2, 15, 0, 7], dtype=np.uint8)
    packed = pack_nibbles(codes)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [0x12, 0xF0, 0x70])  # value 2k high, 2k+1 low; odd tail padded
    np.testing.assert_array_equal(unpack_nibbles(packed, 5), codes)


def test_packed_bytes_hold_the_nearest_nf4_codes_in_order():
    w = np.zeros((1, 64), np.float32)
    w[0, :16] = NF4_CODE  # block absmax 1.0: every level appears once, in order
    q = quantize_4bit(w, "nf4")
    assert q.packed.shape == (32,)
    np.testing.assert_array_equal(q.packed[:8], [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF])
    np.testing.assert_array_equal(q.packed[8:], 0x77)  # zeros are NF4 code 7


def test_fp4_codes_use_the_sign_bit():
    w = np.zeros((1, 64), np.float32)
    w[0, :4] = [1.0, -1.0, 0.5, -2.0 / 12]  # fp4 levels 0b0011, 0b1011, 0b0101, 0b1110
    q = quantize_4bit(w, "fp4")
    np.testing.assert_array_equal(q.packed[:2], [0x3B, 0x5E])


def test_dequantize_into_a_buffer_is_the_same_and_rejects_a_wrong_one():
    w = weights((64, 128))
    q = quantize_4bit(w, "nf4", double_quant=True)
    buffer = np.full(w.shape, np.nan, np.float32)
    out = dequantize_4bit(q, out=buffer)
    assert out is buffer
    np.testing.assert_array_equal(buffer, dequantize_4bit(q))
    with pytest.raises(ValueError, match="out: expected float32 of shape"):
        dequantize_4bit(q, out=np.empty((64, 128), np.float16))


def test_double_quant_error_bound_on_the_scales():
    w = weights((512, 384), seed=3)  # 3072 blocks -> 12 blocks of 256 scales
    plain, double = quantize_4bit(w, "nf4"), quantize_4bit(w, "nf4", double_quant=True)
    assert double.absmax is None and double.absmax_q.codes.dtype == np.uint8
    assert double.offset == pytest.approx(float(plain.absmax.mean()), rel=1e-6)
    np.testing.assert_array_equal(double.packed, plain.packed)  # codes come from the exact scales
    centred = plain.absmax - np.float32(double.offset)
    error = np.abs(double.block_scales() - plain.absmax)  # [blocks]
    bound = half_largest_gap(dynamic_code_8bit()) * block_absmax(centred, 256)  # per block of 256 scales
    assert np.all(error.reshape(-1, 256) <= bound[:, None] * (1 + 1e-5) + 1e-9)
    assert np.abs(error).max() > 0  # it really is lossy
    # the weights move by at most that scale error times |level| <= 1, on top of the 4-bit error
    diff = np.abs(dequantize_4bit(double) - dequantize_4bit(plain)).reshape(-1, 64)
    assert np.all(diff <= error[:, None] * (1 + 1e-5) + 1e-9)


def test_blockwise_8bit_round_trip_bound():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(1000).astype(np.float32)
    q = quantize_blockwise_8bit(values, 256)
    assert q.codes.shape == (1000,) and q.absmax.shape == (4,)
    error = np.zeros(1024, np.float32)
    error[:1000] = np.abs(dequantize_blockwise_8bit(q) - values)
    bound = (half_largest_gap(dynamic_code_8bit()) + ULP) * q.absmax[:, None]  # + float32 rounding of level*absmax
    assert np.all(error.reshape(4, 256) <= bound)


@pytest.mark.parametrize("double_quant, limit", [(False, 0.15), (True, 0.135)])
def test_bytes_of_a_4bit_weight(double_quant, limit):
    w = weights((1536, 384))
    q = QuantizedWeight4bit.from_float(w, "nf4", double_quant)
    ratio = q.nbytes / w.nbytes
    assert ratio <= limit
    blocks = w.size // 64
    scale_bytes = blocks + 4 * (blocks // 256) + 4 if double_quant else 4 * blocks  # codes + absmax2 + offset
    expected = (w.size // 2 + scale_bytes) / w.nbytes
    assert ratio == pytest.approx(expected)


def test_rejects_bad_blocksize_and_type():
    with pytest.raises(ValueError, match="blocksize=63"):
        quantize_4bit(weights((4, 64)), "nf4", blocksize=63)
    with pytest.raises(ValueError, match="quant_type='nf8'"):
        quantize_4bit(weights((4, 64)), "nf8")
    with pytest.raises(ValueError, match="expected a 2-D"):
        QuantizedWeight4bit.from_float(weights((64,)))
