"""The CPU speed wing (minibertgen/fast/cpu.py) computes what the reference ops compute."""
from pathlib import Path

import numpy as np
import pytest

import minibertgen as mb

from minibertgen import ops
from minibertgen.fast import cpu, threads


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 8, 32, 33, 96, 200])
@pytest.mark.parametrize("shape", [(4100, 64), (300, 40)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_linear_matches_the_plain_product(rows, shape, order, monkeypatch):
    monkeypatch.setattr(cpu, "CHUNK_BYTES", 64 * 4 * 1000)  # tall weights: blocks of 1000 rows and a rest
    rng = np.random.default_rng(rows)
    weight = np.asarray(rng.standard_normal(shape, dtype=np.float32), order=order)
    bias = rng.standard_normal(shape[0], dtype=np.float32)
    x = rng.standard_normal((rows, shape[1]), dtype=np.float32)
    got = cpu.linear(x[None], weight, bias)[0]  # [1, rows, in] -> [1, rows, out]
    want = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert got.shape == (rows, shape[0]) and got.flags.c_contiguous


def test_tall_weight_in_chunks_covers_every_row_once(monkeypatch):
    monkeypatch.setattr(cpu, "CHUNK_BYTES", 8 * 4 * 300)  # blocks of 300 rows: 16 and a rest of 200
    weight = (np.arange(5000 * 8, dtype=np.float32).reshape(5000, 8) % 7) + np.arange(5000)[:, None]
    x = np.eye(8, dtype=np.float32)[:3]  # picks columns 0, 1, 2 of each weight row
    np.testing.assert_array_equal(cpu.tall_weight_in_chunks(weight, x), weight[:, :3].T)


def _case(shape, seed, dtype=np.float32, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("size", [7, cpu.BLOCK + 5, 3 * cpu.BLOCK])
def test_blocked_gelu_equals_the_reference(native_setting, size, dtype):
    x = _case((size,), size, dtype)
    got = cpu.apply_activation(ops.gelu, x)
    want = ops.apply_activation.reference(ops.gelu, x)
    assert got.dtype == x.dtype and got.shape == x.shape
    # The same formula with the float32 steps in another order: each result may differ by a
    # few roundings of 0.5 x (1 + erf), i.e. |x| * 2**-23 ~ 1.8e-6 at |x| ~ 15 (inputs are 3 N(0, 1)).
    atol = 2e-6 if dtype == np.float32 else 1e-2  # float16: one rounding of results up to ~15 (spacing 2**-7)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-6, atol=atol)


@pytest.mark.parametrize("size", [3, cpu.BLOCK + 3])
def test_blocked_gelu_of_infinities_and_nan(native_setting, size):
    # torch.nn.functional.gelu gives +inf at +inf and NaN at -inf and NaN (so does ops.gelu);
    # max(x, 0) - |x| h alone gives inf * 0 = NaN at +inf.  Placed in the last block.
    x = np.zeros(size, dtype=np.float32)
    x[-3:] = [np.inf, -np.inf, np.nan]
    with np.errstate(all="ignore"):
        got = cpu.apply_activation(ops.gelu, x)
        want = ops.apply_activation.reference(ops.gelu, x)
    assert got[-3] == np.inf and np.isnan(got[-2]) and np.isnan(got[-1])
    np.testing.assert_array_equal(got, want)
    x[-2:] = [3e38, -3e38]  # +inf without a NaN in its block
    with np.errstate(all="ignore"):
        assert cpu.apply_activation(ops.gelu, x)[-3:].tolist() == [np.inf, np.float32(3e38), 0.0]


@pytest.mark.parametrize("name", ["gelu_new", "relu", "silu", "mish"])
def test_other_activations_are_the_reference(name):
    x = _case((3, 5, 8), 1)
    fn = ops.ACTIVATIONS[name]
    np.testing.assert_array_equal(cpu.apply_activation(fn, x), ops.apply_activation.reference(fn, x))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_in_place_layer_norm_and_softmax_equal_the_reference(native_setting, dtype):
    x, residual = _case((2, 5, 16), 2, dtype), _case((2, 5, 16), 3, dtype)
    weight, bias = _case((16,), 4, dtype, 1.0), _case((16,), 5, dtype, 1.0)
    np.testing.assert_allclose(cpu.layer_norm(x, weight, bias, 1e-12, residual=residual),
                               ops.layer_norm.reference(x, weight, bias, 1e-12, residual=residual), rtol=1e-6, atol=1e-6)
    scores = _case((2, 3, 4, 6), 6, dtype)
    mask = np.zeros((2, 1, 1, 6), dtype=dtype)
    mask[0, ..., 4:] = np.finfo(dtype).min
    mask[1] = np.finfo(dtype).min  # a fully masked row
    want = ops.masked_softmax.reference(scores.copy(), mask, 2.0, dtype=dtype)
    got = cpu.masked_softmax(scores.copy(), mask, 2.0, dtype=dtype)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-6, atol=1e-7)


def test_softmax_with_nothing_masked_skips_the_mask_and_equals_the_reference():
    scores = _case((2, 3, 4, 6), 7, np.float32)
    mask = np.zeros((2, 1, 1, 6), dtype=np.float32)  # an all-ones attention_mask
    want = ops.masked_softmax.reference(scores.copy(), mask, 8.0)
    # The fast wing's row sums are BLAS dot products (cpu.row_sums), added in another order than
    # NumPy's: each probability is within 2 float32 ulps of the reference (an ulp is at most
    # 2**-23 of the value, so rtol 2 * 2**-23 ~ 2.4e-7); the skipped mask adds no difference of its own.
    np.testing.assert_allclose(cpu.masked_softmax(scores.copy(), mask, 8.0), want, rtol=2 * 2.0**-23, atol=0)
    mask[1, ..., 5] = np.finfo(np.float32).min  # one key masked: the mask is used
    got = cpu.masked_softmax(scores.copy(), mask, 8.0)
    assert (got[1, ..., 5] == 0).all() and (got[0, ..., 5] > 0).all()
    np.testing.assert_allclose(got, ops.masked_softmax.reference(scores.copy(), mask, 8.0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(4, 30522), (1, 1000), (3, 7)])
def test_log_softmax_matches_the_exact_one(shape):
    scores = _case(shape, 8, np.float32) * 4
    scores[0, 1] = 60.0  # one dominant score: the others' log-probabilities near -60
    exact = scores.astype(np.float64)
    exact = exact - exact.max(-1, keepdims=True)
    log_sum = np.log(np.exp(exact).sum(-1, keepdims=True))
    exact -= log_sum
    got = cpu.log_softmax(scores)
    assert got.dtype == np.float32 and got.shape == shape
    # The shift by the maximum is exact in both; the sum of n exp terms (each rounded, 2**-24
    # relative) is added by BLAS in its own order: its relative error is at most n * 2**-24, which
    # is the absolute error of its log; the log and the last subtraction round once each.
    bound = shape[1] * 2.0**-24 + 2.0**-24 * (np.abs(log_sum) + np.abs(exact)) + 2.0**-24
    assert (np.abs(got - exact) <= bound).all()
    assert (np.abs(ops.log_softmax.reference(scores) - exact) <= bound).all()
    np.testing.assert_array_equal(cpu.log_softmax(scores.astype(np.float16)),
                                  ops.log_softmax.reference(scores.astype(np.float16)))  # other dtypes: the reference


FIXTURES = Path(__file__).parents[1] / "fixtures" / "generation"


@pytest.mark.parametrize("name", ["random_seq2seq", "random_seq2seq_relative", "toy_bert2bert"])
def test_whole_model_with_and_without_the_speed_wing(name):
    """Logits equal to float32 rounding and identical greedy and beam ids, fast wing on and off."""
    model = mb.EncoderDecoderModel.from_pretrained(FIXTURES / name)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, model.config.encoder.vocab_size, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    outputs, generated = [], []
    for fast in (True, False):
        model.use_fast_kernels(fast)
        assert (model.kernels is not None) == fast
        outputs.append(model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5]).logits)
        generated.append([model.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=beams)
                          for beams in (1, 3)])
    # The fast products sum in another order (W @ x.T for few rows, one GEMM over all rows): float32
    # rounding (2**-24 relative) at every product of every layer, so the bar scales with the largest
    # logit (35 for random_seq2seq: differences up to 2.1e-5 were measured; transformers' bar is 1e-4).
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6 * np.abs(outputs[1]).max())
    for fast_ids, plain_ids in zip(*generated):
        np.testing.assert_array_equal(fast_ids, plain_ids)


def test_use_fast_kernels_refuses_non_bools():
    model = mb.EncoderDecoderModel.from_pretrained(FIXTURES / "random_seq2seq")
    with pytest.raises(TypeError, match="enabled='no'"):
        model.use_fast_kernels("no")


# -- the two-core pool (fast/threads.py) ---------------------------------------------------

_POOL = threads.make_pool()  # off by default (MINIBERTGEN_CPU_POOL=1 turns it on): tested on its own here


@pytest.fixture
def pool_on(monkeypatch):
    if _POOL is None:
        pytest.skip("one core or no threadpoolctl: no pool to test")
    monkeypatch.setattr(threads, "POOL", _POOL)
    return _POOL


def needs_pool(test):
    return pytest.mark.usefixtures("pool_on")(test)


@needs_pool
@pytest.mark.parametrize("rows", [1, 4, 200])
def test_pool_splits_products_into_the_same_numbers(rows, monkeypatch):
    rng = np.random.default_rng(rows)
    weight = rng.standard_normal((3000, 64), dtype=np.float32)  # big enough to split
    x = rng.standard_normal((rows, 64), dtype=np.float32)
    with threads.forward_context():
        split = cpu.linear(x, weight, None)
        monkeypatch.setattr(threads, "POOL", None)
        whole = cpu.linear(x, weight, None)
    exact = x.astype(np.float64) @ weight.T.astype(np.float64)
    # Each half is a GEMM of its own shape, whose kernel may sum in another order: both stay within
    # float32 rounding of the exact dot products (64 terms of size <~ 10: 64 * 2**-24 * 10 ~ 4e-5 at worst).
    np.testing.assert_allclose(split, exact, rtol=0, atol=2e-5)
    np.testing.assert_allclose(whole, exact, rtol=0, atol=2e-5)


@needs_pool
def test_pool_splits_elementwise_ops_into_the_same_numbers(monkeypatch):
    x = _case((8, 128, 384), 20)
    scores = _case((8, 12, 128, 128), 21)
    mask = np.zeros((8, 1, 1, 128), dtype=np.float32)
    mask[3, ..., 100:] = np.finfo(np.float32).min
    weight, bias = _case((384,), 22, scale=1.0), _case((384,), 23, scale=1.0)

    def run():
        return (cpu.apply_activation(ops.gelu, x), cpu.layer_norm(x, weight, bias, 1e-12, residual=x),
                cpu.masked_softmax(scores.copy(), mask, 8.0))

    split = run()
    monkeypatch.setattr(threads, "POOL", None)
    for got, want in zip(split, run()):
        np.testing.assert_array_equal(got, want)  # elementwise work: the same operations on each half


@needs_pool
def test_pool_blas_limit_is_restored_after_a_forward_pass():
    from threadpoolctl import threadpool_info

    before = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    model = mb.EncoderDecoderModel.from_pretrained(FIXTURES / "random_seq2seq")
    model(input_ids=np.array([[5, 6, 7]]), decoder_input_ids=np.array([[2]]))
    after = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    assert after == before


@needs_pool
def test_worker_errors_reach_the_caller():
    def fails():
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        threads.POOL.pair(lambda: 1, fails)
    assert threads.POOL.pair(lambda: 1, lambda: 2) == (1, 2)  # and the pool still works
