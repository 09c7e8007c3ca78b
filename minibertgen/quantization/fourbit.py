"""4-bit blockwise quantization (bitsandbytes' NF4 and FP4), with double quantization.

A weight is flattened in row-major order and cut into blocks of 64 values.  Each
block is divided by its absolute maximum (``absmax``), so its values lie in [-1, 1],
and each value is replaced by the index (0..15) of the nearest level of a 16-entry
code book.  Two indices share a byte.  Dequantizing is a table lookup times the
block's absmax:

    w[b, j] ~= code[index[b, j]] * absmax[b]        for block b, position j < 64

Nibble order (bitsandbytes'): value 2k goes in the HIGH nibble of byte k, value 2k+1
in the LOW nibble, i.e. ``byte = (index[2k] << 4) | index[2k+1]``.

Double quantization (QLoRA) stores the float32 absmax values themselves in 8 bits:
subtract their mean (the ``offset``), then quantize blockwise again (blocks of 256)
with bitsandbytes' 8-bit "dynamic" code book, keeping one float32 scale per 256
blocks.  That takes the scale cost from 32/64 = 0.5 bit per weight to about
8/64 + 32/(64*256) = 0.127 bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import array_module

__all__ = [
    "NF4_CODE", "FP4_CODE", "code_book", "dynamic_code_8bit",
    "Blockwise8bit", "Packed4bit",
    "quantize_blockwise_8bit", "dequantize_blockwise_8bit",
    "pack_nibbles", "unpack_nibbles", "quantize_4bit", "dequantize_4bit", "absmax_of",
]

BLOCKSIZE_4BIT = 64
BLOCKSIZE_DOUBLE_QUANT = 256

# The 16 NormalFloat levels of QLoRA (Dettmers et al. 2023), as bitsandbytes ships them:
# quantiles of N(0, 1) with equal probability mass per bin, 8 levels on the positive side
# and 7 on the negative side plus an exact 0, normalised to [-1, 1].  Sorted, so index 7
# is zero.  tests/quantization rebuild them from the normal quantile function.
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)

# bitsandbytes' FP4: 1 sign bit (bit 3, the nibble's high bit), then 3 bits that select a
# magnitude.  Magnitudes before normalising, by the low three bits:
#   000 -> 0   001 -> 0.0625 (subnormal)   010 -> 8   011 -> 12
#   100 -> 4   101 -> 6                    110 -> 2   111 -> 3
# i.e. 2 exponent bits and 1 mantissa bit, (1 + m/2) * 2^p for p in {1, 2, 3}, laid out
# in bitsandbytes' own order; everything is divided by the largest magnitude, 12.
_FP4_MAGNITUDES = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
FP4_CODE = (np.array(_FP4_MAGNITUDES + [-m for m in _FP4_MAGNITUDES], dtype=np.float32) / np.float32(12.0))


def code_book(quant_type: str) -> np.ndarray:
    """The 16 levels of ``quant_type`` ("nf4" or "fp4"), indexed by the 4-bit code."""
    if quant_type == "nf4":
        return NF4_CODE
    if quant_type == "fp4":
        return FP4_CODE
    raise ValueError(f"quant_type={quant_type!r}: expected 'nf4' or 'fp4'")


def dynamic_code_8bit() -> np.ndarray:
    """bitsandbytes' signed 8-bit "dynamic" code book (256 sorted levels in [-1, 1]).

    A dynamic exponent: decade 10^(i-6), i = 0..6, holds 2^i evenly spaced levels
    (midpoints of 2^i equal slices of [0.1, 1]), on both signs; plus 0 and 1.  Small
    numbers keep their relative precision, which suits scales that vary a lot.
    """
    levels = [np.float32(0.0), np.float32(1.0)]
    for i in range(7):
        edges = _linspace_float32(0.1, 1.0, 2 ** i + 1)  # [2^i + 1]
        mids = (edges[:-1] + edges[1:]) / np.float32(2.0) * np.float32(10.0 ** (i - 6))  # [2^i]
        levels.extend(mids)
        levels.extend(-mids)
    return np.sort(np.array(levels, dtype=np.float32))  # [256]


def _linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps, dtype=float32), bit for bit, as bitsandbytes builds its map.

    torch works in float32: step = (end - start) / (steps - 1), the first half counted up
    from start and the second half down from end, each as one fused multiply-add (a
    single rounding).  np.linspace (float64, then rounded) differs in the last bit for
    some levels, which changed 22 of the 256 levels and so some double-quant codes.
    """
    start32, end32 = np.float32(start), np.float32(end)
    step = float((end32 - start32) / np.float32(steps - 1))
    index = np.arange(steps, dtype=np.float64)  # [steps]
    up = (float(start32) + step * index).astype(np.float32)  # exact product and sum in float64, one rounding
    down = (float(end32) - step * (steps - 1 - index)).astype(np.float32)
    return np.where(index < steps // 2, up, down)  # [steps]


_DYNAMIC_CODE = dynamic_code_8bit()


def _nearest_level(scaled, code):
    """Index of the nearest entry of ``code`` for each value of ``scaled`` (ties go down).

    The code book is sorted first; the midpoints between neighbours are the decision
    boundaries, and searchsorted finds which interval each value falls in.
    """
    xp = array_module(scaled)
    order = np.argsort(code, kind="stable")  # [levels]  sorted position -> code index
    ordered = code[order]
    bounds = xp.asarray((ordered[:-1] + ordered[1:]) / np.float32(2.0))  # [levels - 1]
    position = xp.searchsorted(bounds, scaled, side="left")  # [...] sorted position
    return xp.asarray(order.astype(np.uint8))[position]  # [...] code index


def _blocks(flat, blocksize):
    """Zero-pad a flat array to whole blocks: [n] -> [blocks, blocksize].

    Padding with zeros leaves each block's absmax unchanged (|0| <= max), which is how
    bitsandbytes treats a short last block.
    """
    xp = array_module(flat)
    n = flat.shape[0]
    blocks = -(-n // blocksize)  # ceil
    padded = xp.zeros(blocks * blocksize, dtype=xp.float32)
    padded[:n] = flat
    return padded.reshape(blocks, blocksize)  # [blocks, blocksize]


def absmax_of(blocks):
    """Per-block absolute maximum: [blocks, blocksize] -> [blocks] float32."""
    xp = array_module(blocks)
    return xp.abs(blocks).max(axis=1).astype(xp.float32)


def _scale_into_unit(blocks, absmax):
    """Divide each block by its absmax (an all-zero block stays zero): values in [-1, 1]."""
    xp = array_module(blocks)
    safe = xp.where(absmax > 0, absmax, xp.float32(1.0))  # [blocks]
    return xp.clip(blocks / safe[:, None], -1.0, 1.0)  # [blocks, blocksize]


# -- 8-bit blockwise (used for double quantization of the 4-bit scales) ---------------------
@dataclass
class Blockwise8bit:
    """Values stored as 8-bit indices into the dynamic code book, one float32 absmax per block."""

    codes: object  # [n] uint8
    absmax: object  # [ceil(n / blocksize)] float32
    blocksize: int

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.absmax.nbytes)


def quantize_blockwise_8bit(values, blocksize: int = BLOCKSIZE_DOUBLE_QUANT) -> Blockwise8bit:
    """[n] float -> 8-bit dynamic codes with a float32 absmax per block of ``blocksize``."""
    xp = array_module(values)
    n = values.shape[0]
    blocks = _blocks(values.astype(xp.float32), blocksize)  # [blocks, blocksize]
    absmax = absmax_of(blocks)  # [blocks]
    codes = _nearest_level(_scale_into_unit(blocks, absmax), _DYNAMIC_CODE)  # [blocks, blocksize]
    return Blockwise8bit(codes.reshape(-1)[:n], absmax, blocksize)  # codes [n]


def dequantize_blockwise_8bit(q: Blockwise8bit):
    """Inverse of :func:`quantize_blockwise_8bit`: [n] uint8 -> [n] float32."""
    xp = array_module(q.codes)
    n = q.codes.shape[0]
    levels = xp.asarray(_DYNAMIC_CODE)[q.codes]  # [n]
    per_value_scale = xp.repeat(q.absmax, q.blocksize)[:n]  # [n]
    return levels * per_value_scale


# -- 4-bit ---------------------------------------------------------------------------------
def pack_nibbles(indices):
    """[n] codes in 0..15 -> [ceil(n/2)] uint8: index 2k in the high nibble, 2k+1 in the low."""
    xp = array_module(indices)
    if indices.shape[0] % 2:
        indices = xp.concatenate([indices, xp.zeros(1, dtype=indices.dtype)])  # pad with code 0
    pairs = indices.astype(xp.uint8).reshape(-1, 2)  # [n/2, 2]
    return (pairs[:, 0] << 4) | pairs[:, 1]  # [n/2]


def unpack_nibbles(packed, n: int):
    """[ceil(n/2)] uint8 -> [n] codes: the inverse of :func:`pack_nibbles`."""
    xp = array_module(packed)
    pairs = xp.stack([packed >> 4, packed & 0x0F], axis=1)  # [n/2, 2]
    return pairs.reshape(-1)[:n]  # [n]


@dataclass
class Packed4bit:
    """A weight in 4 bits: packed codes, per-block scales (float32 or double-quantized)."""

    packed: object  # [ceil(n/2)] uint8, two codes per byte
    absmax: object  # [blocks] float32, or None with double quantization
    shape: tuple  # the original weight shape, e.g. (out, in)
    quant_type: str  # "nf4" | "fp4"
    blocksize: int = BLOCKSIZE_4BIT
    absmax_q: Blockwise8bit | None = None  # double quantization: absmax - offset in 8 bits
    offset: float = 0.0  # double quantization: the mean that was subtracted

    @property
    def nbytes(self) -> int:
        scales = self.absmax.nbytes if self.absmax_q is None else self.absmax_q.nbytes + 4  # + float32 offset
        return int(self.packed.nbytes + scales)

    def block_scales(self):
        """The float32 absmax of every block (decoding them first under double quantization)."""
        if self.absmax_q is None:
            return self.absmax  # [blocks]
        return dequantize_blockwise_8bit(self.absmax_q) + self.offset  # [blocks]


def quantize_4bit(weight, quant_type: str = "nf4", blocksize: int = BLOCKSIZE_4BIT,
                  double_quant: bool = False) -> Packed4bit:
    """Quantize any float array to 4-bit codes, blockwise over its row-major flattening."""
    code = code_book(quant_type)
    if not isinstance(blocksize, int) or blocksize <= 0 or blocksize % 2:
        raise ValueError(f"blocksize={blocksize!r}: expected a positive even int (bitsandbytes uses 64)")
    xp = array_module(weight)
    flat = weight.reshape(-1)  # [n]
    n = flat.shape[0]
    blocks = _blocks(flat, blocksize)  # [blocks, blocksize]
    absmax = absmax_of(blocks)  # [blocks]
    indices = _nearest_level(_scale_into_unit(blocks, absmax), code)  # [blocks, blocksize]
    packed = pack_nibbles(indices.reshape(-1)[:n])  # [ceil(n/2)]
    shape = tuple(int(s) for s in weight.shape)
    if not double_quant:
        return Packed4bit(packed, absmax, shape, quant_type, blocksize)
    offset = float(absmax.mean())
    absmax_q = quantize_blockwise_8bit(absmax - xp.float32(offset))  # the scales, in 8 bits
    return Packed4bit(packed, None, shape, quant_type, blocksize, absmax_q, offset)


def dequantize_4bit(q: Packed4bit, out=None):
    """Packed codes -> float32 weights of ``q.shape``, written into ``out`` when given.

    One gather through a 256-entry table (byte -> its two levels), then one multiply by
    the block scales: no per-nibble Python work, and no temporary the size of the weight
    when a C-contiguous float32 ``out`` is passed (the reusable buffer of layers.py).
    """
    xp = array_module(q.packed)
    n = int(np.prod(q.shape))
    if out is None:
        out = xp.empty(q.shape, dtype=xp.float32)
    if out.dtype != np.float32 or tuple(out.shape) != tuple(q.shape):
        raise ValueError(f"out: expected float32 of shape {q.shape}, got {out.dtype} {tuple(out.shape)}")
    if n % q.blocksize:  # a short last block: the plain route, through padded blocks
        codes = unpack_nibbles(q.packed, n)  # [n]
        levels = _blocks(xp.asarray(code_book(q.quant_type))[codes], q.blocksize)  # [blocks, blocksize]
        out[...] = (levels * q.block_scales()[:, None]).reshape(-1)[:n].reshape(q.shape)
        return out
    pairs_view = out.reshape(-1, 2)  # [n/2, 2] view of out
    blocks_view = out.reshape(-1, q.blocksize)  # [blocks, blocksize] view of out
    if xp is np:
        # mode="clip" skips NumPy's per-index bounds check (a byte always indexes the 256 rows):
        # the lookup of a 1536x384 weight took 322 us, now 232; a 4-token matmul 724 -> 600 us.
        np.take(_pair_table(q.quant_type, np), q.packed, axis=0, out=pairs_view, mode="clip")
    else:  # CuPy's take has no mode
        xp.take(_pair_table(q.quant_type, xp), q.packed, axis=0, out=pairs_view)  # the levels
    blocks_view *= q.block_scales()[:, None]  # times each block's absmax
    return out


_PAIR_TABLES: dict = {}


def _pair_table(quant_type, xp):
    """[256, 2]: for every byte value, the levels of its high and its low nibble."""
    key = (quant_type, xp.__name__)
    if key not in _PAIR_TABLES:
        code = code_book(quant_type)
        byte = np.arange(256)
        table = np.stack([code[byte >> 4], code[byte & 0x0F]], axis=1).astype(np.float32)  # [256, 2]
        _PAIR_TABLES[key] = xp.asarray(table)
    return _PAIR_TABLES[key]
