"""The model step the search loops call: ``step(ids) -> logits`` around the decoder and its cache.

Both run model.decoder_step, the one definition of a decoding step: :class:`DecoderStep`
calls it eagerly (any backend) and can record per-layer outputs as it goes;
fast/cuda_graph.GraphedDecoderStep captures that same call in a CUDA graph on the GPU and
replays it, returning logits only.  :func:`make_step` picks one.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..fast.cuda_graph import GraphedDecoderStep, graph_supported
from ..dispatch import using
from ..model import decoder_step, positions_from_mask

__all__ = ["DecoderStep", "recorded_outputs", "wants_cuda_graph", "make_step", "step_inputs"]


def recorded_outputs(config, seq2seq: bool) -> tuple:
    """The decoder outputs generate() must keep from every step, by their model-output names.

    As in transformers, they are kept only for return_dict_in_generate=True; without it
    output_attentions / output_hidden_states change nothing.  Cross-attentions exist
    only when there is an encoder to attend to.
    """
    if not config.return_dict_in_generate:
        return ()
    names = []
    if config.output_attentions:
        names += ["attentions", "cross_attentions"] if seq2seq else ["attentions"]
    if config.output_hidden_states:
        names.append("hidden_states")
    return tuple(names)


def wants_cuda_graph(decoder, cache, use_cuda_graph, record) -> bool:
    """Replay steps from a CUDA graph?  Not when asked not to (use_cuda_graph=False), and
    not when per-layer outputs are recorded: a captured step hands back logits only, so
    attentions and hidden states need the eager step (use_cuda_graph is then ignored)."""
    if use_cuda_graph is False or record:
        return False
    return graph_supported(decoder, cache)


def make_step(decoder, cache, encoder_states, encoder_mask, prompt_mask, max_length, *,
              use_cuda_graph=None, record=(), token_types=None):
    """The step for one generate() call: eager, or graphed when :func:`wants_cuda_graph`
    (eager with token types: the captured step takes none)."""
    step = DecoderStep(decoder, cache, encoder_states, encoder_mask, prompt_mask, max_length, record=record,
                       token_types=token_types)
    if token_types is None and wants_cuda_graph(decoder, cache, use_cuda_graph, record):
        return GraphedDecoderStep(step)
    return step


def step_inputs(input_ids, past_key_values, attention_mask, extra) -> dict:
    """prepare_inputs_for_generation: the ids the cache has not seen, the cache and the mask;
    with a mask (a decoder used alone) position ids from it, as transformers derives them."""
    seen = past_key_values.get_seq_length() if past_key_values is not None else 0
    inputs = {"input_ids": input_ids[:, seen:], "past_key_values": past_key_values,
              "attention_mask": attention_mask, "use_cache": extra.pop("use_cache", True)}
    if attention_mask is not None and extra.get("position_ids") is None:
        mask = array_module(attention_mask).asarray(attention_mask)
        inputs["position_ids"] = positions_from_mask(mask)[:, seen:]  # [batch, new]
    inputs.update({k: v for k, v in extra.items() if v is not None})
    return inputs


class DecoderStep:
    """``step(ids)``: run the decoder on the tokens the cache has not seen; return last logits.

    ids [rows, cur_len] -> logits [rows, vocab].  Without a cache (use_cache=False) every
    step recomputes the whole sequence.  For a decoder used alone, the attention mask
    grows by one column of ones per step and positions count only real tokens (left
    padding), as in transformers.

    ``record``: names among "attentions", "cross_attentions", "hidden_states" to keep
    from every call, in ``self.records[name]``: one entry per step, each the decoder's
    tuple over layers for the rows and new positions of that call (all rows as computed,
    before beam search reorders them, as transformers keeps them).

    ``token_types`` [rows, prompt_len] (a BERT or RoBERTa decoder alone): the prompt's token
    types; every generated token takes its row's last one, as transformers extends them.
    (Beam search only moves rows among the beams of one input, which share their types.)
    """

    def __init__(self, decoder, cache, encoder_states, encoder_mask, prompt_mask, max_length, *, record=(),
                 token_types=None):
        self.decoder, self.cache = decoder, cache
        self.encoder_states, self.encoder_mask = encoder_states, encoder_mask
        self.records = {name: [] for name in record}
        self.mask = None
        if prompt_mask is not None:  # decoder alone: [rows, max_length], ones after the prompt
            xp = array_module(prompt_mask)
            self.mask = xp.ones((prompt_mask.shape[0], max_length), dtype=np.int64)
            self.mask[:, :prompt_mask.shape[1]] = prompt_mask
        self.types = None
        if token_types is not None:  # [rows, max_length]: the prompt's types, then the last one repeated
            xp = array_module(token_types)
            self.types = xp.repeat(token_types[:, -1:], max_length, axis=1)
            self.types[:, :token_types.shape[1]] = token_types

    def inputs(self, ids, seen):
        """decoder_step's keyword arguments for the tokens after the first ``seen`` of ids [rows, cur_len]."""
        inputs = dict(encoder_states=self.encoder_states, encoder_mask=self.encoder_mask,
                      output_attentions="attentions" in self.records,
                      output_hidden_states="hidden_states" in self.records)
        if self.mask is not None:
            mask = self.mask[:, :ids.shape[1]]  # [rows, cur_len]
            inputs.update(attention_mask=mask, position_ids=positions_from_mask(mask)[:, seen:])
        else:
            inputs.update(attention_mask=None)  # bert_stack: every token seen, causally
        if self.types is not None:
            inputs.update(token_type_ids=self.types[:, seen:ids.shape[1]])  # [rows, new]
        return inputs

    def __call__(self, ids):
        seen = self.cache.get_seq_length() if self.cache is not None else 0
        decoder = self.decoder
        with using(decoder.kernels):
            out = decoder_step(decoder.params, decoder.config, ids[:, seen:], self.cache, seen,
                               **self.inputs(ids, seen))
        for name, steps in self.records.items():
            steps.append(out[name])  # tuple over layers (hidden states: layers + 1)
        return out["logits"][:, -1]  # [rows, vocab]

    def reorder(self, rows):
        if self.cache is not None:
            self.cache.reorder(rows)
