"""The code books against their definitions (QLoRA's NF4, bitsandbytes' FP4 and 8-bit dynamic map)."""
from statistics import NormalDist

import numpy as np
import pytest

from minibertgen.quantization import FP4_CODE, NF4_CODE, code_book, dynamic_code_8bit


def nf4_from_normal_quantiles(offset=0.9677083):
    """QLoRA's construction: 8 positive and 7 negative normal quantiles, plus 0, scaled to [-1, 1]."""
    ppf = NormalDist().inv_cdf
    positive = [ppf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]  # 8 levels, equal mass
    negative = [-ppf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]  # 7 levels
    levels = np.sort(np.array(positive + [0.0] + negative))
    return levels / np.abs(levels).max()


def test_nf4_is_the_normal_float_code_book():
    assert NF4_CODE.dtype == np.float32 and NF4_CODE.shape == (16,)
    np.testing.assert_allclose(NF4_CODE, nf4_from_normal_quantiles(), atol=2e-7)
    assert np.all(np.diff(NF4_CODE) > 0)  # sorted: the code is the position
    assert NF4_CODE[0] == -1.0 and NF4_CODE[7] == 0.0 and NF4_CODE[15] == 1.0


def test_nf4_bins_hold_equal_normal_mass():
    """Between midpoints, each positive level's bin has (almost) the same N(0,1) probability."""
    scale = NormalDist().inv_cdf(0.9677083)  # the quantile that became 1.0
    cdf = NormalDist().cdf
    mids = (NF4_CODE[8:-1] + NF4_CODE[9:]) / 2 * scale
    masses = np.diff([cdf(m) for m in mids])
    assert np.ptp(masses) / masses.mean() < 0.1


def fp4_value(code):
    """Decode bitsandbytes' FP4 bit layout: sign = bit 3; bits 2-0 select the magnitude."""
    sign = -1.0 if code & 0b1000 else 1.0
    low = code & 0b111
    exponent_field, mantissa = low >> 1, low & 1
    if exponent_field == 0:  # subnormal: 0 or 2^-4
        magnitude = mantissa * 2.0 ** -4
    else:  # exponent fields 01, 10, 11 stand for 2^3, 2^2, 2^1 in bitsandbytes' table
        magnitude = (1 + mantissa / 2) * 2.0 ** (4 - exponent_field)
    return sign * magnitude / 12.0  # normalised by the largest magnitude, 12


def test_fp4_code_book_follows_the_bit_layout():
    assert FP4_CODE.shape == (16,) and FP4_CODE.dtype == np.float32
    np.testing.assert_array_equal(FP4_CODE, np.array([fp4_value(c) for c in range(16)], dtype=np.float32))
    assert np.abs(FP4_CODE).max() == 1.0 and FP4_CODE[3] == 1.0 and FP4_CODE[11] == -1.0
    np.testing.assert_array_equal(FP4_CODE[8:], -FP4_CODE[:8])  # the high bit is the sign


def test_code_book_rejects_unknown_type():
    assert code_book("nf4") is NF4_CODE and code_book("fp4") is FP4_CODE
    with pytest.raises(ValueError, match="quant_type='int4'"):
        code_book("int4")


def test_dynamic_8bit_map_definition():
    code = dynamic_code_8bit()
    assert code.shape == (256,) and np.all(np.diff(code) >= 0)
    assert code[-1] == 1.0 and 0.0 in code
    for i in range(7):  # decade 10^(i-6) holds 2^i levels per sign: midpoints of [0.1, 1] slices
        edges = np.linspace(0.1, 1.0, 2 ** i + 1)
        expected = (edges[:-1] + edges[1:]) / 2 * 10.0 ** (i - 6)
        found = code[(code > 0.1 * 10.0 ** (i - 6)) & (code < 10.0 ** (i - 6))]  # this decade
        # bitsandbytes builds them in float32: linspace, midpoint and scaling each round by
        # up to half an ulp (6e-8 relative), so three roundings stay within 2e-7.
        np.testing.assert_allclose(found, expected, rtol=2e-7)
        np.testing.assert_array_equal(np.sort(-code[code < 0])[(2 ** i - 1):(2 ** (i + 1) - 1)], found)
