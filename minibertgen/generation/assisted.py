"""Assisted (speculative) greedy decoding: ``generate(assistant_model=small)`` and
``generate(prompt_lookup_num_tokens=n)``.

A decoder step on one token is memory-bound: the weights are read once per step whatever
the number of tokens.  So a cheap guesser proposes K tokens, the model checks all K in
ONE forward pass over them (reading its weights once), and keeps the longest prefix it
agrees with, plus its own next token.  Every kept token is the model's own greedy choice
(its processed scores, position by position), so the ids equal plain greedy search's
exactly -- the guesses only change the speed, as transformers guarantees.

Guessers: another (smaller) model of the same vocabulary, run greedily for K steps with
its own cache (K = num_assistant_tokens; "heuristic" schedule: +2 after a fully accepted
round, -1 otherwise, as transformers; it stops early after a guess it gives less than
assistant_confidence_threshold probability, default 0.4), or prompt lookup: the tokens that followed the
first occurrence of the sequence's final n-gram earlier in the sequence (n from
max_matching_ngram_size, default 2, down to 1; transformers' rule).

Both caches are rolled back after each round to the accepted length
(``cache.set_seq_length``: later writes overwrite the rejected positions).  As in
transformers, batch size 1 and greedy search only.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..cache_surface import EncoderDecoderCache
from ..ops import softmax
from .candidates import PromptLookupCandidateGenerator, prompt_lookup_candidates  # noqa: F401 (re-exported)
from .logits_process import apply_processors
from .outputs import generate_output_class
from .search import sample_tokens

__all__ = ["assisted_generate", "prompt_lookup_candidates"]


def check_assisted(config, rows, assistant_model, model):
    """transformers' limits, as clear errors."""
    if config.num_beams > 1:
        raise ValueError("assisted generation (assistant_model / prompt_lookup_num_tokens) supports greedy search "
                         f"and sampling only (as transformers): got num_beams={config.num_beams}")
    if rows != 1:
        raise ValueError(f"assisted generation supports batch size 1 only (as in transformers), got {rows} rows")
    if not config.use_cache:
        raise ValueError("assisted generation needs use_cache=True")
    if assistant_model is not None:
        if config.prompt_lookup_num_tokens is not None:
            raise ValueError("pass either assistant_model or prompt_lookup_num_tokens, not both")
        _check_assistant(assistant_model, config.max_length)
        ours, theirs = _decoder(model).config.vocab_size, _decoder(assistant_model).config.vocab_size
        if ours != theirs:
            raise ValueError(f"assistant_model has vocab_size={theirs}, the model {ours}: the assistant must share "
                             "the model's vocabulary")
        if bool(getattr(assistant_model.config, "is_encoder_decoder", False)) != \
                bool(getattr(model.config, "is_encoder_decoder", False)):
            raise ValueError("assistant_model must be the same kind of model (encoder-decoder or decoder alone)")
    elif isinstance(config.prompt_lookup_num_tokens, bool) or not isinstance(config.prompt_lookup_num_tokens, int) \
            or config.prompt_lookup_num_tokens < 1:
        raise ValueError(f"prompt_lookup_num_tokens={config.prompt_lookup_num_tokens!r}: expected an integer >= 1")


def _check_assistant(assistant_model, max_length: int) -> None:
    """An assistant is a minibertgen model whose decoder has a position for every token of the run."""
    if not (hasattr(assistant_model, "config") and hasattr(assistant_model, "generate")):
        raise TypeError(f"assistant_model={assistant_model!r:.60}: expected a minibertgen model (a smaller model "
                        f"sharing the vocabulary, e.g. BertGenerationDecoder.from_pretrained(...)), got "
                        f"{type(assistant_model).__name__}")
    positions = _decoder(assistant_model).config.max_position_embeddings
    if positions < max_length:
        raise ValueError(f"assistant_model ({type(assistant_model).__name__}) has max_position_embeddings={positions}, "
                         f"fewer than max_length={max_length} that this generation can reach: the assistant has no "
                         "position for the later tokens; lower max_new_tokens / max_length or use an assistant with "
                         "more positions")


def _decoder(model):
    return model.decoder if getattr(model.config, "is_encoder_decoder", False) else model


class _Runner:
    """One model's decoder with its own cache, run on any number of new tokens at a time."""

    def __init__(self, model, encoder_states, encoder_mask, prompt_mask, capacity):
        self.decoder = _decoder(model)
        self.cache = EncoderDecoderCache(self.decoder.config.num_hidden_layers, capacity=capacity)
        self.encoder_states, self.encoder_mask = encoder_states, encoder_mask
        self.prompt_mask = prompt_mask  # decoder alone: [1, prompt] (ones after it)

    def logits(self, ids):
        """Feed the tokens of ids [1, cur] the cache lacks; logits [1, new, vocab] for them."""
        return self.forward(ids)["logits"]

    def forward(self, ids, record=()):
        """The decoder's outputs for the tokens of ids [1, cur] the cache lacks (``record``:
        "attentions", "hidden_states" ... to return as well)."""
        seen = self.cache.get_seq_length()
        inputs = dict(input_ids=ids[:, seen:], past_key_values=self.cache, use_cache=True,
                      output_attentions="attentions" in record, output_hidden_states="hidden_states" in record)
        if self.encoder_states is not None:
            inputs.update(encoder_hidden_states=self.encoder_states, encoder_attention_mask=self.encoder_mask)
        else:
            xp = self.decoder.device.xp
            mask = xp.ones(ids.shape, dtype=np.int64)  # [1, cur]
            mask[:, :self.prompt_mask.shape[1]] = self.prompt_mask
            positions = mask.cumsum(axis=-1) - 1
            positions[mask == 0] = 1
            inputs.update(attention_mask=mask, position_ids=positions[:, seen:])
        return self.decoder(**inputs)

    def keep(self, length):
        """Roll the cache back to the first ``length`` tokens (rejected guesses are forgotten)."""
        self.cache.set_seq_length(min(self.cache.get_seq_length(), length))


def _assistant_candidates(assistant, ids, count, config, processors, eos, rng):
    """Up to ``count`` guesses from the assistant continuing ids [1, cur], as transformers' assistant
    makes them: its processed scores, greedy or sampled like the main search, stopping after
    eos or after a guess it gives less than assistant_confidence_threshold probability.
    Returns (guesses [k], their scores [k, vocab] or None)."""
    xp = assistant.decoder.device.xp
    guesses, all_scores = ids, []
    for _ in range(count):
        logits = assistant.logits(guesses)[:, -1].astype(np.float32, copy=False)  # [1, vocab]
        scores = apply_processors(processors, guesses, logits)
        token = sample_tokens(scores, rng) if rng is not None else scores.argmax(axis=-1)  # [1]
        guesses = xp.concatenate([guesses, token[:, None].astype(ids.dtype)], axis=1)
        all_scores.append(scores)
        threshold = config.assistant_confidence_threshold
        if int(token[0]) in eos or (threshold and float(softmax(scores, axis=-1)[0, int(token[0])]) < threshold):
            break
    return guesses[0, ids.shape[1]:], (xp.concatenate(all_scores, axis=0) if all_scores else None)


def _lookup_candidates(ids, room, config, tokens):
    generator = PromptLookupCandidateGenerator(tokens["eos"], config.prompt_lookup_num_tokens,
                                               config.max_matching_ngram_size, config.max_length)
    return generator.get_candidates(ids)[0][0, ids.shape[1]:][:max(room, 0)], None


def assisted_generate(model, assistant_model, prompt, encoder_states, encoder_mask, prompt_mask, config,
                      processors, tokens, assistant_encoder_states=None, rng=None):
    """Greedy search or sampling (``rng``) over prompt [1, prompt_len], guessed tokens verified
    in one pass each.

    Returns ids [1, length] (greedy: equal to plain greedy search's); with
    return_dict_in_generate, transformers' Generate*Output with what was asked for.
    """
    target = _Runner(model, encoder_states, encoder_mask, prompt_mask, config.max_length)
    helper = None if assistant_model is None else _Runner(assistant_model, assistant_encoder_states, encoder_mask,
                                                          prompt_mask, config.max_length)
    kept = _Kept(config, encoder_states is not None)
    eos = set(tokens["eos"])
    guesses = config.num_assistant_tokens
    ids = prompt
    while ids.shape[1] < config.max_length:
        room = config.max_length - ids.shape[1] - 1  # guesses beyond max_length are never needed
        if helper is not None:
            candidates, candidate_scores = _assistant_candidates(helper, ids, min(guesses, room), config, processors,
                                                                 eos, rng) if room > 0 else (ids[0, :0], None)
        else:
            candidates, candidate_scores = _lookup_candidates(ids, room, config, tokens)
        cur = ids.shape[1]
        ids, accepted, out = _verify(target, ids, candidates, candidate_scores, processors, rng, kept.record)
        target.keep(ids.shape[1] - 1)
        if helper is not None:
            helper.keep(ids.shape[1] - 1)
            if config.num_assistant_tokens_schedule == "heuristic":
                guesses = guesses + 2 if accepted == len(candidates) else max(1, guesses - 1)
        new = [int(t) for t in ids[0, cur:].tolist()]
        ends = [i for i, t in enumerate(new) if t in eos]
        if ends:
            ids = ids[:, :cur + ends[0] + 1]
        kept.add(out, cur, ids.shape[1] - cur)
        if ends:
            break
    if not config.return_dict_in_generate:
        return ids
    return generate_output_class(encoder_states is not None, False)(sequences=ids, past_key_values=target.cache,
                                                                    **kept.fields())


def _verify(target, ids, candidates, candidate_scores, processors, rng, record):
    """One forward pass over the guesses: ids [1, cur] + candidates [k] -> (ids [1, cur + n + 1], n,
    the forward's outputs plus "scores" / "raw" [k + 1, vocab]).

    Position j's logits, processed with the ids before it, give the model's token there
    (greedy, or sampled); the guesses are kept while they equal it, then the model's own
    token follows.  Sampling with the assistant's scores accepts by speculative sampling.
    """
    xp = array_module(ids)
    k, cur = len(candidates), ids.shape[1]
    trial = xp.concatenate([ids, candidates[None, :].astype(ids.dtype)], axis=1)  # [1, cur + k]
    out = target.forward(trial, record)
    raw = out["logits"][0, -(k + 1):].astype(np.float32, copy=False)  # [k + 1, vocab]
    scores = xp.concatenate([apply_processors(processors, trial[:, :cur + j], raw[j:j + 1])
                             for j in range(k + 1)], axis=0)  # [k + 1, vocab]
    if rng is not None and candidate_scores is not None:
        n, token = _speculative(scores, candidate_scores, candidates, rng)
    else:
        chosen = sample_tokens(scores, rng) if rng is not None else scores.argmax(axis=-1)  # [k + 1]
        same = (chosen[:k] == candidates).tolist()
        n = same.index(False) if False in same else k
        token = chosen[n:n + 1]
    new = xp.concatenate([trial[:, :cur + n], token[None, :].astype(ids.dtype)], axis=1)
    return new, n, {**out, "scores": scores, "raw": raw}


def _speculative(scores, candidate_scores, candidates, rng):
    """Speculative sampling (Leviathan et al. 2023, algorithm 1): keep guess i with probability
    min(1, p_i / q_i) (p the model's, q the assistant's), then draw the next token from
    max(p - q, 0) renormalised after a rejection, from p after all were kept."""
    xp = array_module(scores)
    k = len(candidates)
    p, q = softmax(scores, axis=-1), softmax(candidate_scores, axis=-1)  # [k + 1, vocab], [k, vocab]
    rows = xp.arange(k)
    ratio = p[rows, candidates] / q[rows, candidates]  # [k]
    kept = (xp.asarray(rng.random(k), dtype=ratio.dtype) <= ratio).tolist()
    n = kept.index(False) if False in kept else k
    target = p[n] if n == k else xp.maximum(p[n] - q[n], 0)  # [vocab]
    with np.errstate(divide="ignore"):
        token = sample_tokens(xp.log(target / target.sum())[None, :], rng)  # [1]
    return n, token


class _Kept:
    """What return_dict_in_generate keeps, one entry per generated token (as transformers'
    assisted decoding splits each verification pass; the first entry covers the prompt)."""

    def __init__(self, config, seq2seq):
        on = config.return_dict_in_generate
        self.seq2seq, self.first = seq2seq, True
        wanted = (("scores", on and config.output_scores), ("logits", on and config.output_logits))
        self.names = [name for name, asked in wanted if asked]
        self.record = []
        if on and config.output_attentions:
            self.record += ["attentions", "cross_attentions"] if seq2seq else ["attentions"]
        if on and config.output_hidden_states:
            self.record.append("hidden_states")
        self.steps = {name: [] for name in self.names + self.record}

    def add(self, out, cur, added):
        for name, source in (("scores", "scores"), ("logits", "raw")):
            if name in self.steps:
                self.steps[name] += [out[source][i:i + 1] for i in range(added)]  # each [1, vocab]
        for name in self.record:
            self.steps[name] += _split(out[name], cur, added, name == "attentions", self.first)
        self.first = False

    def fields(self):
        found = {name: tuple(steps) for name, steps in self.steps.items()}
        prefix = "decoder_" if self.seq2seq else ""
        return {(prefix + name if name in ("attentions", "hidden_states") else name): value
                for name, value in found.items()}


def _split(layers, cur, added, self_attention, first):
    """transformers' _split_model_outputs: one tuple over layers per generated token.  The first
    pass's first entry covers the prompt (queries and self-attention keys cut at cur); the
    rest take query i (and keys up to cur + i) in the order the pass computed them."""
    steps = []
    if first:
        steps.append(tuple(layer[..., :cur, :cur if self_attention else layer.shape[-1]] for layer in layers))
        cur, added = cur + 1, added - (cur + 1)
    for i in range(added):
        steps.append(tuple(layer[..., i:i + 1, :cur + i if self_attention else layer.shape[-1]] for layer in layers))
    return steps
