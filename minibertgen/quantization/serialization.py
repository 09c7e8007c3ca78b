"""Quantized weights in and out of a state dict, in bitsandbytes' serialized layout.

transformers 4.57 + bitsandbytes save a quantized linear layer ``X`` as these tensors
(safetensors, so every non-tensor field travels as JSON bytes in a uint8 tensor):

4-bit (``Linear4bit``)::

    X.weight                                   uint8 [ceil(n/2), 1]  two codes per byte
    X.weight.absmax                            float32 [blocks]      (uint8 with double quant)
    X.weight.quant_map                         float32 [16]          the code book
    X.weight.quant_state.bitsandbytes__nf4     uint8 JSON: quant_type, blocksize, dtype, shape
                                               (+ nested_blocksize, nested_dtype, nested_offset)
    X.weight.nested_absmax                     float32 [ceil(blocks/256)]  double quant only
    X.weight.nested_quant_map                  float32 [256]         double quant only

(``__fp4`` instead of ``__nf4`` for FP4.)  With double quantization ``absmax`` holds the
8-bit codes of ``absmax - nested_offset`` (the mean of the float32 scales), quantized
blockwise with the dynamic code book ``nested_quant_map``; fourbit.py does exactly that.

8-bit (``Linear8bitLt``)::

    X.weight          int8 [out, in]
    X.SCB             float32 [out]   each row's absmax
    X.weight_format   uint8 scalar    0 = "row" (the only layout bitsandbytes still writes)

Reading never runs code from the file: the tensors come from safetensors, the JSON
is parsed with ``json``, and every field is checked (names, dtypes, sizes, code books).
"""
from __future__ import annotations

import json

import numpy as np

from .config import compute_dtype_of
from .fourbit import Blockwise8bit, Packed4bit, code_book, dynamic_code_8bit
from .int8 import Int8Rows
from .params import as_config
from .weights import QuantizedWeight4bit, QuantizedWeight8bit

__all__ = ["serialize_quantized", "load_prequantized", "move_quantized", "QUANT_STATE_KEY"]

QUANT_STATE_KEY = "quant_state.bitsandbytes__"
_SUFFIXES_4BIT = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
_WEIGHT_FORMAT_ROW = 0  # bitsandbytes' LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING["row"]


class QuantizedCheckpointError(ValueError):
    """A bitsandbytes-serialized weight that is incomplete or inconsistent."""


# -- writing ---------------------------------------------------------------------------------
def serialize_quantized(flat: dict) -> dict:
    """{name: array or quantized weight} -> {name: array}, each quantized "X.weight" expanded
    into bitsandbytes' tensors.  Float arrays pass through unchanged."""
    out = {}
    for name, value in flat.items():
        if getattr(value, "is_quantized", False):
            out.update(_tensors_of(name, value))
        else:
            out[name] = value
    return out


def _tensors_of(name: str, weight) -> dict:
    if not name.endswith(".weight"):
        raise ValueError(f"{name}: a quantized weight must be stored under a name ending in '.weight'")
    if isinstance(weight, QuantizedWeight4bit):
        return _tensors_4bit(name, weight)
    if isinstance(weight, QuantizedWeight8bit):
        if weight.full_weight is not None:
            raise ValueError(f"{name}: saving an 8-bit model loaded with llm_int8_has_fp16_weight=True is not "
                             "supported; load it without that option to save the int8 weights")
        prefix = name[:-len("weight")]
        return {name: weight.q.codes, prefix + "SCB": weight.q.row_absmax,
                prefix + "weight_format": np.array(_WEIGHT_FORMAT_ROW, dtype=np.uint8)}
    raise TypeError(f"{name}: don't know how to save a {type(weight).__name__}")


def _tensors_4bit(name: str, weight: QuantizedWeight4bit) -> dict:
    q = weight.q
    state = {"quant_type": q.quant_type, "blocksize": q.blocksize, "dtype": weight.stored_dtype.name,
             "shape": list(q.shape)}
    tensors = {name: q.packed.reshape(-1, 1),  # [ceil(n/2)] -> [ceil(n/2), 1], as bitsandbytes stores it
               f"{name}.quant_map": np.asarray(code_book(q.quant_type))}
    if q.absmax_q is None:
        tensors[f"{name}.absmax"] = q.absmax
    else:
        tensors[f"{name}.absmax"] = q.absmax_q.codes  # [blocks] uint8
        tensors[f"{name}.nested_absmax"] = q.absmax_q.absmax  # [ceil(blocks / 256)] float32
        tensors[f"{name}.nested_quant_map"] = dynamic_code_8bit()
        state.update(nested_blocksize=q.absmax_q.blocksize, nested_dtype="float32", nested_offset=q.offset)
    tensors[f"{name}.{QUANT_STATE_KEY}{q.quant_type}"] = np.frombuffer(json.dumps(state).encode("utf-8"),
                                                                       dtype=np.uint8)
    return tensors


# -- reading ---------------------------------------------------------------------------------
def load_prequantized(state: dict, quantization_config) -> dict:
    """Replace every bitsandbytes-serialized linear weight of a flat state dict by its
    quantized weight object; the companion tensors are consumed, everything else is kept.

    ``quantization_config`` (the checkpoint's, a dict or BitsAndBytesConfig) gives what
    the tensors do not hold: the 4-bit compute dtype and the LLM.int8() threshold.
    """
    config = as_config(quantization_config)
    out = dict(state)
    for key in [k for k in state if QUANT_STATE_KEY in k]:
        name = key[:key.index("." + QUANT_STATE_KEY)]  # "X.weight"
        parts = {suffix: out.pop(f"{name}.{suffix}", None) for suffix in _SUFFIXES_4BIT}
        declared = key.rsplit(QUANT_STATE_KEY, 1)[1]  # "nf4" / "fp4", from the tensor's name
        out[name] = _weight_4bit(name, out.get(name), out.pop(key), declared, parts, config.compute_dtype)
    for key in [k for k in state if k.endswith(".SCB")]:
        prefix = key[:-len("SCB")]
        weight_format = out.pop(prefix + "weight_format", None)
        out[prefix + "weight"] = _weight_8bit(prefix + "weight", out.get(prefix + "weight"), out.pop(key),
                                              weight_format, config.llm_int8_threshold)
    leftover = [k for k in out if k.rsplit(".", 1)[-1] in _SUFFIXES_4BIT + ("weight_format",)]
    if leftover:
        raise QuantizedCheckpointError(f"quantization tensors without a quantized weight: {', '.join(leftover)}")
    return out


def _parse_state(name, raw) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise QuantizedCheckpointError(f"{name}: the quant_state tensor must be 1-D uint8 JSON bytes")
    try:
        state = json.loads(bytes(np.asarray(raw)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuantizedCheckpointError(f"{name}: the quant_state tensor is not UTF-8 JSON ({exc})") from None
    if not isinstance(state, dict):
        raise QuantizedCheckpointError(f"{name}: the quant_state JSON must be an object, got {state!r}")
    return state


def _expect(name, what, array, dtype, shape, flat=False):
    """Check a component's dtype and shape; ``flat``: any shape holding that many values
    (bitsandbytes writes the packed weight as [n/2, 1], and absmax as [1, blocks] after its
    CPU kernel repacked a layer), returned 1-D."""
    if array is None:
        raise QuantizedCheckpointError(f"{name}: the checkpoint has no {what} tensor")
    found = (int(np.prod(array.shape)),) if flat else tuple(array.shape)
    if np.dtype(array.dtype) != np.dtype(dtype) or found != tuple(shape):
        raise QuantizedCheckpointError(f"{name}: {what} is {np.dtype(array.dtype)} {tuple(array.shape)}, "
                                       f"expected {np.dtype(dtype)} {tuple(shape)}")
    return array.reshape(-1) if flat else array


def _int_field(name, state, key):
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 2:
        raise QuantizedCheckpointError(f"{name}: quant_state {key}={value!r}, expected a positive even int")
    return value


def _weight_4bit(name, packed, raw_state, declared, parts, compute_dtype) -> QuantizedWeight4bit:
    state = _parse_state(name, raw_state)
    quant_type, shape = state.get("quant_type"), state.get("shape")
    if quant_type not in ("nf4", "fp4") or quant_type != declared:
        raise QuantizedCheckpointError(f"{name}: quant_state quant_type={quant_type!r} (tensor name says "
                                       f"{declared!r}), expected 'nf4' or 'fp4' in both")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise QuantizedCheckpointError(f"{name}: quant_state shape={shape!r}, expected [out, in]")
    blocksize = _int_field(name, state, "blocksize")
    n = shape[0] * shape[1]
    blocks = -(-n // blocksize)
    packed = _expect(name, "weight", packed, np.uint8, (-(-n // 2),), flat=True)  # [ceil(n/2)]
    _check_code(name, "quant_map", parts["quant_map"], code_book(quant_type))
    stored = _stored_dtype(name, state.get("dtype"))
    if parts["nested_absmax"] is None:
        absmax = _expect(name, "absmax", parts["absmax"], np.float32, (blocks,), flat=True)
        q = Packed4bit(packed, absmax, tuple(shape), quant_type, blocksize)
        return QuantizedWeight4bit(q, compute_dtype, stored)
    nested_blocksize = _int_field(name, state, "nested_blocksize")
    offset = state.get("nested_offset")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset):
        raise QuantizedCheckpointError(f"{name}: quant_state nested_offset={offset!r}, expected a number")
    if state.get("nested_dtype") != "float32":
        raise QuantizedCheckpointError(f"{name}: nested_dtype={state.get('nested_dtype')!r}, expected 'float32'")
    _check_code(name, "nested_quant_map", parts["nested_quant_map"], dynamic_code_8bit())
    codes = _expect(name, "absmax", parts["absmax"], np.uint8, (blocks,), flat=True)
    nested = _expect(name, "nested_absmax", parts["nested_absmax"], np.float32, (-(-blocks // nested_blocksize),),
                     flat=True)
    q = Packed4bit(packed, None, tuple(shape), quant_type, blocksize,
                   Blockwise8bit(codes, nested, nested_blocksize), float(offset))
    return QuantizedWeight4bit(q, compute_dtype, stored)


def _check_code(name, what, array, expected):
    """The stored code book must be ours: the codes index it, and we decode with our own table."""
    _expect(name, what, array, np.float32, expected.shape)
    if not np.array_equal(np.asarray(array), expected):
        raise QuantizedCheckpointError(f"{name}: {what} differs from bitsandbytes' standard code book; "
                                       "custom code books are not supported")


def _stored_dtype(name, value):
    """The dtype the weight had before quantization; bfloat16 (no NumPy dtype) reads as float32."""
    if value not in ("float32", "float16", "bfloat16"):
        raise QuantizedCheckpointError(f"{name}: quant_state dtype={value!r}, expected float32/float16/bfloat16")
    return compute_dtype_of(value)


def _weight_8bit(name, codes, scb, weight_format, threshold) -> QuantizedWeight8bit:
    if codes is None or codes.ndim != 2:
        raise QuantizedCheckpointError(f"{name}: an 8-bit weight needs a 2-D int8 {name} beside its SCB")
    _expect(name, "weight", codes, np.int8, codes.shape)
    _expect(name, "SCB", scb, np.float32, (codes.shape[0],))
    if weight_format is not None:
        fmt = np.asarray(weight_format)
        if fmt.size != 1 or int(fmt.reshape(-1)[0]) != _WEIGHT_FORMAT_ROW:
            raise QuantizedCheckpointError(f"{name}: weight_format={fmt.tolist()!r}, only 0 ('row') is supported")
    return QuantizedWeight8bit(Int8Rows(codes, scb), threshold, np.float32)


def move_quantized(weight, move):
    """The same quantized weight with every array passed through ``move`` (e.g. to a device)."""
    if isinstance(weight, QuantizedWeight8bit):
        q = Int8Rows(move(weight.q.codes), move(weight.q.row_absmax))
        full = None if weight.full_weight is None else move(weight.full_weight)
        return QuantizedWeight8bit(q, weight.threshold, weight.dtype, full)
    q = weight.q
    nested = None if q.absmax_q is None else Blockwise8bit(move(q.absmax_q.codes), move(q.absmax_q.absmax),
                                                             q.absmax_q.blocksize)
    absmax = None if q.absmax is None else move(q.absmax)
    moved = Packed4bit(move(q.packed), absmax, q.shape, q.quant_type, q.blocksize, nested, q.offset)
    return QuantizedWeight4bit(moved, weight.dtype, weight.stored_dtype)
