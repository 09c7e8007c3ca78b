"""Each backward of ops_backward.py against torch autograd on the same inputs."""
import numpy as np
import pytest

from conftest import require_module
from grad_helpers import assert_close_grad, leaf, upstream

from minibertgen import ops
from minibertgen import ops_backward as B

torch = require_module("torch")
F = torch.nn.functional

DTYPES = [np.float64, np.float32]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_backward_sums_repeated_ids(rng, dtype, padding_idx):
    table = rng.standard_normal((11, 6)).astype(dtype)
    ids = np.array([[0, 3, 3, 5], [3, 0, 7, 7]])  # repeated ids and the padding id
    dout = upstream(rng, (2, 4, 6), dtype)
    t_table = leaf(torch, table)
    F.embedding(torch.tensor(ids), t_table, padding_idx=padding_idx).backward(torch.tensor(dout))
    ours = B.embedding_backward(dout, ids, table, padding_idx=padding_idx)
    assert ours.dtype == dtype
    assert_close_grad(ours, t_table.grad.numpy(), dtype, "dtable")
    if padding_idx is not None:
        assert not ours[padding_idx].any()
    assert np.abs(ours[3]).sum() > 0  # a repeated id gets its rows


def test_embedding_backward_keeps_the_tables_memory_order(rng):
    """A table stored transposed (fast/layout.py) gets its gradient in the same order, so the
    optimiser can walk both in memory order (fast/cpu_training.py); the values are torch's."""
    table = np.asfortranarray(rng.standard_normal((11, 6)).astype(np.float32))
    ids = np.array([[0, 3, 3, 5]])
    dout = upstream(rng, (1, 4, 6), np.float32)
    t_table = leaf(torch, np.ascontiguousarray(table))
    F.embedding(torch.tensor(ids), t_table).backward(torch.tensor(dout))
    ours = B.embedding_backward(dout, ids, table)
    assert ours.flags.f_contiguous and not ours.flags.c_contiguous
    assert_close_grad(ours, t_table.grad.numpy(), np.float32, "dtable")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_backward(rng, dtype, with_bias):
    x = rng.standard_normal((3, 5, 7)).astype(dtype)
    weight = rng.standard_normal((4, 7)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    dout = upstream(rng, (3, 5, 4), dtype)
    tx, tw, tb = leaf(torch, x), leaf(torch, weight), leaf(torch, bias)
    F.linear(tx, tw, tb if with_bias else None).backward(torch.tensor(dout))
    dx, dw, db = B.linear_backward(dout, x, weight, has_bias=with_bias)
    assert_close_grad(dx, tx.grad.numpy(), dtype, "dx")
    assert_close_grad(dw, tw.grad.numpy(), dtype, "dweight")
    if with_bias:
        assert_close_grad(db, tb.grad.numpy(), dtype, "dbias")
    else:
        assert db is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [True, False])
def test_layer_norm_backward(rng, dtype, with_residual):
    x = (3 * rng.standard_normal((2, 5, 16)) + 1).astype(dtype)
    residual = rng.standard_normal((2, 5, 16)).astype(dtype)
    weight = rng.standard_normal(16).astype(dtype)
    bias = rng.standard_normal(16).astype(dtype)
    dout = upstream(rng, x.shape, dtype)
    tx, tr, tw, tb = (leaf(torch, a) for a in (x, residual, weight, bias))
    summed = tx + tr if with_residual else tx
    F.layer_norm(summed, (16,), tw, tb, eps=1e-12).backward(torch.tensor(dout))
    ds, dw, db = B.layer_norm_backward(dout, x, weight, 1e-12, residual=residual if with_residual else None)
    assert_close_grad(ds, tx.grad.numpy(), dtype, "dx")
    if with_residual:
        assert_close_grad(ds, tr.grad.numpy(), dtype, "dresidual")
    assert_close_grad(dw, tw.grad.numpy(), dtype, "dweight")
    assert_close_grad(db, tb.grad.numpy(), dtype, "dbias")


ACTIVATIONS = ["gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate",
               "quick_gelu", "relu", "relu6", "silu", "swish", "tanh", "sigmoid", "linear", "mish"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_matches_transformers_act2fn(rng, dtype, name):
    act2fn = require_module("transformers.activations").ACT2FN
    x = (4 * rng.standard_normal((3, 50))).astype(dtype)  # covers both sides of relu6's 0 and 6
    x[0, :3] = [0.5, 6.5, -7.0]
    dout = upstream(rng, x.shape, dtype)
    tx = leaf(torch, x)
    act2fn[name](tx).backward(torch.tensor(dout))
    ours = B.activation_backward(name, dout, x)
    assert ours.dtype == dtype
    # erf GELU uses ops.erf (absolute error 1.5e-7, A&S 7.1.26), like the forward: that
    # is the one non-rounding difference, well inside float64's 1e-6 bar.
    assert_close_grad(ours, tx.grad.numpy(), dtype, name)


def test_activation_backward_unknown_name():
    with pytest.raises(ValueError, match="hidden_act='gelu_magic'"):
        B.activation_backward("gelu_magic", np.ones(2), np.ones(2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_softmax_backward_with_fully_masked_rows(rng, dtype):
    scores = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    keep = np.ones((2, 1, 4, 5), dtype=dtype)
    keep[0, 0, :, 3:] = 0  # padding keys
    keep[1, 0, 2, :] = 0  # a fully masked row: uniform probabilities, gradient still flows
    mask = (1.0 - keep) * np.finfo(dtype).min
    divisor = np.sqrt(8.0)
    ts = leaf(torch, scores)
    probs_t = F.softmax(ts / divisor + torch.tensor(mask), dim=-1)
    dout = upstream(rng, scores.shape, dtype)
    probs_t.backward(torch.tensor(dout))
    probs = probs_t.detach().numpy()
    ours = B.masked_softmax_backward(dout, probs, divisor)
    assert_close_grad(ours, ts.grad.numpy(), dtype, "dscores")
    assert np.abs(ours[1, :, 2]).sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_backward_skips_ignored_labels(rng, dtype):
    logits = (3 * rng.standard_normal((7, 10))).astype(dtype)
    labels = np.array([1, -100, 4, 4, -100, 9, 0])
    tl = leaf(torch, logits)
    F.cross_entropy(tl, torch.tensor(labels), ignore_index=-100).backward()
    ours = B.cross_entropy_backward(logits, labels)
    assert_close_grad(ours, tl.grad.numpy(), dtype, "dlogits")
    assert not ours[1].any() and not ours[4].any()


def test_cross_entropy_backward_scales_with_the_incoming_gradient(rng):
    logits = rng.standard_normal((4, 6))
    labels = np.array([1, 2, -100, 5])
    tl = leaf(torch, logits)
    (2.5 * F.cross_entropy(tl, torch.tensor(labels))).backward()
    assert_close_grad(B.cross_entropy_backward(logits, labels, dloss=2.5), tl.grad.numpy(), np.float64)


def test_cross_entropy_all_ignored_gives_zero_gradient_as_torch(rng):
    logits = rng.standard_normal((3, 6)).astype(np.float32)
    labels = np.full(3, -100)
    tl = leaf(torch, logits)
    loss = F.cross_entropy(tl, torch.tensor(labels))
    loss.backward()
    assert torch.isnan(loss)
    ours = B.cross_entropy_backward(logits, labels)
    np.testing.assert_array_equal(ours, tl.grad.numpy())
    assert not ours.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_with_torchs_mask_equals_torch(rng, dtype):
    p = 0.3
    x = rng.standard_normal((4, 50)).astype(dtype)
    torch.manual_seed(5)
    tx = leaf(torch, x)
    y_t = F.dropout(tx, p, training=True)
    dout = upstream(rng, x.shape, dtype)
    y_t.backward(torch.tensor(dout))
    torch.manual_seed(5)
    mask = F.dropout(torch.ones(x.shape, dtype=tx.dtype), p, training=True).numpy()  # the same draw
    y, used = ops.dropout(x, p, mask=mask)
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-6)
    assert_close_grad(B.dropout_backward(dout, used), tx.grad.numpy(), dtype, "dx")


def test_dropout_keeps_one_minus_p_and_scales():
    p = 0.25
    x = np.ones((400, 500), dtype=np.float32)
    y, mask = ops.dropout(x, p, generator=np.random.default_rng(1))
    kept = mask > 0
    assert abs(kept.mean() - (1 - p)) < 0.005  # 200000 draws: std of the mean ~0.001
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    assert not y[~kept].any()
    again, _ = ops.dropout(x, p, generator=np.random.default_rng(1))
    np.testing.assert_array_equal(y, again)  # seeded: the same mask


def test_dropout_off_and_bad_p():
    x = np.ones(3)
    y, mask = ops.dropout(x, 0.0)
    assert y is x and mask is None
    with pytest.raises(ValueError, match="p=1.0"):
        ops.dropout(x, 1.0, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="generator"):
        ops.dropout(x, 0.1)
