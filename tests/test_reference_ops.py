"""Each reference op (ops.py, attention.py, cache.py) against torch on the same inputs, one
op at a time (tinygrad's helper_test_op idea): the plain functions, not the speed wing."""
import math

import numpy as np
import pytest

from conftest import require_module
from minibertgen import attention, ops
from minibertgen.cache_surface import EncoderDecoderCache
from minibertgen.dispatch import using

torch = require_module("torch")
F = torch.nn.functional


def _rand(*shape, seed=0, scale=3.0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# torch's own activations (the reference transformers' ACT2FN maps these names to)
_TORCH_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_python": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "gelu_accurate": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3)))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
    "mish": F.mish,
}


@pytest.mark.parametrize("name", sorted(ops.ACTIVATIONS))
def test_each_activation_matches_torch(name):
    x = _rand(4, 257, seed=1)
    with using(None):
        got = ops.activation(name)(x)
    want = _TORCH_ACTIVATIONS[name](_t(x).double()).numpy()
    # erf from Abramowitz & Stegun 7.1.26 has absolute error <= 1.5e-7; the rest is float32 rounding
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32


def test_activation_of_float16_is_computed_in_float32_and_rounded_once():
    x = _rand(1000, seed=2, dtype=np.float16)
    with using(None):
        got = ops.activation("gelu")(x)
    assert got.dtype == np.float16
    want = F.gelu(_t(x).float()).half().numpy()
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3, atol=1e-3)  # one fp16 rounding


def test_linear_and_layer_norm_with_residual_match_torch():
    x, residual = _rand(2, 5, 16, seed=3), _rand(2, 5, 16, seed=4)
    weight, bias = _rand(24, 16, seed=5, scale=0.3), _rand(24, seed=6)
    with using(None):
        np.testing.assert_allclose(ops.linear(x, weight, bias), F.linear(_t(x), _t(weight), _t(bias)).numpy(),
                                   rtol=1e-5, atol=1e-5)
        gamma, beta = _rand(16, seed=7, scale=1.0), _rand(16, seed=8, scale=1.0)
        got = ops.layer_norm(x, gamma, beta, 1e-12, residual=residual)
    want = F.layer_norm(_t(x + residual), (16,), _t(gamma), _t(beta), eps=1e-12).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_masked_softmax_with_a_fully_masked_row_is_uniform_in_every_dtype(dtype):
    """transformers adds the mask (the dtype's minimum) in the model dtype: a fully masked
    row is then uniform, in float16 as in float32 (issue 17, item 4)."""
    scores = _rand(2, 2, 3, 5, seed=9, dtype=dtype)
    keep = np.ones((2, 5), dtype=dtype)
    keep[0, 3:] = 0
    keep[1] = 0  # every key of the second row masked
    mask = attention.padding_mask(keep, dtype)  # [2, 1, 1, 5]
    with using(None):
        got = ops.masked_softmax(scores, mask, 2.0, dtype=np.float32)
    want = torch.softmax((_t(scores) / 2.0 + _t(mask)).float(), dim=-1).numpy()  # added in the model dtype, as transformers
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == np.float16 else 1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], 0.2, rtol=1e-6)


@pytest.mark.parametrize("mode", ["absolute", "relative_key", "relative_key_query"])
def test_attention_with_causal_mask_head_mask_and_relative_positions_matches_torch(mode):
    batch, heads, q_len, d = 2, 3, 4, 8
    q, k, v = (_rand(batch, heads, q_len, d, seed=s, scale=1.0) for s in (10, 11, 12))
    keep = np.ones((batch, q_len), dtype=np.float32)
    keep[1, :1] = 0  # left padding
    mask = attention.causal_mask(keep, q_len, np.float32)  # [batch, 1, q, k]
    head_mask = np.array([1.0, 0.0, 0.5], dtype=np.float32)[:, None, None]  # [heads, 1, 1]
    table = _rand(2 * 16 - 1, d, seed=13, scale=1.0)
    relative = None if mode == "absolute" else (table, np.arange(q_len), mode)
    with using(None):
        context, probs = attention.attend(q, k, v, mask, head_mask=head_mask, relative=relative)

    tq, tk, tv = _t(q).double(), _t(k).double(), _t(v).double()
    scores = tq @ tk.transpose(-1, -2)
    if mode != "absolute":
        distance = torch.arange(q_len)[:, None] - torch.arange(q_len)[None, :]
        r = _t(table).double()[distance + 15]  # [q, k, d]
        scores = scores + torch.einsum("bhqd,qkd->bhqk", tq, r)
        if mode == "relative_key_query":
            scores = scores + torch.einsum("bhkd,qkd->bhqk", tk, r)
    weights = torch.softmax(scores / math.sqrt(d) + _t(mask).double(), dim=-1) * _t(head_mask).double()
    np.testing.assert_allclose(probs, weights.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context, (weights @ tv).numpy(), rtol=1e-5, atol=1e-6)


def test_cache_writes_at_the_given_position_and_reorders_rows():
    cache = EncoderDecoderCache(num_layers=1, capacity=2)
    first = _rand(3, 2, 2, 4, seed=14)  # [rows, heads, 2 tokens, d]
    second = _rand(3, 2, 1, 4, seed=15)
    cache.update_self(0, first, first + 1, 0)
    keys, values = cache.update_self(0, second, second + 1, 2)  # grows past capacity 2
    assert keys.shape == (3, 2, 3, 4) and cache.get_seq_length() == 3
    np.testing.assert_array_equal(keys, np.concatenate([first, second], axis=2))
    np.testing.assert_array_equal(values, np.concatenate([first, second], axis=2) + 1)
    rows = np.array([2, 2, 0])
    cache.reorder(rows)
    want = torch.index_select(_t(np.concatenate([first, second], axis=2)), 0, torch.from_numpy(rows)).numpy()
    np.testing.assert_array_equal(cache.to_legacy_cache()[0][0], want)
