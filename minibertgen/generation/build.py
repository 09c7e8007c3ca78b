"""From a GenerationConfig to the list of logits processors generate() applies.

The order is transformers 4.57's, so that results match it token for token: penalties
and constraints, then the user's own ``logits_processor=[...]`` (one of a type built here
takes that one's place, the others follow), then -- only when sampling -- the warpers,
and last the renormalisation.  Every value is checked here, with an error that names
the setting, before the first model step.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import processors as P

__all__ = ["build_processors"]


def build_processors(config, *, prompt_len, eos_ids, vocab_size, encoder_ids=None, xp=np,
                     prefix_allowed_tokens_fn=None, logits_processor=None):
    """The processors ``config`` asks for, as a LogitsProcessorList in transformers' order.

    prompt_len: tokens in each row before generation (the decoder start token, or the prompt).
    eos_ids: list of end-of-sequence ids (may be empty).  encoder_ids [rows, src]: the
    encoder input (the prompt for a decoder), expanded to one row per beam.
    """
    procs = _penalties(config, eos_ids, vocab_size, encoder_ids)
    procs += _lengths(config, prompt_len, eos_ids)
    if prefix_allowed_tokens_fn is not None:
        procs.append(P.PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, config.num_beams))
    procs += _forced_and_suppressed(config, prompt_len, eos_ids, vocab_size)
    procs = merge_custom(procs, logits_processor)
    if config.do_sample:
        procs += _warpers(config, keep=(len(eos_ids) + 1) if config.num_beams > 1 else 1)
    if config.renormalize_logits:
        procs.append(P.LogitNormalization())
    return procs


def _penalties(config, eos_ids, vocab_size, encoder_ids):
    procs = P.LogitsProcessorList()
    if config.sequence_bias is not None:
        procs.append(P.SequenceBiasLogitsProcessor(config.sequence_bias))
    if config.encoder_repetition_penalty not in (None, 1.0):
        _need_encoder(encoder_ids, "encoder_repetition_penalty")
        penalty = _positive("encoder_repetition_penalty", config.encoder_repetition_penalty)
        procs.append(P.EncoderRepetitionPenaltyLogitsProcessor(penalty, encoder_ids))
    if config.repetition_penalty not in (None, 1.0):
        procs.append(P.RepetitionPenaltyLogitsProcessor(_positive("repetition_penalty", config.repetition_penalty)))
    if config.no_repeat_ngram_size:
        procs.append(P.NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if config.encoder_no_repeat_ngram_size:
        _need_encoder(encoder_ids, "encoder_no_repeat_ngram_size")
        procs.append(P.EncoderNoRepeatNGramLogitsProcessor(config.encoder_no_repeat_ngram_size, encoder_ids))
    if config.bad_words_ids is not None:
        bad = P.NoBadWordsLogitsProcessor(config.bad_words_ids, eos_ids)
        if bad.sequence_bias:
            procs.append(bad)
    return procs


def _lengths(config, prompt_len, eos_ids):
    procs = []
    if eos_ids and config.min_length and config.min_length > 0:
        procs.append(P.MinLengthLogitsProcessor(config.min_length, eos_ids))
    if eos_ids and config.min_new_tokens and config.min_new_tokens > 0:
        procs.append(P.MinNewTokensLengthLogitsProcessor(prompt_len, config.min_new_tokens, eos_ids))
    return procs


def _forced_and_suppressed(config, prompt_len, eos_ids, vocab_size):
    procs = []
    if config.forced_bos_token_id is not None:
        procs.append(P.ForcedBOSTokenLogitsProcessor(_token("forced_bos_token_id", config.forced_bos_token_id,
                                                            vocab_size)))
    if config.forced_eos_token_id is not None:
        forced = config.forced_eos_token_id
        forced = [_token("forced_eos_token_id", t, vocab_size)
                  for t in (forced if isinstance(forced, (list, tuple)) else [forced])]
        procs.append(P.ForcedEOSTokenLogitsProcessor(config.max_length, forced))
    if config.remove_invalid_values:
        procs.append(P.InfNanRemoveLogitsProcessor())
    if config.exponential_decay_length_penalty is not None:
        procs.append(P.ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos_ids, prompt_len))
    if config.suppress_tokens is not None:
        procs.append(P.SuppressTokensLogitsProcessor(config.suppress_tokens))
    if config.begin_suppress_tokens is not None:
        begin = prompt_len if (prompt_len > 1 or config.forced_bos_token_id is None) else prompt_len + 1
        procs.append(P.SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin))
    return procs


def merge_custom(defaults, custom):
    """transformers' merge: a user processor of a type built from the settings replaces it in
    place; the user's other processors run after the built ones, in the order given."""
    if custom is None:
        return P.LogitsProcessorList(defaults)
    if not isinstance(custom, (list, tuple)):
        raise TypeError(f"logits_processor={custom!r:.80}: expected a list of processors (a LogitsProcessorList)")
    for processor in custom:
        if not callable(processor):
            raise TypeError(f"logits_processor holds {processor!r:.80}: expected callables "
                            "processor(input_ids, scores) -> scores")
    merged = P.LogitsProcessorList()
    for built in defaults:
        same = [c for c in custom if type(c) is type(built)]
        merged.append(same[0] if same else built)
    merged += [c for c in custom if not any(c is m for m in merged)]
    return merged


def _warpers(config, keep):
    """Temperature, top-k, top-p, min-p, typical, epsilon, eta: only when sampling."""
    out = []
    if config.temperature is not None and config.temperature != 1.0:
        value = config.temperature
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"temperature={value!r}: must be a finite number > 0 when sampling "
                             "(for greedy decoding use do_sample=False)")
        out.append(P.TemperatureLogitsWarper(value))
    if config.top_k is not None and config.top_k != 0:
        out.append(P.TopKLogitsWarper(config.top_k, min_tokens_to_keep=keep))
    if config.top_p is not None:
        top_p = _probability("top_p", config.top_p)
        if top_p < 1.0:
            out.append(P.TopPLogitsWarper(top_p, min_tokens_to_keep=keep))
    if config.min_p is not None:
        out.append(P.MinPLogitsWarper(_probability("min_p", config.min_p), min_tokens_to_keep=keep))
    if config.typical_p is not None:
        typical = _probability("typical_p", config.typical_p)
        if typical < 1.0:
            out.append(P.TypicalLogitsWarper(typical, min_tokens_to_keep=keep))
    for name, cls in (("epsilon_cutoff", P.EpsilonLogitsWarper), ("eta_cutoff", P.EtaLogitsWarper)):
        value = getattr(config, name)
        if value is not None and _cutoff(name, value) > 0.0:
            out.append(cls(value, min_tokens_to_keep=keep))
    return out


def _probability(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r}: expected a probability in [0, 1]")
    return float(value)


def _cutoff(name, value):
    """epsilon_cutoff / eta_cutoff: 0 turns it off; otherwise a probability below 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r}: expected a number in [0, 1) (0 turns it off)")
    return float(value)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    return float(value)


def _token(name, value, vocab_size):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value!r}: expected a token id in [0, {vocab_size})")
    return int(value)


def _need_encoder(encoder_ids, name):
    if encoder_ids is None:
        raise ValueError(f"{name} needs the encoder's input_ids: pass input_ids to generate() "
                         "(it is only meaningful for encoder-decoder models)")
