"""The fused 4-bit decode kernel (fast/cuda_fourbit.py), checked without a GPU.

Its CUDA source runs on the CPU under tests/fast/kernel_emulator.py (one host thread per CUDA
thread) and must give what the quantization/ route computes on NumPy; where nvcc is
installed the same source is compiled for the GPU too, to catch what g++ accepts and CUDA
does not.  The GPU itself checks it in tests/fast/test_gpu.py (graphed 4-bit decoding).
"""
from __future__ import annotations

import numpy as np
import pytest

import kernel_emulator as emu
from minibertgen.fast import cuda_fourbit, preview
from minibertgen.quantization.fourbit import dequantize_4bit
from minibertgen.quantization.weights import QuantizedWeight4bit, QuantizedWeight8bit

needs_gxx = pytest.mark.skipif(not emu.available(), reason="needs g++ to emulate the kernel on the CPU")

F16_EPS, F32_EPS = 2.0 ** -10, 2.0 ** -23


def emulated(x, weight, bias=None):
    """What few_rows_linear_4bit computes, run by the emulator on NumPy arrays."""
    xtype = "_Float16" if x.dtype == np.float16 else "float"
    rows = x.shape[0]
    capacity = next(r for r in (1, 2, 4, 8, 16, 32) if r >= rows)
    source = emu.fill(cuda_fourbit.SOURCE, XTYPE=xtype, MAXROWS=str(capacity),
                      ROUNDING=cuda_fourbit._ROUNDING[np.dtype(weight.dtype)])
    launch = emu.compile_kernel(source, "few_rows_linear_4bit",
                                [f"const {xtype}*", "const unsigned int*", "const float*", "const float*",
                                 f"const {xtype}*", f"{xtype}*", "int", "int", "int", "int"])
    q = weight.q
    out_features, width = weight.shape
    y = np.full((rows, out_features), np.nan, dtype=x.dtype)
    scales = np.ascontiguousarray(q.block_scales(), dtype=np.float32)
    code = np.ascontiguousarray(cuda_fourbit.code_book(q.quant_type), dtype=np.float32)
    words = np.ascontiguousarray(q.packed).view(np.uint32)  # the bytes as the kernel's 32-bit loads see them
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    warps = cuda_fourbit.WARPS
    launch((out_features + warps - 1) // warps, 32 * warps, np.ascontiguousarray(x), words, scales, code, bias, y,
           rows, width, out_features, q.blocksize)
    return y


def exact(x, weight):
    """float64 sums of the operands the kernel multiplies (rounded to float16 under float16
    compute), and the sums of their absolute products (for rounding bounds)."""
    w = dequantize_4bit(weight.q)  # [out, in] float32: level * scale, as the kernel forms it
    x = x.astype(np.float32)
    if weight.dtype == np.float16:
        w, x = w.astype(np.float16), x.astype(np.float16)
    w, x = w.astype(np.float64), x.astype(np.float64)
    return x @ w.T, np.abs(x) @ np.abs(w).T


CASES = [  # (rows, out, in, quant_type, double_quant, compute, x dtype, bias)
    (1, 42, 320, "nf4", False, np.float32, np.float32, True),  # out not a multiple of 4 warps; lanes 0-7 loop twice
    (4, 36, 256, "nf4", True, np.float32, np.float32, False),  # beam search's 4 rows, decoded 8-bit scales
    (3, 20, 192, "fp4", False, np.float32, np.float32, True),  # 3 rows in 4 accumulators
    (5, 12, 64, "nf4", False, np.float16, np.float16, True),   # float16 throughout, 8 accumulators
    (2, 16, 128, "nf4", True, np.float16, np.float32, False),  # float32 activations, float16 compute
    (2, 16, 128, "fp4", False, np.float32, np.float16, True),  # float16 activations, float32 compute
]


@needs_gxx
@pytest.mark.parametrize("rows,out,width,quant_type,double_quant,compute,x_dtype,with_bias", CASES)
def test_emulated_kernel_matches_the_quantized_route(rows, out, width, quant_type, double_quant, compute, x_dtype,
                                                     with_bias):
    rng = np.random.default_rng(rows * 1000 + out)
    weight = QuantizedWeight4bit.from_float(rng.standard_normal((out, width)).astype(np.float32), quant_type,
                                            double_quant, compute)
    x = rng.standard_normal((rows, width)).astype(x_dtype)
    bias = rng.standard_normal(out).astype(x_dtype) if with_bias else None

    got = emulated(x, weight, bias)
    route = weight.rmatmul_t(x)  # quantization/'s NumPy route: dequantize, then one product
    if bias is not None:
        route = route + bias
    assert got.dtype == route.dtype == x_dtype
    assert np.isfinite(got).all()  # every output written

    product, magnitude = exact(x, weight)
    expected = product if bias is None else product + bias.astype(np.float64)
    # The kernel and the route add the same float32 products in different orders: each is
    # within width * 2^-23 * sum|w x| of the exact sum.  A float16 compute dtype then rounds
    # the sum (half an ulp, 2^-11 relative), and float16 activations round the output and
    # again after the bias is added; float32 outputs of float32 compute round nothing more.
    sum_error = width * F32_EPS * magnitude
    rounding = 0.0
    if compute == np.float16 or x_dtype == np.float16:
        scale = np.abs(product) + (0 if bias is None else np.abs(bias.astype(np.float64)))
        rounding = 2 * F16_EPS * (np.abs(product) + scale)  # two float16 roundings, one ulp each at most
    bound = sum_error + rounding + 1e-30
    assert (np.abs(got.astype(np.float64) - expected) <= bound).all()
    assert (np.abs(route.astype(np.float64) - expected) <= bound).all()  # the bound holds for the route too
    # and the two agree as closely as float32 order allows (float16 outputs: within a rounding step)
    assert np.allclose(got.astype(np.float64), route.astype(np.float64), rtol=0, atol=float((2 * bound).max()))


@needs_gxx
def test_emulated_kernel_reads_the_nibbles_in_storage_order():
    """A weight whose every value is distinct in sign and size: a swapped nibble or word shows."""
    levels = np.linspace(-1.0, 1.0, 16, dtype=np.float32)
    weight = QuantizedWeight4bit.from_float(np.resize(levels, (8, 64)), "nf4")
    for i in range(64):  # one-hot inputs pick single columns: y[0, o] = W[o, i]
        x = np.zeros((1, 64), dtype=np.float32)
        x[0, i] = 1.0
        np.testing.assert_array_equal(emulated(x, weight)[0], dequantize_4bit(weight.q)[:, i])


def test_shape_fits_takes_what_the_kernel_handles(monkeypatch):
    monkeypatch.setattr(preview, "ENABLED", True)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    nf4 = QuantizedWeight4bit.from_float(w, "nf4")
    assert cuda_fourbit.shape_fits(nf4, 4, np.float32)
    assert cuda_fourbit.shape_fits(nf4, 32, np.float16)
    assert not cuda_fourbit.shape_fits(nf4, 33)  # more rows: the route's cuBLAS GEMM
    assert not cuda_fourbit.shape_fits(nf4, 0)
    assert not cuda_fourbit.shape_fits(nf4, 1, np.float64)
    odd = QuantizedWeight4bit.from_float(rng.standard_normal((16, 60)).astype(np.float32), "nf4")
    assert not cuda_fourbit.shape_fits(odd)  # rows of 60: not whole 8-code words
    assert not cuda_fourbit.shape_fits(QuantizedWeight8bit.from_float(w))
    assert not cuda_fourbit.shape_fits(w)
    assert not cuda_fourbit.fits(np.zeros((1, 64), np.float32), nf4)  # NumPy codes: not for the GPU kernel
    monkeypatch.setattr(preview, "ENABLED", False)
    assert not cuda_fourbit.shape_fits(nf4, 4, np.float32)  # switched off: the quantization/ route


@pytest.mark.skipif(not emu.nvcc_available(), reason="needs nvcc (the CUDA toolkit) to compile the kernel")
@pytest.mark.parametrize("xtype,rounding", [("float", "0"), ("HALF", "1"), ("float", "1"), ("HALF", "0")])
def test_kernel_compiles_for_the_gpu(tmp_path, xtype, rounding):
    ptx = emu.nvcc_ptx(cuda_fourbit.SOURCE, tmp_path, XTYPE=xtype, MAXROWS="4", ROUNDING=rounding)
    assert ".entry few_rows_linear_4bit" in ptx


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("flags,graphed", [
    (None, True), (dict(load_in_4bit=True), True), (dict(load_in_4bit=True, bnb_4bit_use_double_quant=True), True),
    (dict(load_in_4bit=True, bnb_4bit_compute_dtype="float16"), True), (dict(load_in_8bit=True), False),
])
def test_graph_capture_takes_4bit_decoders_the_kernel_handles(flags, graphed, enabled, monkeypatch):
    """cuda_graph.graph_supported, asked about a real (CPU-loaded) decoder presented as if on
    a GPU: float and 4-bit decoders are captured, 8-bit ones (cuBLAS) are not, nor 4-bit ones
    while the kernel is switched off."""
    monkeypatch.setattr(preview, "ENABLED", enabled)
    if not enabled and flags is not None:
        graphed = False
    from types import SimpleNamespace

    import minibertgen as mb
    from conftest import FIXTURES
    from minibertgen.fast.cuda_graph import graph_supported

    config = None if flags is None else mb.BitsAndBytesConfig(**flags)
    decoder = mb.EncoderDecoderModel.from_pretrained(FIXTURES / "generation" / "toy_bert2bert",
                                                     quantization_config=config).decoder
    as_if_on_gpu = SimpleNamespace(device=SimpleNamespace(kind="cuda"), kernels={}, config=decoder.config,
                                   params=decoder.params, dtype=decoder.dtype)
    assert graph_supported(as_if_on_gpu, cache=object()) is graphed
    assert graph_supported(as_if_on_gpu, cache=None) is False


def test_graph_capture_refuses_4bit_weights_the_kernel_cannot_take(monkeypatch):
    monkeypatch.setattr(preview, "ENABLED", True)
    from types import SimpleNamespace

    from minibertgen.fast.cuda_graph import graph_supported

    rng = np.random.default_rng(1)
    odd = QuantizedWeight4bit.from_float(rng.standard_normal((16, 60)).astype(np.float32), "nf4")  # 60: not 8-code words
    fine = QuantizedWeight4bit.from_float(rng.standard_normal((16, 64)).astype(np.float32), "nf4")
    config = SimpleNamespace(position_embedding_type="absolute")
    for params, graphed in (({"a": {"weight": fine}}, True), ({"a": {"weight": fine}, "b": [{"weight": odd}]}, False)):
        decoder = SimpleNamespace(device=SimpleNamespace(kind="cuda"), kernels={}, config=config, params=params,
                                  dtype=np.dtype(np.float32))
        assert graph_supported(decoder, cache=object()) is graphed
