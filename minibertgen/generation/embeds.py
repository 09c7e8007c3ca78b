"""generate(inputs_embeds=...) for a decoder used alone: the prompt given as embeddings.

As in transformers 4.57, the returned ids are the generated tokens only (the prompt had
no ids), and max_length / min_length count generated tokens (max_new_tokens is the
usual way to say how many).  Given ``input_ids`` as well (one id per embedded position),
those ids are the prompt as usual -- returned, counted, seen by the processors -- and the
embeddings only replace their word embeddings in the first step (transformers' rule).
Internally the search runs over a buffer whose first P columns are placeholders for the
P embedded positions (or the ids), so that the cache and positions line up; the first
step feeds the embeddings instead, and without ids every logits processor sees only the
generated columns, as transformers' processors do.
"""
from __future__ import annotations

import numpy as np

from ..inputs import as_embeds, as_mask
from .prepare import prepare_prompt

__all__ = ["EmbedsPrompt"]


class EmbedsPrompt:
    """The embedded prompt of one generate() call: embeds [batch, P, hidden], mask [batch, P]."""

    def __init__(self, model, inputs_embeds, attention_mask, input_ids, config, tokens=None):
        if model.config.is_encoder_decoder:
            raise NotImplementedError("inputs_embeds for an EncoderDecoderModel's generate() is not supported: "
                                      "pass input_ids or encoder_outputs")
        if not config.use_cache:
            raise NotImplementedError("generate(inputs_embeds=..., use_cache=False) is not supported: without a "
                                      "cache every step would need the prompt's ids; use use_cache=True")
        self.embeds = as_embeds(inputs_embeds, "inputs_embeds", model.device, model.dtype, model.config.hidden_size)
        batch, self.length = self.embeds.shape[:2]
        self.with_ids = input_ids is not None
        if self.with_ids:
            # transformers: the ids are the prompt (returned, counted in max_length, seen by the
            # processors); the embeddings replace their word embeddings in the first step only
            self.placeholders, _, self.mask = prepare_prompt(model, input_ids, attention_mask, tokens)
            if self.placeholders.shape != (batch, self.length):
                raise ValueError(f"input_ids has shape {tuple(self.placeholders.shape)} but inputs_embeds "
                                 f"{tuple(self.embeds.shape)}: expected input_ids [batch, seq] matching inputs_embeds "
                                 "[batch, seq, hidden]")
            return
        if attention_mask is None:
            attention_mask = np.ones((batch, self.length), dtype=np.int64)
        self.mask = as_mask(attention_mask, "attention_mask", model.device, np.int64, (batch, self.length))
        self.placeholders = model.device.xp.zeros((batch, self.length), dtype=np.int64)  # [batch, P]

    def repeat(self, times):
        """One row per beam / returned sequence: [batch, ...] -> [batch * times, ...]."""
        if times > 1:
            self.embeds = self.embeds.repeat(times, axis=0)

    def set_lengths(self, config, kwargs, max_position_embeddings):
        """transformers' lengths (generated tokens only) on ``config``; returns the buffer length."""
        if config.max_new_tokens is not None:
            config.max_length = config.max_new_tokens
        else:  # transformers: the embedded positions count against max_length, default or not
            config.max_length -= self.length
        if config.min_new_tokens is not None:
            config.min_length = config.min_new_tokens
        else:
            config.min_length = max(config.min_length - self.length, 0)
        if config.max_length < 1:
            raise ValueError(f"max_length={config.max_length + self.length} leaves no room after the "
                             f"{self.length} embedded prompt positions: set max_new_tokens")
        total = self.length + config.max_length
        if total > max_position_embeddings:
            raise ValueError(f"the {self.length} embedded positions + max_length={config.max_length} exceed the "
                             f"decoder's max_position_embeddings={max_position_embeddings}")
        return total

    def processors(self, processors):
        """Each processor sees only the generated columns of the ids, as in transformers."""
        start = self.length
        return [_Generated(p, start) for p in processors]

    def step(self, step, decoder):
        return _EmbedsFirstStep(step, decoder, self)


class _Generated:
    def __init__(self, processor, start):
        self.processor, self.start = processor, start

    def __call__(self, ids, scores):
        return self.processor(ids[:, self.start:], scores)  # [rows, cur_len] -> [rows, generated]


class _EmbedsFirstStep:
    """The search's step, whose first call runs the decoder on the embeddings (through
    its public __call__, filling the cache) instead of the placeholder ids."""

    def __init__(self, step, decoder, prompt):
        self.inner, self.decoder, self.prompt, self.first = step, decoder, prompt, True

    def __getattr__(self, name):  # cache, records, reorder: the wrapped step's
        return getattr(self.inner, name)

    def __call__(self, ids):
        if not self.first:
            return self.inner(ids)
        self.first = False
        mask = self.inner.mask[:, :ids.shape[1]]  # [rows, P]
        positions = mask.cumsum(axis=-1) - 1
        positions[mask == 0] = 1
        records = self.inner.records
        out = self.decoder(inputs_embeds=self.prompt.embeds, attention_mask=mask, position_ids=positions,
                           past_key_values=self.inner.cache, use_cache=True,
                           output_attentions="attentions" in records, output_hidden_states="hidden_states" in records)
        for name, steps in records.items():
            steps.append(out[name])
        return out["logits"][:, -1]  # [rows, vocab]
