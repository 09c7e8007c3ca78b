"""attention_backward.py against autograd through transformers' own BertGenerationSelfAttention."""
import math

import numpy as np
import pytest

from conftest import require_module
from grad_helpers import TOLERANCE, assert_close_grad, upstream

from minibertgen import attention as A
from minibertgen.attention_backward import cross_attention_backward, self_attention_backward

torch = require_module("torch")
modeling = require_module("transformers.models.bert_generation.modeling_bert_generation")
BertGenerationConfig = require_module("transformers").BertGenerationConfig

HIDDEN, HEADS, MAX_POS = 16, 4, 12
DTYPES = [np.float64, np.float32]


def torch_attention(mode, dtype, seed, dropout=0.0):
    torch.manual_seed(seed)
    config = BertGenerationConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, max_position_embeddings=MAX_POS,
                                  position_embedding_type=mode, attention_probs_dropout_prob=dropout)
    module = modeling.BertGenerationSelfAttention(config, position_embedding_type=mode)
    for param in module.parameters():  # larger than the default init, so the softmax is not flat
        torch.nn.init.normal_(param, std=0.5)
    return module.to(torch.float64 if dtype == np.float64 else torch.float32).eval()


def params_of(module):
    """The module's weights as our parameter tree (numpy copies)."""
    tree = {}
    for name, tensor in module.state_dict().items():
        *path, last = name.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = tensor.detach().numpy().copy()
    return tree


def project(p, x):
    return A.split_heads(x @ p["weight"].T + p["bias"], HEADS)  # [batch, heads, len, head_dim]


def forward_record(p, hidden, mask, *, encoder_states=None, head_mask=None, mode="absolute", dropout_mask=None):
    """The forward of attention.py written out here to fill the record the backward reads."""
    source = hidden if encoder_states is None else encoder_states
    q, k, v = project(p["query"], hidden), project(p["key"], source), project(p["value"], source)
    scores = q @ k.transpose(0, 1, 3, 2)
    relative = None
    if mode != "absolute":
        relative = (p["distance_embedding"]["weight"], np.arange(hidden.shape[1]), mode)
        scores = scores + A.relative_position_scores(q, k, *relative)
    scores = scores / math.sqrt(q.shape[-1]) + (0 if mask is None else mask)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return {"input": hidden, "encoder_states": encoder_states, "query": q, "key": k, "value": v,
            "probs": probs, "dropout_mask": dropout_mask, "head_mask": head_mask, "relative": relative}


def compare_grads(ours, module, dtype):
    """Every weight's gradient against torch's.  The key bias's true gradient is exactly 0
    (softmax ignores a shift shared by all keys; relative_key_query breaks that): there
    both are rounding noise, so both must be that small next to the other gradients."""
    total = np.sqrt(sum(float((t.grad.double() ** 2).sum()) for t in module.parameters()))
    for name, tensor in module.named_parameters():
        node = ours
        for part in name.split("."):
            node = node[part]
        reference = tensor.grad.numpy()
        if np.linalg.norm(reference) <= 1e-6 * total:  # zero but for rounding
            assert np.linalg.norm(node) <= TOLERANCE[np.dtype(dtype).type] * total, name
        else:
            assert_close_grad(node, reference, dtype, name)


def padding(dtype, batch=2, keys=6):
    keep = np.ones((batch, keys), dtype=dtype)
    keep[1, 4:] = 0
    return keep


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["absolute", "relative_key", "relative_key_query"])
@pytest.mark.parametrize("masking", ["padding", "causal", "head_mask", "fully_masked_row"])
def test_self_attention_backward(dtype, mode, masking):
    rng = np.random.default_rng(1)
    module = torch_attention(mode, dtype, seed=3)
    p = params_of(module)
    hidden = rng.standard_normal((2, 6, HIDDEN)).astype(dtype)
    keep = padding(dtype)
    head_mask = None
    if masking == "causal":
        mask = A.causal_mask(keep, 6, dtype)  # [batch, 1, 6, 6]
    else:
        mask = A.padding_mask(keep, dtype)  # [batch, 1, 1, 6]
    if masking == "fully_masked_row":
        keep_rows = np.ones((2, 6, 6), dtype=dtype)
        keep_rows[0, 2, :] = 0  # query 2 of row 0 may see nothing
        mask = A.padding_mask(keep_rows, dtype)  # [batch, 1, 6, 6]
    if masking == "head_mask":
        head_mask = np.array([1.0, 0.0, 1.0, 0.5], dtype=dtype)[:, None, None]  # [heads, 1, 1]
    t_hidden = torch.tensor(hidden, requires_grad=True)
    context, _ = module(t_hidden, attention_mask=torch.tensor(mask),
                        head_mask=None if head_mask is None else torch.tensor(head_mask))
    dcontext = upstream(rng, context.shape, dtype)
    context.backward(torch.tensor(dcontext))

    record = forward_record(p, hidden, mask, head_mask=head_mask, mode=mode)
    dhidden, grads = self_attention_backward(p, record, dcontext, HEADS)
    assert_close_grad(dhidden, t_hidden.grad.numpy(), dtype, "dhidden")
    compare_grads(grads, module, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_attention_backward_reaches_the_encoder_states(dtype):
    rng = np.random.default_rng(2)
    module = torch_attention("absolute", dtype, seed=4)
    p = params_of(module)
    hidden = rng.standard_normal((2, 5, HIDDEN)).astype(dtype)
    encoder_states = rng.standard_normal((2, 6, HIDDEN)).astype(dtype)
    mask = A.padding_mask(padding(dtype), dtype)  # [batch, 1, 1, src]
    head_mask = np.array([1.0, 1.0, 0.0, 1.0], dtype=dtype)[:, None, None]
    t_hidden = torch.tensor(hidden, requires_grad=True)
    t_encoder = torch.tensor(encoder_states, requires_grad=True)
    context, _ = module(t_hidden, attention_mask=torch.tensor(mask), head_mask=torch.tensor(head_mask),
                        encoder_hidden_states=t_encoder)
    dcontext = upstream(rng, context.shape, dtype)
    context.backward(torch.tensor(dcontext))

    record = forward_record(p, hidden, mask, encoder_states=encoder_states, head_mask=head_mask)
    dhidden, dencoder, grads = cross_attention_backward(p, record, dcontext, HEADS)
    assert_close_grad(dhidden, t_hidden.grad.numpy(), dtype, "dhidden")
    assert_close_grad(dencoder, t_encoder.grad.numpy(), dtype, "dencoder_states")
    compare_grads(grads, module, dtype)


def test_attention_dropout_backward_with_torchs_mask():
    dtype, p_drop, seed = np.float64, 0.2, 11
    rng = np.random.default_rng(3)
    module = torch_attention("relative_key", dtype, seed=5, dropout=p_drop).train()
    p = params_of(module)
    hidden = rng.standard_normal((2, 6, HIDDEN))
    mask = A.padding_mask(padding(dtype), dtype)
    torch.manual_seed(seed)
    drop = torch.nn.functional.dropout(torch.ones((2, HEADS, 6, 6), dtype=torch.float64), p_drop).numpy()
    torch.manual_seed(seed)  # the module draws the same mask for its [2, heads, 6, 6] probabilities
    t_hidden = torch.tensor(hidden, requires_grad=True)
    context, _ = module(t_hidden, attention_mask=torch.tensor(mask))
    dcontext = upstream(rng, context.shape, dtype)
    context.backward(torch.tensor(dcontext))

    record = forward_record(p, hidden, mask, mode="relative_key", dropout_mask=drop)
    dhidden, grads = self_attention_backward(p, record, dcontext, HEADS)
    assert_close_grad(dhidden, t_hidden.grad.numpy(), dtype, "dhidden")
    compare_grads(grads, module, dtype)
