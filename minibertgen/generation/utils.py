"""GenerationMixin: ``model.generate()`` for EncoderDecoderModel and BertGenerationDecoder.

generate() is a pipeline of small steps, each a function below:

    resolve the GenerationConfig -> special tokens -> encode the source (seq2seq) ->
    decoder prompt -> expand rows for beams / samples -> lengths -> KV cache ->
    logits processors -> greedy / sampling / beam search (search.py, calling the model
    step of step.py) -> outputs

Everything before the search (settings, special tokens, inputs, lengths) is in prepare.py.

It matches transformers 4.57's generate() token for token for greedy and beam search.
"""
from __future__ import annotations

from ..backend import array_module
from ..cache_surface import EncoderDecoderCache
from ..dispatch import runs_with_model_kernels
from .config import GenerationConfig, legacy_generation_config
from .embeds import EmbedsPrompt
from .outputs import (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput,  # noqa: F401 (re-exported)
                      GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput, generate_output_class)
from .assisted import assisted_generate, check_assisted
from .build import build_processors
from .prepare import (_repeat_rows, default_generation_config, is_encoder_decoder, make_rng, prepare_prompt,
                      prepare_seq2seq, prompt_token_types, resolve_generation_config, set_lengths, special_tokens,
                      warn_not_a_decoder)
from .search import beam_search, greedy_search
from .step import DecoderStep, make_step, recorded_outputs  # noqa: F401 (DecoderStep: re-exported)
from .transition import compute_transition_scores

__all__ = ["GenerationMixin", "generation_config_property"]


class GenerationMixin:
    """Adds ``generate()`` and ``generation_config`` to a model class."""

    @property
    def generation_config(self) -> GenerationConfig:
        """generation_config.json next to the weights if there is one, else the model config's values."""
        if getattr(self, "_generation_config", None) is None:
            self._generation_config = default_generation_config(self)
        return self._generation_config

    @generation_config.setter
    def generation_config(self, value):
        if value is not None and not isinstance(value, GenerationConfig):
            raise TypeError(f"generation_config: expected a GenerationConfig, got {type(value).__name__}")
        self._generation_config = value

    @runs_with_model_kernels  # the search's own ops (beam top-k) take the model's kernels too
    def generate(self, input_ids=None, attention_mask=None, generation_config=None, seed=None,
                 use_cuda_graph=None, logits_processor=None, prefix_allowed_tokens_fn=None, assistant_model=None,
                 **kwargs):
        """Generate token ids: greedy search, sampling or beam search, as the config says.

        input_ids [batch, src] (the source for a seq2seq model, the prompt for a decoder),
        attention_mask [batch, src] (1 = real token; right padding for seq2seq).  Keyword
        arguments override GenerationConfig fields (``max_new_tokens=10, num_beams=4``);
        ``encoder_outputs`` and ``decoder_input_ids`` are accepted as in transformers, and so is
        ``token_type_ids`` [batch, src] for a BERT or RoBERTa model: a seq2seq model's encoder
        reads them; a decoder alone reads the prompt's and gives each new token its row's last
        type (no CUDA graph then).
        ``logits_processor``: a list of processors (processors.py: transformers' classes, or
        any ``f(input_ids, scores) -> scores``), merged with the ones the settings build as
        transformers merges them; ``prefix_allowed_tokens_fn(batch_id, ids) -> allowed ids``
        constrains every step.  ``assistant_model`` (a smaller model of the same vocabulary) or
        ``prompt_lookup_num_tokens=n``: assisted greedy decoding (assisted.py), the same ids
        as plain greedy search, faster when the guesses are often right.
        ``seed``: an int or a numpy Generator for sampling.  ``use_cuda_graph``: on the
        GPU, replay each decode step from a captured CUDA graph (cuda_graph.py; default
        True there, ignored on the CPU; False runs every step eagerly; also ignored when
        attentions or hidden states are returned: a captured step yields logits only).

        Returns token ids [batch * num_return_sequences, length] starting with the decoder
        start token (or the prompt), or, with return_dict_in_generate=True, a ModelOutput
        with transformers' fields (those not asked for are None):

        * ``sequences`` (the ids), ``sequences_scores`` [batch * num_return_sequences]
          (beam search with output_scores), ``scores`` / ``logits`` (output_scores /
          output_logits: one [rows, vocab] per step), ``past_key_values`` (the cache);
        * ``beam_indices`` (beam search only, always, as in transformers 4.57 whatever
          output_scores / output_logits say): int32 [batch * num_return_sequences,
          generated length], for each generated token the row of the flattened batch *
          num_beams search it was appended to, -1 after the hypothesis ended.  With the
          scores, ``model.compute_transition_scores(sequences, scores, beam_indices)``
          gives each chosen token's score;
        * output_attentions / output_hidden_states, per generated step (a tuple over
          steps), each step a tuple over layers as the decoder computed it for that step's
          new positions (the whole prompt at the first step, one token after; the whole
          sequence every step with use_cache=False), for all ``rows`` = batch * max(num_beams,
          num_return_sequences) rows, in beam search before the beams are re-ranked:
          EncoderDecoderModel: ``decoder_attentions`` and ``cross_attentions`` (layers x
          [rows, heads, new, keys] / [rows, heads, new, src]), ``decoder_hidden_states``
          (layers + 1 x [rows, new, hidden]), and the encoder's own ``encoder_attentions``
          (layers x [batch, heads, src, src]) and ``encoder_hidden_states`` (layers + 1 x
          [batch, src, hidden]) -- one row per input, not per beam, as transformers returns
          them;  BertGenerationDecoder: ``attentions`` and ``hidden_states``, the same
          per-step structure.
        Without return_dict_in_generate these flags change nothing (as in transformers).
        """
        if use_cuda_graph not in (None, True, False):
            raise TypeError(f"use_cuda_graph={use_cuda_graph!r}: expected True, False or None")
        config, extra = resolve_generation_config(self, generation_config, kwargs)
        input_ids = extra.pop("inputs", input_ids) if input_ids is None else input_ids
        tokens = special_tokens(self, config)
        seq2seq = is_encoder_decoder(self)
        inputs = _search_inputs(self, seq2seq, input_ids, attention_mask, extra, tokens, config)
        embeds, encoder_fields = inputs["embeds"], inputs["encoder_fields"]
        expand = max(config.num_beams, config.num_return_sequences)
        prompt, source, encoder_states, encoder_mask, attention_mask, token_types = (
            _repeat_rows(inputs[name], expand) for name in ("prompt", "source", "encoder_states", "encoder_mask",
                                                             "attention_mask", "token_types"))
        decoder = self.decoder if seq2seq else self
        ids_prompt = embeds is None or embeds.with_ids  # the prompt has ids (returned, counted)
        if embeds is not None:
            embeds.repeat(expand)
            use_cuda_graph = False  # the first step is not a token step
        if ids_prompt:
            set_lengths(self, config, prompt.shape[1], kwargs)
        else:
            total = embeds.set_lengths(config, kwargs, decoder.config.max_position_embeddings)
        processors = build_processors(config, prompt_len=prompt.shape[1] if ids_prompt else 0,
                                      eos_ids=tokens["eos"], vocab_size=decoder.config.vocab_size,
                                      encoder_ids=source, xp=array_module(prompt),
                                      prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                                      logits_processor=logits_processor)
        if not ids_prompt:
            processors, config.max_length = embeds.processors(processors), total
        if assistant_model is not None or config.prompt_lookup_num_tokens is not None:
            if "token_type_ids" in extra:
                raise NotImplementedError("token_type_ids with assisted generation is not supported")
            if embeds is not None:
                raise NotImplementedError("assisted generation with inputs_embeds is not supported: pass input_ids")
            return _assisted(self, assistant_model, prompt, source, encoder_states, encoder_mask, attention_mask,
                             config, processors, tokens, make_rng(seed) if config.do_sample else None)

        cache = EncoderDecoderCache(decoder.config.num_hidden_layers, capacity=config.max_length) \
            if config.use_cache else None
        step = make_step(decoder, cache, encoder_states, encoder_mask, attention_mask, config.max_length,
                         use_cuda_graph=use_cuda_graph, record=recorded_outputs(config, seq2seq),
                         token_types=token_types)
        if embeds is not None:
            step = embeds.step(step, decoder)
        rng = make_rng(seed) if config.do_sample else None
        found = run_search(step, prompt, config, processors, tokens, rng)
        if not ids_prompt:  # the embedded prompt had no ids: only generated tokens come back
            found["sequences"] = found["sequences"][:, embeds.length:]
        if not config.return_dict_in_generate:
            return found["sequences"]
        return generate_output(config, seq2seq, step, cache, encoder_fields, **found)

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits=False):
        """The score of each generated token [rows_out, generated], as transformers computes it.

        sequences / scores / beam_indices: generate()'s ``sequences``, ``scores`` (a tuple of
        [rows, vocab], output_scores=True) and, after beam search, ``beam_indices``.  Entry
        [i, t] is the score (processed log-probability in beam search, processed logit in
        greedy search) that generated token t of sequence i had when it was chosen; 0 after
        a beam-search hypothesis ended.  normalize_logits=True applies log-softmax over the
        vocabulary first (log-probabilities from greedy search's logit scores).  See
        transition.py.
        """
        decoder = self.decoder if is_encoder_decoder(self) else self
        return compute_transition_scores(sequences, scores, beam_indices, normalize_logits,
                                         vocab_size=decoder.config.vocab_size)


def _search_inputs(model, seq2seq, input_ids, attention_mask, extra, tokens, config) -> dict:
    """generate()'s inputs before the rows are repeated for beams: the prompt [batch, len], the
    source ids, the encoder's states and mask (seq2seq), the decoder-alone mask and token types,
    an embedded prompt (EmbedsPrompt, or None) and the encoder outputs to return."""
    if seq2seq:
        source, prompt, encoder_states, encoder_mask, encoder_outputs = prepare_seq2seq(
            model, input_ids, attention_mask, extra, tokens, config)
        # the mask was the encoder's; the decoder needs no mask of its own; token types went to the encoder
        return dict(source=source, prompt=prompt, encoder_states=encoder_states, encoder_mask=encoder_mask,
                    attention_mask=None, token_types=None, embeds=None,
                    encoder_fields=returned_encoder_outputs(encoder_outputs, config))
    embeds = EmbedsPrompt(model, extra.pop("inputs_embeds"), attention_mask, input_ids, config, tokens) \
        if "inputs_embeds" in extra else None
    source, prompt, attention_mask = (None, embeds.placeholders, embeds.mask) if embeds else \
        prepare_prompt(model, input_ids, attention_mask, tokens)
    if embeds is not None and "token_type_ids" in extra:
        raise NotImplementedError("token_type_ids with inputs_embeds is not supported: pass input_ids")
    token_types = prompt_token_types(model, extra.get("token_type_ids"), prompt)
    if not model.config.is_decoder:
        warn_not_a_decoder(config)
    return dict(source=source, prompt=prompt, encoder_states=None, encoder_mask=None, attention_mask=attention_mask,
                token_types=token_types, embeds=embeds, encoder_fields={})


def _assisted(model, assistant_model, prompt, source, encoder_states, encoder_mask, prompt_mask, config,
              processors, tokens, rng):
    """generate()'s assisted path: checks, the assistant's own encoder pass, assisted.py's loop."""
    check_assisted(config, prompt.shape[0], assistant_model, model)
    assistant_states = None
    if assistant_model is not None and is_encoder_decoder(assistant_model):
        encoded = assistant_model.encoder(input_ids=source, attention_mask=encoder_mask)
        assistant_states = assistant_model.project_encoder_states(encoded["last_hidden_state"])
    return assisted_generate(model, assistant_model, prompt, encoder_states, encoder_mask, prompt_mask, config,
                             processors, tokens, assistant_encoder_states=assistant_states, rng=rng)


def run_search(step, prompt, config, processors, tokens, rng) -> dict:
    """Beam search (num_beams > 1) or greedy search / sampling over prompt [rows, prompt_len].

    Returns the search's output fields: sequences [rows', length], sequences_scores and
    beam_indices (beam search only, else None), scores and logits (per-step lists, kept
    only when return_dict_in_generate asks for them).
    """
    keep = dict(keep_scores=config.return_dict_in_generate and config.output_scores,
                keep_logits=config.return_dict_in_generate and bool(config.output_logits))
    if config.num_beams > 1:
        return beam_search(
            step, prompt, config.num_beams, config.max_length, processors, tokens["eos"],
            _beam_fill_value(tokens), length_penalty=config.length_penalty,
            early_stopping=config.early_stopping, num_return_sequences=config.num_return_sequences,
            rng=rng, **keep)
    xp = array_module(prompt)
    buffer = xp.full((prompt.shape[0], config.max_length), tokens["pad"] if tokens["pad"] is not None else 0,
                     dtype=prompt.dtype)  # [rows, max_length], filled in place
    buffer[:, :prompt.shape[1]] = prompt
    sequences, scores, logits = greedy_search(step, buffer, prompt.shape[1], config.max_length,
                                              processors, tokens["eos"], tokens["pad"], rng=rng, **keep)
    return dict(sequences=sequences, sequences_scores=None, scores=scores, logits=logits, beam_indices=None)


def _beam_fill_value(tokens):
    """What beam search writes after a hypothesis ended.  transformers 4.57 tests the pad id
    for truth, so pad 0 falls back to eos[0]; with no eos it writes -1."""
    if not tokens["eos"]:
        return -1
    return tokens["pad"] if tokens["pad"] else tokens["eos"][0]


def returned_encoder_outputs(encoder_outputs, config) -> dict:
    """encoder_attentions / encoder_hidden_states for the generate() output: the encoder's
    own (one row per input: transformers expands only tensors for beams, not these tuples)."""
    if not config.return_dict_in_generate:
        return {}
    found = encoder_outputs if isinstance(encoder_outputs, dict) else {}  # a bare tuple/array has neither
    return {"encoder_attentions": found.get("attentions") if config.output_attentions else None,
            "encoder_hidden_states": found.get("hidden_states") if config.output_hidden_states else None}


def generate_output(config, seq2seq, step, cache, encoder_fields, *, sequences, sequences_scores, scores,
                    logits, beam_indices):
    """The ModelOutput of return_dict_in_generate=True, fields in transformers' order.

    beam_indices comes with every beam search (transformers 4.57 returns it whatever
    output_scores / output_logits say).  Per-layer outputs come from the step's records (a
    tuple over steps of tuples over layers); a seq2seq model's are named decoder_* (plus
    cross_attentions and the encoder's).
    """
    keep_scores = config.output_scores
    records = {name: tuple(steps) for name, steps in getattr(step, "records", {}).items()}
    fields = dict(sequences=sequences, sequences_scores=sequences_scores if keep_scores else None,
                  scores=tuple(scores) if keep_scores else None,
                  logits=tuple(logits) if config.output_logits else None, beam_indices=beam_indices)
    if seq2seq:
        fields.update(encoder_fields)
        fields.update(decoder_attentions=records.get("attentions"), cross_attentions=records.get("cross_attentions"),
                      decoder_hidden_states=records.get("hidden_states"))
    else:
        fields.update(attentions=records.get("attentions"), hidden_states=records.get("hidden_states"))
    if config.num_beams <= 1:
        del fields["sequences_scores"], fields["beam_indices"]
    return generate_output_class(seq2seq, config.num_beams > 1)(**fields, past_key_values=cache)


def _generation_config_get(model):
    return legacy_generation_config(model, GenerationMixin.generation_config.fget(model))


def _generation_config_set(model, value):
    GenerationMixin.generation_config.fset(model, value)
    model._generation_snapshot = None


# The generation_config property of the models that generate: GenerationMixin's, read
# through legacy_generation_config's rule (one definition for every such class).
generation_config_property = property(_generation_config_get, _generation_config_set,
                                      doc="The generation config generate() uses (see legacy_generation_config).")
