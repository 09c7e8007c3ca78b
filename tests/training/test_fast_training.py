"""The CPU training table (fast/cpu_training.py) against the reference it replaces.

Each fast op is checked against the plain function of ops_backward.py / optim.py on the
same inputs (those are checked against torch autograd and torch.optim.AdamW in the other
files); whole models on the fast table are compared with torch in test_model_backward_live.py.
"""
import math

import numpy as np
import pytest

from minibertgen import ops_backward, optim
from minibertgen.dispatch import training_part, using
from minibertgen.fast import cpu_optim, cpu_training, kernels_for_array, threads

HYPER = dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)


@pytest.fixture(params=["pool", "one core"])
def pool_setting(request, monkeypatch):
    """Run each test with the training pool (both cores) and without it."""
    pool = threads.make_pool() if request.param == "pool" else None
    if request.param == "pool" and pool is None:
        pytest.skip("one core, or no threadpoolctl: no pool to test")
    monkeypatch.setattr(threads, "_TRAINING_POOL", [pool])
    return request.param


def _moments(rng, shape, order):
    w, g, m, v = (np.asarray(rng.standard_normal(shape), dtype=np.float32, order=order) for _ in range(4))
    return w, g, m, np.abs(v)  # the second moment is never negative


@pytest.mark.parametrize("shape", [(7,), (300, 1001), (4 * cpu_training.BLOCK + 5,)])
@pytest.mark.parametrize("orders", ["CC", "FF", "FC"])  # weight order, gradient order
def test_adamw_update_in_blocks_is_the_reference_bit_for_bit(pool_setting, native_setting, shape, orders):
    rng = np.random.default_rng(0)
    w, g, m, v = _moments(rng, shape, orders[0])
    g = np.asarray(g, order=orders[1])
    expected = [a.copy(order="K") for a in (w, m, v)]
    optim.adamw_update.reference(*expected[:1], g, *expected[1:], **HYPER)
    cpu_optim.adamw_update(w, g, m, v, **HYPER)
    for name, got, want in zip("wmv", (w, m, v), expected):
        np.testing.assert_array_equal(got, want, err_msg=name)  # elementwise: the same operations per element
    if len(shape) > 1:
        assert w.flags.f_contiguous == (orders[0] == "F")  # updated in place, layout kept


def test_adamw_update_of_a_strided_view_falls_back_to_the_reference():
    rng = np.random.default_rng(1)
    w, g, m, v = _moments(rng, (40, 30), "C")
    view = (w[:, ::2], g[:, ::2], m[:, ::2], v[:, ::2])  # neither C nor F contiguous
    expected = [a.copy() for a in view]
    optim.adamw_update.reference(expected[0], view[1], expected[2], expected[3], **HYPER)
    cpu_optim.adamw_update(*view, **HYPER)
    for got, want in zip(view[::2], expected[::2]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(3, 5, 1536), (2 * cpu_training.BLOCK + 3,)])
def test_gelu_backward_in_blocks_equals_the_reference(pool_setting, native_setting, shape):
    rng = np.random.default_rng(2)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    got = cpu_training.activation_backward("gelu", dout, x)
    want = ops_backward.activation_backward.reference("gelu", dout, x)
    assert got.shape == want.shape and got.dtype == np.float32
    # Not bitwise: exp(-x^2/2) is computed here as exp(-(x/sqrt 2)^2), reusing erf's exponential.
    # The bar: as accurate as the reference against the exact derivative (float64, math.erf);
    # both carry the erf polynomial's 1.5e-7 error, so ~3e-7 x |dL/dy| where Phi and x phi cancel.
    x64 = x.astype(np.float64)
    exact = dout * (0.5 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2)))
                    + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi))
    error = np.abs(got - exact) / np.abs(dout)
    reference_error = np.abs(want - exact) / np.abs(dout)
    assert error.max() <= reference_error.max() + 2e-8
    assert reference_error.max() < 4e-7


@pytest.mark.parametrize("name,dtype", [("relu", np.float32), ("gelu_new", np.float32), ("gelu", np.float64)])
def test_other_activations_and_dtypes_are_the_reference(name, dtype):
    rng = np.random.default_rng(3)
    x, dout = (rng.standard_normal((4, 6)).astype(dtype) for _ in range(2))
    np.testing.assert_array_equal(cpu_training.activation_backward(name, dout, x),
                                  ops_backward.activation_backward.reference(name, dout, x))


@pytest.mark.parametrize("order", ["C", "F"])
def test_linear_backward_gives_the_weight_gradient_in_the_weights_order(order):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    weight = np.asarray(rng.standard_normal((48, 16)), dtype=np.float32, order=order)
    dout = rng.standard_normal((3, 5, 48)).astype(np.float32)
    got = cpu_training.linear_backward(dout, x, weight)
    want = ops_backward.linear_backward.reference(dout, x, weight)
    exact = [np.einsum("ro,oi->ri", dout.reshape(-1, 48).astype(np.float64), weight.astype(np.float64)),
             np.einsum("ro,ri->oi", dout.reshape(-1, 48).astype(np.float64), x.reshape(-1, 16).astype(np.float64))]
    assert got[1].flags.f_contiguous == (order == "F")
    exact.append(dout.reshape(-1, 48).astype(np.float64).sum(axis=0))
    for g, w, e in zip(got, want, exact):
        np.testing.assert_allclose(g.reshape(e.shape), e, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # dbias: 15 rows summed in BLAS's order (a product with ones) instead of NumPy's: float32 rounding apart
    np.testing.assert_allclose(got[2], exact[2], rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(dout).sum(axis=(0, 1)).max())


def test_the_training_table_is_chosen_for_numpy_arrays_and_replaces_the_named_ops():
    table = training_part(kernels_for_array(np.zeros(1)))
    assert table["adamw_update"] is cpu_optim.adamw_update
    assert "top_k" not in table  # beam search is not training
    w, g, m, v = _moments(np.random.default_rng(5), (3 * cpu_training.BLOCK,), "C")
    calls = []
    with using({**table, "adamw_update": lambda *a, **k: calls.append(1)}):
        optim.adamw_update(w, g, m, v, **HYPER)
    assert calls == [1]
    assert training_part(None) is None


def test_adamw_takes_the_table_of_the_model_it_updates():
    """One switch: model.use_fast_kernels() chooses the optimizer's update too (the training part
    of the model's table); parameters of no model update with the reference."""
    from minibertgen import BertGenerationConfig, BertGenerationDecoder

    config = BertGenerationConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, is_decoder=True)
    model = BertGenerationDecoder(config, seed=0)
    assert optim.AdamW(model.parameters())._kernels() is training_part(kernels_for_array(np.zeros(1)))
    model.use_fast_kernels(False)
    assert optim.AdamW(model.parameters())._kernels() is None
    model.use_fast_kernels(True)
    optimizer = optim.AdamW(model.parameters())
    model.use_fast_kernels(False)  # read at each step, not when the optimizer was made
    assert optimizer._kernels() is None
    param = type("P", (), {})()
    param.data, param.grad = np.ones(5, np.float32), np.full(5, 0.5, np.float32)
    assert optim.AdamW([param])._kernels() is None
    assert optim.AdamW([param], foreach=False)._kernels() is None


def test_the_training_pool_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(threads, "_TRAINING_POOL", [])
    monkeypatch.setenv("MINIBERTGEN_TRAINING_POOL", "0")
    assert threads.training_pool() is None


@pytest.mark.parametrize("rows,vocab", [(7, 30522), (300, 40), (1, 5)])
@pytest.mark.parametrize("ignored", ["some", "none", "all"])
def test_cross_entropy_and_its_backward_by_rows_are_the_reference(rows, vocab, ignored):
    from minibertgen import ops

    rng = np.random.default_rng(6)
    logits = (4 * rng.standard_normal((rows, vocab))).astype(np.float32)
    labels = rng.integers(0, vocab, rows)
    if ignored == "some":
        labels[::3] = -100
    elif ignored == "all":
        labels[:] = -100
    with np.errstate(invalid="ignore", divide="ignore"):
        got, want = cpu_training.cross_entropy(logits, labels), ops.cross_entropy.reference(logits, labels)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN for all ignored, as torch: equal too
    got_grad = cpu_training.cross_entropy_backward(logits, labels, dloss=0.5)
    want_grad = ops_backward.cross_entropy_backward.reference(logits, labels, dloss=0.5)
    np.testing.assert_array_equal(got_grad, want_grad)


@pytest.mark.parametrize("with_residual", [True, False])
def test_layer_norm_backward_in_three_buffers_is_the_reference(native_setting, with_residual):
    rng = np.random.default_rng(7)
    x, dout = (rng.standard_normal((3, 5, 384)).astype(np.float32) for _ in range(2))
    residual = rng.standard_normal((3, 5, 384)).astype(np.float32) if with_residual else None
    weight = (1 + 0.1 * rng.standard_normal(384)).astype(np.float32)
    before = x.copy()
    got = cpu_training.layer_norm_backward(dout, x, weight, 1e-12, residual=residual)
    want = ops_backward.layer_norm_backward.reference(dout, x, weight, 1e-12, residual=residual)
    wide = [None if a is None else a.astype(np.float64) for a in (dout, x, weight, residual)]
    exact = ops_backward.layer_norm_backward.reference(wide[0], wide[1], wide[2], 1e-12, residual=wide[3])
    for name, g, w, e in zip(("ds", "dweight", "dbias"), got, want, exact):
        assert g.dtype == np.float32 and g.shape == w.shape
        # Not bitwise: the sums (row means, column sums) are BLAS products with ones (or, in the C
        # loop, float64 sums), added in another order than NumPy's pairwise sums.  Both are float32
        # roundings of the float64 value; measured, they differ from it and from each other by < 1e-6
        # of the largest entry.
        np.testing.assert_allclose(g, e, rtol=0, atol=2e-6 * np.abs(e).max(), err_msg=name)
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-6 * np.abs(e).max(), err_msg=name)
    np.testing.assert_array_equal(x, before)  # the record's input is left as it was


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 128, 128), (6, 1)])
def test_softmax_backward_and_blas_sums_equal_the_reference(shape):
    from minibertgen.fast import cpu

    rng = np.random.default_rng(11)
    scores, dprobs = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    probs = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)
    got = cpu_training.softmax_backward(dprobs, probs)
    want = ops_backward.softmax_backward.reference(dprobs, probs)
    exact = ops_backward.softmax_backward.reference(dprobs.astype(np.float64), probs.astype(np.float64))
    assert got.dtype == np.float32 and got.shape == shape
    # the row sums in BLAS's order, not NumPy's (float32 rounding apart, < 1e-6 relative measured)
    np.testing.assert_allclose(got, exact, rtol=0, atol=2e-6 * np.abs(exact).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(exact).max())
    rows = scores.reshape(-1, shape[-1])
    np.testing.assert_allclose(cpu.row_sums(rows)[:, 0], rows.astype(np.float64).sum(axis=-1), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(cpu.row_means(rows)[:, 0], rows.astype(np.float64).mean(axis=-1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cpu.column_sums(rows), rows.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-5)
    assert cpu.last_axis_sums(scores).shape == shape[:-1] + (1,)


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("order", ["C", "F"])
def test_embedding_backward_by_sorting_is_the_reference(padding_idx, order):
    rng = np.random.default_rng(8)
    table = np.asarray(rng.standard_normal((50, 16)), dtype=np.float32, order=order)
    ids = rng.integers(0, 12, (4, 9))  # many repeats, the padding id among them
    dout = rng.standard_normal((4, 9, 16)).astype(np.float32)
    got = cpu_training.embedding_backward(dout, ids, table, padding_idx)
    # reduceat adds each id's rows in its own order (not np.add.at's), so not bit for bit:
    # the bar is float32 summation's bound, k eps sum|x| for an id repeated k times, against
    # the float64 reference.
    exact = ops_backward.embedding_backward.reference(dout.astype(np.float64), ids, table.astype(np.float64),
                                                      padding_idx)
    magnitude = ops_backward.embedding_backward.reference(np.abs(dout).astype(np.float64), ids,
                                                          table.astype(np.float64), padding_idx)
    repeats = np.bincount(ids.reshape(-1), minlength=50)[:, None]
    assert (np.abs(got - exact) <= repeats * np.finfo(np.float32).eps * magnitude).all()
    np.testing.assert_allclose(got, ops_backward.embedding_backward.reference(dout, ids, table, padding_idx),
                               rtol=1e-5, atol=1e-6)
    assert got.flags.f_contiguous == (order == "F")
    if padding_idx is not None:
        assert not got[padding_idx].any()
    only_padding = cpu_training.embedding_backward(dout[:1, :1], np.zeros((1, 1), np.int64), table, 0)
    assert not only_padding.any()


def _gradients(rng):
    shapes_orders = [((5 * cpu_training.BLOCK + 3,), "C"), ((1536, 384), "F"), ((7, 3), "C"), ((384,), "C")]
    return [np.asarray(rng.standard_normal(shape), dtype=np.float32, order=order) for shape, order in shapes_orders]


def test_the_2_norms_and_the_scaling_in_two_halves_are_the_reference(pool_setting, native_setting):
    arrays = _gradients(np.random.default_rng(8))
    got, want = cpu_optim.vector_norms(arrays, 2.0), optim.vector_norms.reference(arrays, 2.0)
    exact = [np.sqrt((x.astype(np.float64) ** 2).sum()) for x in arrays]
    for mine, theirs, truth in zip(got, want, exact):
        assert mine.dtype == theirs.dtype == np.float32
        # the reference's BLAS dot adds the squares in float32 (error ~ eps x log2(size) relative at worst);
        # the C loop in float64, rounded once to float32: within half a float32 step of the exact norm
        assert abs(float(mine) - truth) <= (np.finfo(np.float32).eps if native_setting == "C loops"
                                            else 32 * np.finfo(np.float32).eps) * truth
        np.testing.assert_allclose(mine, theirs, rtol=32 * np.finfo(np.float32).eps)
    for ord in (1.0, np.inf, 0.0, 3.0):
        assert cpu_optim.vector_norms(arrays, ord) == optim.vector_norms.reference(arrays, ord)
    scaled, expected = [x.copy(order="K") for x in arrays], [x.copy(order="K") for x in arrays]
    cpu_optim.scale_all_(scaled, 0.3)
    optim.scale_all_.reference(expected, 0.3)
    for mine, theirs in zip(scaled, expected):
        np.testing.assert_array_equal(mine, theirs)  # elementwise: the same multiply per element
        assert mine.flags.f_contiguous == theirs.flags.f_contiguous


def test_clip_grad_norm_takes_the_table_of_the_model_it_clips(monkeypatch):
    from minibertgen import BertGenerationConfig, BertGenerationDecoder

    config = BertGenerationConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, is_decoder=True)
    model = BertGenerationDecoder(config, seed=0)
    for param in model.parameters():
        param.grad = np.ones(param.shape, np.float32)
    calls = []
    monkeypatch.setitem(cpu_training.TRAINING_KERNELS, "scale_all_", lambda arrays, f: calls.extend(arrays))
    optim.clip_grad_norm_(model.parameters(), 1.0)
    assert len(calls) == len({id(p.data) for p in model.parameters()})  # the model's table scaled each gradient
    model.use_fast_kernels(False)
    calls.clear()
    optim.clip_grad_norm_(model.parameters(), 1.0)
    assert calls == []
    after = optim.clip_grad_norm_(model.parameters(), 1e9)  # (nothing to clip: only the norm)
    np.testing.assert_allclose(after, 1.0, rtol=1e-5)  # the reference scaled them to norm 1


def test_linear_backward_of_mixed_dtypes_is_the_reference():
    rng = np.random.default_rng(11)
    dout = rng.standard_normal((4, 6)).astype(np.float32)
    x = rng.standard_normal((4, 5))  # float64 input, float32 weight and gradient
    weight = rng.standard_normal((6, 5)).astype(np.float32)
    got = cpu_training.linear_backward(dout, x, weight)
    want = ops_backward.linear_backward.reference(dout, x, weight)
    for mine, theirs in zip(got, want):
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)
