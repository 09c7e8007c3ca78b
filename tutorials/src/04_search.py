# %% [markdown]
# # 4. Search: greedy, beam search and sampling
#
# **What you will learn**
#
# - that a decoder gives a probability distribution for the next token, and that
#   *search* is the separate question of which sequence to pick;
# - greedy search, and where it goes wrong;
# - beam search, written by hand, drawn as a tree, and checked against `generate()`;
# - what `length_penalty`, `no_repeat_ngram_size` and `temperature` do, side by side.
#
# Everything runs on the small bert2bert trained on the toy task of notebook 3:
# `copy w1 w2 …` and `reverse w1 w2 …` (trained on 2 to 7 words).

# %%
import json
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb
from minibertgen import ops

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
np.set_printoptions(precision=3, suppress=True, linewidth=100)
NOTEBOOK_START = time.perf_counter()

TOY = Path("..") / "tests" / "fixtures" / "generation" / "toy_bert2bert"
toy = mb.EncoderDecoderModel.from_pretrained(TOY)
vocab = json.loads((TOY / "vocab.json").read_text())
EOS, START = vocab.index("</s>"), toy.config.decoder_start_token_id

def encode(text):
    return np.array([[vocab.index(w) for w in text.split()] + [EOS]])

def words(ids):
    return " ".join(vocab[i] for i in ids if i != 0)

# %% [markdown]
# ## 1. Greedy search and its weak spot
#
# Greedy search takes the most probable token at every step. Inside the training
# distribution the toy model is nearly always right. Give it 9 words — longer than
# anything it saw — and it starts to hesitate. `output_scores=True` with
# `return_dict_in_generate=True` returns the scores of every step, so we can see where.

# %%
easy = "copy sun moon tree owl"
hard = "copy hat queen lamp fish zoo moon kite ink pig"
for text in (easy, hard):
    print(f"{text!r:52} -> {words(toy.generate(encode(text), max_new_tokens=14)[0][1:])!r}")

out = toy.generate(encode(hard), max_new_tokens=14, output_scores=True, return_dict_in_generate=True)
probs = np.stack([ops.softmax(s[0]) for s in out.scores])          # [steps, vocab]
fig, ax = plt.subplots(figsize=(10, 3.2))
ax.imshow(probs, cmap="Greys", vmin=0, vmax=1, aspect="auto")
ax.set_xticks(range(len(vocab)), vocab, rotation=70)
ax.set_yticks(range(len(probs)), [f"step {t}: {vocab[i]}" for t, i in enumerate(out.sequences[0][1:])])
ax.set_title(f"next-token probabilities, greedy search on {hard!r}")
fig.tight_layout()
plt.show()
for t, p in enumerate(probs):
    top = np.argsort(-p)[:2]
    print(f"step {t}: {vocab[top[0]]:>6} {p[top[0]]:.2f}   runner-up {vocab[top[1]]:>6} {p[top[1]]:.2f}")

# %% [markdown]
# Look at the steps where the runner-up is close: greedy commits to the top token and
# never reconsiders, although the other choice may have led to a more probable sentence
# overall. Keeping several candidates alive is what beam search does.

# %% [markdown]
# ## 2. Beam search, by hand
#
# Keep the `beams` best partial sequences ("hypotheses"), scored by their summed
# log-probability. Each step:
#
# 1. extend every live hypothesis by every token: `beams × vocab` candidates;
# 2. keep the `2 × beams` best candidates (enough that `beams` survive even if all the
#    best ones end);
# 3. a candidate ending in `</s>` among the top `beams` moves to the *finished* list, with
#    its score divided by `length ** length_penalty`; the best `beams` that did not end
#    stay live;
# 4. stop when `beams` hypotheses are finished and the best live one can no longer beat
#    the worst finished one (or at the length limit).
#
# This follows the rules of `minibertgen.generation.search.beam_search` (and
# transformers), written for one sentence and without a cache, and records every
# candidate so that we can draw the search.

# %%
def beam_search_by_hand(text, beams=3, length_penalty=1.0, max_new_tokens=14):
    source = encode(text)
    encoder_states = toy.encoder(input_ids=source).last_hidden_state       # [1, src, hidden]
    live = [((START,), 0.0)]                                               # (tokens, summed log-prob)
    finished, history = [], []
    for step in range(max_new_tokens):
        ids = np.array([tokens for tokens, _ in live])                     # [live, cur_len]
        states = np.repeat(encoder_states, len(live), axis=0)
        logits = toy(encoder_outputs=(states,), decoder_input_ids=ids).logits[:, -1]   # [live, vocab]
        totals = np.array([s for _, s in live])[:, None] + ops.log_softmax(logits)      # [live, vocab]
        order = np.argsort(-totals, axis=None, kind="stable")[:2 * beams]
        new_live, record = [], []
        for rank, flat in enumerate(order):
            parent, token = divmod(int(flat), totals.shape[1])
            tokens, score = live[parent][0] + (token,), float(totals[parent, token])
            ends = token == EOS or step == max_new_tokens - 1
            if ends:
                status = "finished" if rank < beams else "dropped"
                if rank < beams:
                    finished.append((tokens, score / (len(tokens) - 1) ** length_penalty))
            elif len(new_live) < beams:
                new_live.append((tokens, score))
                status = "live"
            else:
                status = "dropped"
            record.append((parent, token, score, status))
        history.append(record)
        finished = sorted(finished, key=lambda f: -f[1])[:beams]
        live = new_live
        best_possible = live[0][1] / (len(live[0][0]) - 1) ** length_penalty if live else -np.inf
        if not live or (len(finished) == beams and best_possible <= finished[-1][1]):
            break
    return finished, history

finished, history = beam_search_by_hand(hard, beams=3)
lib = toy.generate(encode(hard), max_new_tokens=14, num_beams=3, num_return_sequences=3,
                   output_scores=True, return_dict_in_generate=True)
print("by hand:")
for tokens, score in finished:
    print(f"  {score:8.4f}  {words(tokens[1:])}")
print("generate(num_beams=3, num_return_sequences=3):")
for seq, score in zip(lib.sequences, lib.sequences_scores):
    print(f"  {float(score):8.4f}  {words(seq[1:])}")
same = [words(t[1:]) for t, _ in finished] == [words(s[1:]) for s in lib.sequences]
score_diff = max(abs(s - float(l)) for (_, s), l in zip(finished, lib.sequences_scores))
print("same hypotheses in the same order:", same, "| max |score diff|:", f"{score_diff:.1e}")
assert same and score_diff <= 1e-4  # a failed comparison stops the notebook
print("greedy gave:", words(out.sequences[0][1:]))

# %% [markdown]
# ## 3. The search tree
#
# Every column is a step; every dot a candidate that made the top `2 × beams`. Blue:
# kept alive; green: finished (ended with `</s>`); grey: dropped. Lines join a candidate
# to the hypothesis it extends; the numbers are summed log-probabilities.

# %%
def draw_tree(history, beams, title):
    fig, ax = plt.subplots(figsize=(12, 4.6))
    colours = {"live": "tab:blue", "finished": "tab:green", "dropped": "lightgrey"}
    parent_y = {0: 0.0}                                         # live index -> y of its dot
    for step, record in enumerate(history):
        live_y, live_index = {}, 0
        for rank, (parent, token, score, status) in enumerate(record):
            y = -rank
            ax.plot([step, step + 1], [parent_y[parent], y], color=colours[status], lw=1, zorder=1)
            ax.scatter(step + 1, y, color=colours[status], s=30, zorder=2)
            ax.annotate(f"{vocab[token]}\n{score:.1f}", (step + 1, y), textcoords="offset points",
                        xytext=(3, 2), fontsize=6.5, color="k" if status != "dropped" else "grey")
            if status == "live":
                live_y[live_index] = y
                live_index += 1
        parent_y = live_y
    ax.scatter(0, 0, color="k", s=30)
    ax.annotate("<s>", (0, 0), xytext=(3, 2), textcoords="offset points", fontsize=7)
    ax.set(xlabel="step", yticks=[], title=title, xlim=(-0.3, len(history) + 0.8))
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    fig.tight_layout()
    plt.show()

draw_tree(history, 3, f"beam search, 3 beams: {hard!r}")

# %% [markdown]
# Follow the blue paths at the steps where greedy hesitated (the printed table above):
# the beam keeps the runner-up alive, and the final ranking compares whole sentences.
# Compare the best finished hypothesis with the greedy output printed above.

# %% [markdown]
# ## 4. Length penalty
#
# Summed log-probabilities favour short outputs: every extra token adds a negative
# number. Beam search therefore divides a finished hypothesis's score by
# `length ** length_penalty`. With 0 there is no normalisation, with 1 it is the average
# log-probability per token, and values above 1 favour longer outputs more strongly.
#
# The toy model is very sure about *where* to stop, so its beams usually all end at the
# same length and the penalty cannot reorder them. To see it at work we score two
# candidate outputs of different lengths ourselves by teacher forcing: the model's own
# answer and the correct, longer copy.

# %%
def sequence_logprob(text, output_words):
    target = [START] + [vocab.index(w) for w in output_words.split()] + [EOS]
    logits = toy(input_ids=encode(text), decoder_input_ids=np.array([target[:-1]])).logits[0]   # [len, vocab]
    logp = ops.log_softmax(logits)[np.arange(len(target) - 1), target[1:]]
    return float(logp.sum()), len(target) - 1

best_beam = words(lib.sequences[0][1:])                      # ends with "</s>"
model_answer = best_beam.replace(" </s>", "")
correct = " ".join(hard.split()[1:])
candidates = {"model's answer": model_answer, "correct copy": correct}
scored = {name: sequence_logprob(hard, w) for name, w in candidates.items()}
for name, (lp_sum, length) in scored.items():
    print(f"{name:15} {length:2d} tokens, summed log-prob {lp_sum:7.3f}: {candidates[name]}")

penalties = np.linspace(-1, 14, 151)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for name, (lp_sum, length) in scored.items():
    ax.plot(penalties, [lp_sum / length ** p for p in penalties], label=f"{name} ({length} tokens)")
ax.set(xlabel="length_penalty", ylabel="score / length ** length_penalty", title="how the penalty ranks two outputs")
ax.legend()
fig.tight_layout()
plt.show()
wins = [p for p in penalties if scored["correct copy"][0] / scored["correct copy"][1] ** p
        > scored["model's answer"][0] / scored["model's answer"][1] ** p]
print("the longer output ranks first for length_penalty >=", f"{min(wins):.1f}" if wins else "none in the range")

# %% [markdown]
# Ranking is only half of it: beam search must also *find* the long hypothesis before
# it can rank it first. The cell runs `generate()` with penalties on both sides of the
# crossing point printed above.

# %%
for penalty in (0.0, 1.0, float(min(wins)) + 0.5 if wins else 4.0):
    o = toy.generate(encode(hard), max_new_tokens=14, num_beams=4, length_penalty=penalty)
    print(f"length_penalty={penalty:4.1f}: {words(o[0][1:])}")

# %% [markdown]
# ## 5. No repeated n-grams
#
# `no_repeat_ngram_size=n` forbids any n-gram (run of n tokens) from appearing twice in
# the output: before each step, every token that would complete an n-gram already
# present gets probability 0. It is a blunt tool against loops in summaries — and on a
# task whose right answer repeats words, it breaks the answer.

# %%
repeat = "copy cat cat cat dog"
for n in (0, 1, 2, 3):
    o = toy.generate(encode(repeat), max_new_tokens=12, no_repeat_ngram_size=n)
    print(f"no_repeat_ngram_size={n}: {words(o[0][1:])}")

# %% [markdown]
# ## 6. Sampling and temperature
#
# Instead of taking the best token, *sample* one from the distribution
# (`do_sample=True`). The temperature divides the logits before the softmax: below 1 the
# distribution gets sharper (closer to greedy), above 1 flatter (more surprising
# tokens). The plot shows one step of the hard example at several temperatures; the
# table counts how many of 30 samples equal the best beam-search output (the most
# probable sentence we know of) and how many distinct outputs appear.

# %%
temperatures = (0.5, 1.0, 2.0)
step = int(np.argmin(np.sort(probs, axis=1)[:, -1]))            # the greedy step with the least sure top token
logits = np.log(probs[step])
fig, axes = plt.subplots(1, len(temperatures), figsize=(11, 2.8), sharey=True)
for ax, temp in zip(axes, temperatures):
    p = ops.softmax(logits / temp)
    top = np.argsort(-p)[:6]
    ax.bar([vocab[i] for i in top], p[top])
    ax.set_title(f"temperature {temp}")
    ax.tick_params(axis="x", rotation=45)
axes[0].set_ylabel(f"P(token) at step {step}")
fig.tight_layout()
plt.show()

rng = np.random.default_rng(0)
for temp in temperatures:
    samples = [words(toy.generate(encode(hard), max_new_tokens=14, do_sample=True, temperature=temp,
                                  top_k=0, seed=rng)[0][1:]) for _ in range(30)]
    right = sum(s == best_beam for s in samples)
    print(f"temperature {temp}: {right}/30 equal the beam-search output, {len(set(samples))} distinct outputs; "
          f"e.g. {samples[0]!r}")

# %% [markdown]
# ## 7. Checking against transformers
#
# Greedy and beam search are deterministic, so the token ids must be identical to
# transformers' `generate()` on the same model files.

# %%
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by transformers
try:
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
except ImportError as exc:
    print(f"[reference skipped] transformers/torch not importable ({exc})")
else:
    ref = transformers.EncoderDecoderModel.from_pretrained(str(TOY)).eval()
    settings = [dict(), dict(num_beams=3), dict(num_beams=4, length_penalty=2.0), dict(no_repeat_ngram_size=2)]
    for text in (easy, hard, repeat):
        for kw in settings:
            ours = toy.generate(encode(text), max_new_tokens=14, **kw)
            with torch.no_grad():
                theirs = ref.generate(torch.tensor(encode(text)), max_new_tokens=14, **kw).numpy()
            print(f"{text[:24]!r:27} {str(kw):40} identical ids: {np.array_equal(ours, theirs)}")
            assert np.array_equal(ours, theirs)

# %% [markdown]
# ## Summary
#
# - Greedy search is fast but commits early; beam search keeps `num_beams` hypotheses and
#   compares whole sequences.
# - `length_penalty` changes how finished hypotheses of different lengths are ranked;
#   it cannot help a hypothesis the beam never found.
# - `no_repeat_ngram_size` and `temperature` reshape the next-token scores before the
#   choice (`minibertgen.generation.logits_process`).
#
# ## Exercises
#
# 1. Run `beam_search_by_hand` with 1 beam. Is it the same as greedy search? Why do 2
#    beams need 4 candidates per step?
# 2. Draw the tree for a `reverse` input of 9 words with 2, 3 and 5 beams. Which beam
#    size first finds the correct answer, if any?
# 3. Try `top_k=3` and `top_p=0.9` with temperature 2.0. How do the two counts in the
#    sampling table change?
# 4. `num_beams=4, do_sample=True` is *beam sampling*. How does
#    `minibertgen.generation.search.beam_search` draw its candidates in that case?
# 5. Give `repetition_penalty=1.5` to the `copy cat cat cat dog` example and compare it
#    with `no_repeat_ngram_size`.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
