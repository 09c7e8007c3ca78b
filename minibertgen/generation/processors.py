"""transformers' public logits-processor classes, each a thin shell around a pure function.

``processor(input_ids, scores) -> scores`` with input_ids [rows, cur_len] and scores
[rows, vocab] (NumPy or CuPy arrays), as in transformers; the math is the function of
logits_process.py / warpers.py named in each class.  The constructors check their
arguments as transformers' do (a ValueError naming the argument and the value).  Pass
instances to ``generate(logits_processor=[...])``: one of a type generate() builds from
its own settings replaces that one, the others run after generate()'s processors and
before the sampling warpers, as in transformers 4.57.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import logits_process as lp
from . import warpers as wp

__all__ = [
    "LogitsProcessor", "LogitsProcessorList", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
    "TemperatureLogitsWarper", "RepetitionPenaltyLogitsProcessor", "EncoderRepetitionPenaltyLogitsProcessor",
    "TopPLogitsWarper", "TopKLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper", "EpsilonLogitsWarper",
    "EtaLogitsWarper", "NoRepeatNGramLogitsProcessor", "EncoderNoRepeatNGramLogitsProcessor",
    "SequenceBiasLogitsProcessor", "NoBadWordsLogitsProcessor", "PrefixConstrainedLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "InfNanRemoveLogitsProcessor",
    "ExponentialDecayLengthPenalty", "LogitNormalization", "SuppressTokensAtBeginLogitsProcessor",
    "SuppressTokensLogitsProcessor",
]


class LogitsProcessor:
    """Base class: ``__call__(input_ids, scores) -> scores``."""

    def __call__(self, input_ids, scores):
        raise NotImplementedError(f"{type(self).__name__} is an abstract class: subclass it and define __call__")


class LogitsProcessorList(list):
    """A list of processors, itself callable: applies each in order."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            scores = processor(input_ids, scores, **kwargs) if kwargs and _takes_kwargs(processor) else \
                processor(input_ids, scores)
        return scores


def _takes_kwargs(processor):
    import inspect

    return len(inspect.signature(processor.__call__).parameters) > 2


# -- argument checks (transformers' rules, our wording) --------------------------------------

def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or not value > 0:
        raise ValueError(f"{name}={value!r}: expected a finite number > 0")
    return float(value)


def _int_at_least(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _open_unit(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name}={value!r}: expected a number in (0, 1)")
    return float(value)


def _filter_value(filter_value):
    """What a warper writes over the scores it drops (transformers' filter_value, -inf by default)."""
    if isinstance(filter_value, bool) or not isinstance(filter_value, numbers.Real) or np.isnan(filter_value):
        raise ValueError(f"filter_value={filter_value!r}: expected a number (-inf drops a token outright)")
    return float(filter_value)


def token_ids(name, value):
    """An int, a list/tuple or a 1-D integer array of ids -> a list of non-negative ints."""
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()
    items = [value] if not isinstance(value, (list, tuple)) else list(value)
    for token in items:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or token < 0:
            raise ValueError(f"{name}={value!r}: expected a token id (an integer >= 0) or a list of them, "
                             f"found {token!r}")
    return [int(t) for t in items]


def _in_vocab(ids, scores):
    """The ids that index this vocabulary (transformers' isin() ignores the others)."""
    return [t for t in ids if t < scores.shape[-1]]


# -- penalties and constraints ---------------------------------------------------------------

class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """lp.repetition_penalty; ``prompt_ignore_length`` leading tokens are not penalised."""

    def __init__(self, penalty, prompt_ignore_length=None):
        self.penalty = _positive_float("penalty", penalty)
        if prompt_ignore_length is not None:
            prompt_ignore_length = _int_at_least("prompt_ignore_length", prompt_ignore_length, 0)
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids, scores):
        if self.prompt_ignore_length:
            input_ids = input_ids[:, self.prompt_ignore_length:]
        return lp.repetition_penalty(input_ids, scores, self.penalty)


class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """lp.encoder_repetition_penalty: ``penalty`` > 1 favours tokens of the encoder input."""

    def __init__(self, penalty, encoder_input_ids):
        self.penalty = 1 / _positive_float("penalty", penalty)
        self.encoder_input_ids = encoder_input_ids

    def __call__(self, input_ids, scores):
        return lp.encoder_repetition_penalty(input_ids, scores, self.penalty, self.encoder_input_ids)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    def __init__(self, ngram_size):
        self.ngram_size = _int_at_least("ngram_size", ngram_size, 1)

    def __call__(self, input_ids, scores):
        return lp.no_repeat_ngram(input_ids, scores, self.ngram_size)


class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """lp.encoder_no_repeat_ngram; encoder_input_ids [batch, src] serve every beam of their row."""

    def __init__(self, encoder_ngram_size, encoder_input_ids):
        self.ngram_size = _int_at_least("encoder_ngram_size", encoder_ngram_size, 1)
        self.encoder_input_ids = encoder_input_ids if encoder_input_ids.ndim == 2 else encoder_input_ids[None]

    def __call__(self, input_ids, scores):
        beams = scores.shape[0] // self.encoder_input_ids.shape[0]
        encoder_ids = self.encoder_input_ids.repeat(beams, axis=0)  # [batch, src] -> [rows, src]
        return lp.encoder_no_repeat_ngram(input_ids, scores, self.ngram_size, encoder_ids)


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """lp.sequence_bias; ``sequence_bias`` {(ids...): bias} or [[[ids...], bias], ...]."""

    def __init__(self, sequence_bias):
        self.sequence_bias = sequence_bias_dict("sequence_bias", sequence_bias)

    def __call__(self, input_ids, scores):
        return lp.sequence_bias(input_ids, scores, self.sequence_bias, scores.shape[-1])


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Forbid the last token of each bad word once the row ends with the rest of it (bias -inf)."""

    def __init__(self, bad_words_ids, eos_token_id=None):
        words = bad_words_list("bad_words_ids", bad_words_ids)
        eos = token_ids("eos_token_id", eos_token_id) if eos_token_id is not None else []
        words = [w for w in words if not (len(w) == 1 and w[0] in eos)]
        self.bad_word_ids = bad_words_ids
        self.sequence_bias = {w: -np.inf for w in words}


class MinLengthLogitsProcessor(LogitsProcessor):
    def __init__(self, min_length, eos_token_id):
        self.min_length = _int_at_least("min_length", min_length, 0)
        self.eos_token_id = token_ids("eos_token_id", eos_token_id)

    def __call__(self, input_ids, scores):
        return lp.min_length(input_ids, scores, _in_vocab(self.eos_token_id, scores), self.min_length)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    def __init__(self, prompt_length_to_skip, min_new_tokens, eos_token_id):
        self.prompt_length_to_skip = _int_at_least("prompt_length_to_skip", prompt_length_to_skip, 0)
        self.min_new_tokens = _int_at_least("min_new_tokens", min_new_tokens, 0)
        self.eos_token_id = token_ids("eos_token_id", eos_token_id)

    def __call__(self, input_ids, scores):
        return lp.min_length(input_ids, scores, _in_vocab(self.eos_token_id, scores),
                             self.prompt_length_to_skip + self.min_new_tokens)


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """lp.prefix_allowed_tokens: ``prefix_allowed_tokens_fn(batch_id, ids) -> allowed token ids``."""

    def __init__(self, prefix_allowed_tokens_fn, num_beams):
        if not callable(prefix_allowed_tokens_fn):
            raise TypeError(f"prefix_allowed_tokens_fn={prefix_allowed_tokens_fn!r:.80}: expected a function "
                            "(batch_id, input_ids) -> list of allowed token ids")
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = _int_at_least("num_beams", num_beams, 1)

    def __call__(self, input_ids, scores):
        return lp.prefix_allowed_tokens(input_ids, scores, self._prefix_allowed_tokens_fn, self._num_beams)


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    def __init__(self, bos_token_id):
        self.bos_token_id = token_ids("bos_token_id", bos_token_id)

    def __call__(self, input_ids, scores):
        return lp.forced_token_at(input_ids, scores, self.bos_token_id, 1)


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    def __init__(self, max_length, eos_token_id):
        self.max_length = _int_at_least("max_length", max_length, 1)
        self.eos_token_id = token_ids("eos_token_id", eos_token_id)

    def __call__(self, input_ids, scores):
        return lp.forced_token_at(input_ids, scores, self.eos_token_id, self.max_length - 1)


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return lp.remove_invalid_values(input_ids, scores)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """lp.exponential_decay_length_penalty: ``(start_index, decay_factor)``, counted after the prompt."""

    def __init__(self, exponential_decay_length_penalty, eos_token_id, input_ids_seq_length):
        start, factor = decay_pair("exponential_decay_length_penalty", exponential_decay_length_penalty)
        self.regulation_start = start + _int_at_least("input_ids_seq_length", input_ids_seq_length, 0)
        self.regulation_factor = factor
        self.eos_token_id = token_ids("eos_token_id", eos_token_id)

    def __call__(self, input_ids, scores):
        return lp.exponential_decay_length_penalty(input_ids, scores, _in_vocab(self.eos_token_id, scores),
                                                   self.regulation_start, self.regulation_factor)


class LogitNormalization(LogitsProcessor):
    """Log-softmax over the vocabulary (renormalize_logits=True)."""

    def __call__(self, input_ids, scores):
        return lp.renormalize(input_ids, scores)


class SuppressTokensLogitsProcessor(LogitsProcessor):
    def __init__(self, suppress_tokens):
        self.suppress_tokens = token_ids("suppress_tokens", list(_iterable("suppress_tokens", suppress_tokens)))

    def __call__(self, input_ids, scores):
        return lp.suppress_tokens(input_ids, scores, _in_vocab(self.suppress_tokens, scores))


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    def __init__(self, begin_suppress_tokens, begin_index):
        self.begin_suppress_tokens = token_ids("begin_suppress_tokens",
                                               list(_iterable("begin_suppress_tokens", begin_suppress_tokens)))
        self.begin_index = _int_at_least("begin_index", begin_index, 0)

    def set_begin_index(self, begin_index):
        self.begin_index = _int_at_least("begin_index", begin_index, 0)

    def __call__(self, input_ids, scores):
        return lp.suppress_tokens(input_ids, scores, _in_vocab(self.begin_suppress_tokens, scores),
                                  at_length=self.begin_index)


# -- sampling warpers ------------------------------------------------------------------------

class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature):
        self.temperature = _positive_float("temperature", temperature)

    def __call__(self, input_ids, scores):
        return wp.temperature(input_ids, scores, self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    def __init__(self, top_k, filter_value=-np.inf, min_tokens_to_keep=1):
        self.top_k = max(_int_at_least("top_k", top_k, 1), _int_at_least("min_tokens_to_keep", min_tokens_to_keep, 1))
        self.filter_value = _filter_value(filter_value)

    def __call__(self, input_ids, scores):
        return wp.top_k(input_ids, scores, self.top_k, fill=self.filter_value)


class _KeepingWarper(LogitsProcessor):
    """A warper with a threshold and min_tokens_to_keep (top-p, min-p, typical, epsilon, eta)."""

    function = None

    def __init__(self, value, filter_value, min_tokens_to_keep):
        self.filter_value = _filter_value(filter_value)
        self.min_tokens_to_keep = _int_at_least("min_tokens_to_keep", min_tokens_to_keep, 1)
        self._value = value

    def __call__(self, input_ids, scores):
        return type(self).function(input_ids, scores, self._value, keep=self.min_tokens_to_keep,
                                   fill=self.filter_value)


class TopPLogitsWarper(_KeepingWarper):
    function = staticmethod(wp.top_p)

    def __init__(self, top_p, filter_value=-np.inf, min_tokens_to_keep=1):
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 <= top_p <= 1:
            raise ValueError(f"top_p={top_p!r}: expected a probability in [0, 1]")
        self.top_p = float(top_p)
        super().__init__(self.top_p, filter_value, min_tokens_to_keep)


class MinPLogitsWarper(_KeepingWarper):
    function = staticmethod(wp.min_p)

    def __init__(self, min_p, filter_value=-np.inf, min_tokens_to_keep=1):
        if isinstance(min_p, bool) or not isinstance(min_p, numbers.Real) or not 0 <= min_p <= 1:
            raise ValueError(f"min_p={min_p!r}: expected a probability in [0, 1]")
        self.min_p = float(min_p)
        super().__init__(self.min_p, filter_value, min_tokens_to_keep)


class TypicalLogitsWarper(_KeepingWarper):
    function = staticmethod(wp.typical)

    def __init__(self, mass=0.9, filter_value=-np.inf, min_tokens_to_keep=1):
        self.mass = _open_unit("typical_p", mass)
        super().__init__(self.mass, filter_value, min_tokens_to_keep)


class EpsilonLogitsWarper(_KeepingWarper):
    function = staticmethod(wp.epsilon_cutoff)

    def __init__(self, epsilon, filter_value=-np.inf, min_tokens_to_keep=1):
        self.epsilon = _open_unit("epsilon_cutoff", epsilon)
        super().__init__(self.epsilon, filter_value, min_tokens_to_keep)


class EtaLogitsWarper(_KeepingWarper):
    function = staticmethod(wp.eta_cutoff)

    def __init__(self, epsilon, filter_value=-np.inf, min_tokens_to_keep=1):
        self.epsilon = _open_unit("eta_cutoff", epsilon)
        super().__init__(self.epsilon, filter_value, min_tokens_to_keep)


# -- shared argument parsing (generate() uses these too) -------------------------------------

def _iterable(name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}={value!r}: expected a list of token ids")
    return value.tolist() if hasattr(value, "tolist") else value


def sequence_bias_dict(name, value) -> dict:
    """{(ids...): float} from a dict or a list of [[ids...], bias] pairs, checked."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        items = [(tuple(p[0]) if isinstance(p[0], (list, tuple)) else p[0], p[1]) for p in value]
    else:
        raise ValueError(f"{name}={value!r:.120}: expected a dict {{(token ids...): bias}} or a list of "
                         "[[token ids...], bias] pairs")
    if not items:
        raise ValueError(f"{name}={value!r}: expected at least one biased sequence")
    out = {}
    for tokens, bias in items:
        if not isinstance(tokens, tuple) or not tokens or any(
                isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0 for t in tokens):
            raise ValueError(f"{name} key {tokens!r}: expected a non-empty tuple of token ids (integers >= 0)")
        if isinstance(bias, bool) or not isinstance(bias, numbers.Real) or np.isnan(bias):
            raise ValueError(f"{name}[{tokens!r}]={bias!r}: expected a number (the bias added to the score)")
        out[tuple(int(t) for t in tokens)] = float(bias)
    return out


def bad_words_list(name, value) -> list:
    if (not isinstance(value, (list, tuple)) or not value
            or any(not isinstance(w, (list, tuple)) or not w for w in value)):
        raise ValueError(f"{name}={value!r:.120}: expected a non-empty list of non-empty lists of token ids")
    return [tuple(token_ids(name, list(w))) for w in value]


def decay_pair(name, value):
    """(start_index >= 0, decay_factor a finite number) of exponential_decay_length_penalty."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name}={value!r}: expected a pair (start_index, decay_factor)")
    start, factor = value
    start = _int_at_least(f"{name}[0] (start_index)", start, 0)
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not np.isfinite(factor):
        raise ValueError(f"{name}[1] (decay_factor)={factor!r}: expected a finite number")
    return start, float(factor)
