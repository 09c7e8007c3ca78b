"""The fused kernels' launch code (fast/cuda_kernels.py, cuda_fourbit.py, cuda_attention.py)
run on the CPU: tests/fast/fake_cupy.py stands in for CuPy, so the Python that picks the grid,
casts the arguments and passes them is what runs, with each kernel under the emulator.
A wrong argument order, a scalar of the wrong size or a missing argument fails here."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import fake_cupy
import kernel_emulator as emu
from minibertgen import attention, ops
from minibertgen.fast import cuda_attention, cuda_fourbit, preview
from minibertgen.fast import cuda_kernels as K
from minibertgen.quantization.weights import QuantizedWeight4bit

pytestmark = pytest.mark.skipif(not emu.available(), reason="needs g++ to emulate the kernels on the CPU")


@pytest.fixture
def cupy(monkeypatch):
    fake = fake_cupy.module()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(preview, "ENABLED", True)
    K._raw_kernel.cache_clear()  # kernels built for the fake must not outlive this test
    cuda_fourbit._CODES.clear()
    yield fake
    K._raw_kernel.cache_clear()
    cuda_fourbit._CODES.clear()


def on_device(cupy, a):
    return None if a is None else cupy.asarray(a)


@pytest.mark.parametrize("compute,x_dtype,double_quant", [(np.float32, np.float32, False),
                                                          (np.float16, np.float16, True),
                                                          (np.float16, np.float32, False)])
def test_fourbit_launch(cupy, compute, x_dtype, double_quant):
    rng = np.random.default_rng(0)
    weight = QuantizedWeight4bit.from_float(rng.standard_normal((20, 96)).astype(np.float32), "nf4", double_quant,
                                            compute)
    x = rng.standard_normal((3, 96)).astype(x_dtype)
    bias = rng.standard_normal(20).astype(x_dtype)
    want = weight.rmatmul_t(x) + bias  # quantization/'s NumPy route
    weight.q.packed = cupy.asarray(weight.q.packed)  # the codes "on the device"
    assert cuda_fourbit.fits(cupy.asarray(x), weight)
    got = np.asarray(cuda_fourbit.few_rows_linear_4bit(cupy.asarray(x), weight, cupy.asarray(bias)))
    assert got.dtype == want.dtype
    # float32 sums of 96 terms in another order, then (float16) one more rounding step
    atol = 1e-4 if x_dtype == np.float32 and compute == np.float32 else 2 * 2.0**-10 * float(np.abs(want).max())
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_prefill_attention_launch(cupy, dtype):
    rng = np.random.default_rng(1)
    batch, heads, queries, keys, d = 2, 3, 4, 9, 16
    q = rng.standard_normal((batch, queries, heads * d)).astype(dtype).reshape(batch, queries, heads, d)
    k, v = (rng.standard_normal((batch, keys, heads * d)).astype(dtype).reshape(batch, keys, heads, d)
            for _ in range(2))
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # split-heads views
    mask = np.zeros((batch, 1, 1, keys), dtype=dtype)
    mask[1, ..., 6:] = np.finfo(dtype).min
    want_context, want_probs = attention.attend.reference(q, k, v, mask)
    device = [cupy.asarray(a) for a in (q, k, v, mask)]
    assert cuda_attention.fits(*device)
    context, probs = cuda_attention.prefill_attention(*device, np.sqrt(d))
    atol = (2e-5, 2e-6) if dtype == np.float32 else (2e-2, 8e-3)  # test_cuda_attention.py's bounds
    np.testing.assert_allclose(np.asarray(context, np.float32), want_context.astype(np.float32), rtol=0, atol=atol[0])
    np.testing.assert_allclose(np.asarray(probs, np.float32), want_probs.astype(np.float32), rtol=0, atol=atol[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_fused_kernel_launches(cupy, dtype):
    """The kernels that have run on GPUs, through their own launch code, and LayerNorm's new bias variant."""
    rng = np.random.default_rng(2)
    x, residual = (rng.standard_normal((6, 64)).astype(dtype) for _ in range(2))
    gamma, beta, add = (rng.standard_normal(64).astype(dtype) for _ in range(3))
    loose = 2 * 2.0**-10 * 8 if dtype == np.float16 else 2e-5  # float16: two steps at values up to ~8
    for extra in (None, add):
        got = K.layer_norm(cupy.asarray(x), gamma, beta, 1e-12, residual=cupy.asarray(residual), add=extra)
        want = ops.layer_norm.reference(x if extra is None else x + extra, gamma, beta, 1e-12, residual=residual)
        np.testing.assert_allclose(np.asarray(got, np.float32), want.astype(np.float32), rtol=0, atol=loose)

    scores = (rng.standard_normal((2, 2, 3, 11)) * 3).astype(dtype)
    mask = np.zeros((2, 1, 1, 11), dtype=dtype)
    mask[0, ..., 8:] = np.finfo(dtype).min
    got = K.masked_softmax(cupy.asarray(scores), cupy.asarray(mask), 4.0, np.float32)
    np.testing.assert_allclose(np.asarray(got), ops.masked_softmax.reference(scores, mask, 4.0, dtype=np.float32),
                               rtol=1e-5, atol=1e-6)

    weight = rng.standard_normal((10, 64)).astype(dtype)
    rows = x[:3]
    assert K.few_rows_linear_fits(cupy.asarray(rows), cupy.asarray(weight))
    got = K.few_rows_linear(cupy.asarray(rows), cupy.asarray(weight), cupy.asarray(beta[:10]))
    want = ops.linear.reference(rows.astype(np.float32), weight.astype(np.float32), beta[:10].astype(np.float32))
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0, atol=1e-4 if dtype == np.float32 else 0.1)

    query = rng.standard_normal((2, 3, 1, 16)).astype(dtype)
    key, value = (rng.standard_normal((2, 3, 7, 16)).astype(dtype) for _ in range(2))
    got = K.one_query_scores(cupy.asarray(query), cupy.asarray(key))
    want = query.astype(np.float32) @ key.astype(np.float32).transpose(0, 1, 3, 2)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0, atol=1e-5 if dtype == np.float32 else 0.05)
    probs = ops.softmax(want, axis=-1).astype(dtype)
    got = K.one_query_values(cupy.asarray(probs), cupy.asarray(value))
    want = probs.astype(np.float32) @ value.astype(np.float32)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=0, atol=1e-5 if dtype == np.float32 else 0.01)


def test_a_wrong_argument_is_caught(cupy):
    """The fake's own check: a scalar of the wrong size is refused, as a real launch would misread it."""
    kernel = cupy.RawKernel(emu.fill(K._LAYER_NORM, TYPE="float", ADDBIAS="0", BLOCK_SUM=K._BLOCK_SUM), "layer_norm")
    x = cupy.asarray(np.zeros((2, 32), np.float32))
    with pytest.raises(TypeError, match="argument 5"):
        kernel((2,), (32,), (x, np.uint64(0), x[0], x[0], x, np.int64(32), np.float32(1e-12)))
