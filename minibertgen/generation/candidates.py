"""Candidate generators of assisted decoding, under transformers' names.

``PromptLookupCandidateGenerator`` guesses the next tokens by finding the sequence's last
n-gram earlier in the sequence and proposing what followed it there (prompt lookup
decoding).  ``get_candidates(ids)`` returns (ids + guesses, None): no guesser logits, as
transformers returns them; generate(prompt_lookup_num_tokens=n) uses it.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module

__all__ = ["PromptLookupCandidateGenerator", "prompt_lookup_candidates"]


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


class PromptLookupCandidateGenerator:
    """transformers' prompt-lookup guesser (batch size 1, as assisted decoding).

    eos_token_id: guesses stop before the first eos; num_output_tokens: at most this many
    guesses; max_matching_ngram_size: longest n-gram looked up (default 2); max_length: no
    guesses once the next token is the last one allowed; logits_processor / vocab_size: a
    guess the processors forbid (score -inf) ends the guesses there.
    """

    def __init__(self, eos_token_id=None, num_output_tokens=10, max_matching_ngram_size=None, max_length=20,
                 logits_processor=None, vocab_size=None):
        max_matching_ngram_size = 2 if max_matching_ngram_size is None else max_matching_ngram_size
        for name, value in (("num_output_tokens", num_output_tokens),
                            ("max_matching_ngram_size", max_matching_ngram_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name}={value!r}: expected an integer >= 1")
        if logits_processor is not None and vocab_size is None:
            raise ValueError("logits_processor given without vocab_size: the processors are probed with one score "
                             "per vocabulary entry, so pass vocab_size")
        eos = [] if eos_token_id is None else np.asarray(
            eos_token_id.get() if hasattr(eos_token_id, "get") else eos_token_id).reshape(-1).tolist()
        self.eos_token_id, self.num_output_tokens = eos, int(num_output_tokens)
        self.max_matching_ngram_size, self.max_length = int(max_matching_ngram_size), max_length
        self.logits_processor, self.vocab_size = logits_processor, vocab_size

    def get_candidates(self, input_ids):
        """input_ids [1, cur] -> (input_ids + guesses [1, cur + k], None)."""
        xp = array_module(input_ids)
        if self.max_length == input_ids.shape[1] + 1:  # the model's own next token is the last one
            return input_ids, None
        host = np.asarray(input_ids[0].get() if hasattr(input_ids, "get") else input_ids[0])
        room = max(self.max_length - input_ids.shape[1], 0)
        found = prompt_lookup_candidates(host, min(self.num_output_tokens, room), self.max_matching_ngram_size)
        found = self._allowed(input_ids, found)
        ends = [i for i, token in enumerate(found.tolist()) if token in self.eos_token_id]
        found = found[:ends[0]] if ends else found  # guesses after an eos would be accepted past it
        if not len(found):
            return input_ids, None
        return xp.concatenate([input_ids, xp.asarray(found, dtype=input_ids.dtype)[None, :]], axis=1), None

    def _allowed(self, input_ids, found):
        """The guesses up to the first one the processors forbid (probed with flat scores)."""
        if self.logits_processor is None:
            return found
        xp = array_module(input_ids)
        ids = input_ids
        for i, token in enumerate(found.tolist()):
            scores = xp.ones((1, self.vocab_size), dtype=np.float32)
            for process in self.logits_processor:
                scores = process(ids, scores)
            value = float(scores[0, token])
            if value == -np.inf or value == np.finfo(np.float32).min:
                return found[:i]
            ids = xp.concatenate([ids, xp.asarray([[token]], dtype=ids.dtype)], axis=1)
        return found

    def update_candidate_strategy(self, input_ids, scores, num_matches):
        """Nothing to adapt (as transformers)."""
