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
from ..outputs import ModelOutput
from .logits_process import apply_processors

__all__ = ["assisted_generate", "prompt_lookup_candidates"]


def check_assisted(config, rows, assistant_model, model):
    """transformers' limits, as clear errors."""
    if config.num_beams > 1 or config.do_sample:
        raise ValueError("assisted generation (assistant_model / prompt_lookup_num_tokens) supports greedy search "
                         f"only: got num_beams={config.num_beams}, do_sample={config.do_sample}")
    if rows != 1:
        raise ValueError(f"assisted generation supports batch size 1 only (as in transformers), got {rows} rows")
    if not config.use_cache:
        raise ValueError("assisted generation needs use_cache=True")
    if config.return_dict_in_generate and (config.output_scores or config.output_logits or config.output_attentions
                                           or config.output_hidden_states):
        raise NotImplementedError("assisted generation returns sequences only in minibertgen: drop output_scores / "
                                  "output_logits / output_attentions / output_hidden_states")
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
        seen = self.cache.get_seq_length()
        inputs = dict(input_ids=ids[:, seen:], past_key_values=self.cache, use_cache=True)
        if self.encoder_states is not None:
            inputs.update(encoder_hidden_states=self.encoder_states, encoder_attention_mask=self.encoder_mask)
        else:
            xp = self.decoder.device.xp
            mask = xp.ones(ids.shape, dtype=np.int64)  # [1, cur]
            mask[:, :self.prompt_mask.shape[1]] = self.prompt_mask
            positions = mask.cumsum(axis=-1) - 1
            positions[mask == 0] = 1
            inputs.update(attention_mask=mask, position_ids=positions[:, seen:])
        return self.decoder(**inputs)["logits"]

    def keep(self, length):
        """Roll the cache back to the first ``length`` tokens (rejected guesses are forgotten)."""
        self.cache.set_seq_length(min(self.cache.get_seq_length(), length))


def prompt_lookup_candidates(ids, num_tokens, max_ngram):
    """Up to ``num_tokens`` guesses [k] for what follows ids [cur] (1-D, host): the tokens after
    the first earlier occurrence of the sequence's last n-gram, longest n first."""
    cur = len(ids)
    for n in range(min(max_ngram, cur - 1), 0, -1):
        tail = ids[cur - n:]
        for start in range(0, cur - n):
            if np.array_equal(ids[start:start + n], tail):
                follow = ids[start + n:start + n + num_tokens]
                if len(follow):
                    return follow
    return ids[:0]


def _assistant_candidates(assistant, ids, count, threshold):
    """Up to ``count`` greedy guesses [k] from the assistant, continuing ids [1, cur]; it
    stops after a guess whose probability is below ``threshold`` (transformers'
    assistant_confidence_threshold: unsure guesses are rarely accepted)."""
    xp = assistant.decoder.device.xp
    guesses = ids
    for _ in range(count):
        logits = assistant.logits(guesses)[:, -1].astype(np.float32, copy=False)  # [1, vocab]
        token = logits.argmax(axis=-1)  # [1]
        guesses = xp.concatenate([guesses, token[:, None]], axis=1)
        if threshold and float(softmax(logits, axis=-1).max()) < threshold:
            break
    return guesses[0, ids.shape[1]:]


def assisted_generate(model, assistant_model, prompt, encoder_states, encoder_mask, prompt_mask, config,
                      processors, tokens, assistant_encoder_states=None):
    """Greedy search over prompt [1, prompt_len] with guessed tokens verified in one pass each.

    Returns ids [1, length] equal to plain greedy search's; with return_dict_in_generate a
    ModelOutput with ``sequences`` (and the model's cache as ``past_key_values``).
    """
    xp = _decoder(model).device.xp
    target = _Runner(model, encoder_states, encoder_mask, prompt_mask, config.max_length)
    helper = None if assistant_model is None else _Runner(assistant_model, assistant_encoder_states, encoder_mask,
                                                          prompt_mask, config.max_length)
    eos = set(tokens["eos"])
    guesses = config.num_assistant_tokens
    ids = prompt
    while ids.shape[1] < config.max_length:
        room = config.max_length - ids.shape[1] - 1  # guesses beyond max_length are never needed
        if helper is not None:
            candidates = _assistant_candidates(helper, ids, min(guesses, room), config.assistant_confidence_threshold) \
                if room > 0 else ids[0, :0]
        else:
            found = prompt_lookup_candidates(np.asarray(ids[0].get() if hasattr(ids, "get") else ids[0]),
                                             config.prompt_lookup_num_tokens, config.max_matching_ngram_size or 2)
            candidates = xp.asarray(found[:max(room, 0)], dtype=ids.dtype)
        ids, accepted = _verify(target, ids, candidates, processors)
        target.keep(ids.shape[1] - 1)
        if helper is not None:
            helper.keep(ids.shape[1] - 1)
            if config.num_assistant_tokens_schedule == "heuristic":
                guesses = guesses + 2 if accepted == len(candidates) else max(1, guesses - 1)
        new = [int(t) for t in ids[0, ids.shape[1] - accepted - 1:].tolist()]
        if eos and any(t in eos for t in new):
            first = next(i for i, t in enumerate(new) if t in eos)
            ids = ids[:, :ids.shape[1] - len(new) + first + 1]
            break
    if not config.return_dict_in_generate:
        return ids
    return ModelOutput(sequences=ids, past_key_values=target.cache)


def _verify(target, ids, candidates, processors):
    """One forward pass over the guesses: ids [1, cur] + candidates [k] -> (ids [1, cur + n + 1], n).

    Position j's logits, processed with the ids before it, give the model's greedy token
    there; the guesses are kept while they equal it, then the model's own token follows.
    """
    xp = array_module(ids)
    k = len(candidates)
    trial = xp.concatenate([ids, candidates[None, :].astype(ids.dtype)], axis=1)  # [1, cur + k]
    logits = target.logits(trial)[:, -(k + 1):].astype(np.float32, copy=False)  # [1, k + 1, vocab]
    cur = ids.shape[1]
    for j in range(k + 1):
        scores = apply_processors(processors, trial[:, :cur + j], logits[:, j])
        choice = scores.argmax(axis=-1)  # [1]
        if j == k or int(choice[0]) != int(candidates[j]):
            out = xp.concatenate([trial[:, :cur + j], choice[:, None].astype(ids.dtype)], axis=1)
            return out, j
    raise AssertionError("unreachable")  # pragma: no cover
