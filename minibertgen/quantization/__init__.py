"""Weight-only quantization at load time, bitsandbytes-style, written as plain array code.

* config.py   - BitsAndBytesConfig (transformers' names), compute dtype parsing
* fourbit.py  - NF4 / FP4 code books, blockwise absmax, nibble packing, double quantization
* int8.py     - LLM.int8(): per-row int8 weights, outlier-feature decomposition
* weights.py  - the quantized weight objects ops.linear multiplies, scratch buffers
* params.py   - quantize_params: which weights of a parameter tree get quantized
* serialization.py - save / load quantized weights in bitsandbytes' serialized layout

Use it through from_pretrained::

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype="float16")
    model = EncoderDecoderModel.from_pretrained(path, quantization_config=config)
"""
from .config import BitsAndBytesConfig, compute_dtype_of
from .fourbit import (FP4_CODE, NF4_CODE, Packed4bit, code_book, dequantize_4bit, dynamic_code_8bit, pack_nibbles,
                      quantize_4bit, unpack_nibbles)
from .int8 import Int8Rows, dequantize_rows_int8, int8_matmul_t, outlier_features, quantize_rows_int8
from .params import quantize_params, quantize_weight, quantized_weights
from .weights import QuantizedWeight4bit, QuantizedWeight8bit, clear_scratch_buffers, scratch_buffer

__all__ = [
    "BitsAndBytesConfig", "compute_dtype_of",
    "NF4_CODE", "FP4_CODE", "code_book", "dynamic_code_8bit", "Packed4bit", "quantize_4bit", "dequantize_4bit",
    "pack_nibbles", "unpack_nibbles",
    "Int8Rows", "quantize_rows_int8", "dequantize_rows_int8", "outlier_features", "int8_matmul_t",
    "quantize_params", "quantize_weight", "quantized_weights",
    "QuantizedWeight4bit", "QuantizedWeight8bit", "scratch_buffer", "clear_scratch_buffers",
]
