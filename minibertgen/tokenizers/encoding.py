"""From token ids to model inputs: truncation, padding, BatchEncoding and tensors.

These are plain functions over lists of ints so they can be read (and tested) apart
from any vocabulary. The rules follow transformers' slow tokenizers; where the
reference only logs an error and returns an over-long sequence, we raise instead.
"""
import numpy as np

from ..backend import is_cupy_array, parse_device, tensor_module, to_device

# model_max_length when a checkpoint does not say: "no limit" (transformers' value).
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")


class BatchEncoding(dict):
    """A dict of model inputs that also allows attribute access: ``enc.input_ids``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; fields: {sorted(self)}") from None

    def __getstate__(self):
        return dict(self)

    def __setstate__(self, state):
        self.update(state)

    def to(self, device, *, non_blocking=False):
        """Move every array field to ``device`` ("cpu", "cuda", "cuda:1", 0 ...) in place, as
        transformers' BatchEncoding.to does; lists stay lists.  Returns self."""
        target = parse_device(device)
        for key, value in list(self.items()):
            if isinstance(value, np.ndarray) or is_cupy_array(value):
                self[key] = to_device(value, target)
        return self

    def convert_to_tensors(self, tensor_type, prepend_batch_axis=False):
        """Turn every field into an int64 NumPy ("np") or CuPy ("cp") array, in place."""
        if tensor_type is None:
            return self
        xp = tensor_module(tensor_type)
        for key, value in list(self.items()):
            rows = [value] if prepend_batch_axis else value
            if isinstance(rows, list) and rows and isinstance(rows[0], list):
                lengths = {len(row) for row in rows}
                if len(lengths) > 1:
                    raise ValueError(
                        f"cannot make a rectangular array of {key!r}: the sequences have lengths "
                        f"{sorted(lengths)}; pass padding=True (and truncation=True) to batch them"
                    )
            self[key] = xp.asarray(np.asarray(rows, dtype=np.int64))
        return self


def resolve_strategies(padding, truncation, max_length, model_max_length, pad_to_multiple_of):
    """Normalise the padding/truncation arguments the way transformers does.

    Returns ``(padding_strategy, truncation_strategy, max_length)`` with strategies as
    strings from PADDING_STRATEGIES / TRUNCATION_STRATEGIES.
    """
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 0):
        raise ValueError(f"max_length must be a non-negative int or None, got {max_length!r}")
    # A max_length with no truncation flag means "truncate" (the reference warns, then does it).
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"
    padding_strategy = _padding_strategy(padding)
    truncation_strategy = _truncation_strategy(truncation)
    if max_length is None:
        limit_known = model_max_length <= LARGE_INTEGER
        if padding_strategy == "max_length":
            if limit_known:
                max_length = model_max_length
            else:
                padding_strategy = "do_not_pad"
        if truncation_strategy != "do_not_truncate":
            if limit_known:
                max_length = model_max_length
            else:
                truncation_strategy = "do_not_truncate"
    if (
        truncation_strategy != "do_not_truncate"
        and padding_strategy != "do_not_pad"
        and pad_to_multiple_of is not None
        and max_length is not None
        and max_length % pad_to_multiple_of != 0
    ):
        raise ValueError(
            f"truncation length max_length={max_length} is not a multiple of "
            f"pad_to_multiple_of={pad_to_multiple_of}; choose values that divide evenly"
        )
    return padding_strategy, truncation_strategy, max_length


def _padding_strategy(padding):
    return _strategy("padding", padding, "longest", "do_not_pad", PADDING_STRATEGIES)


def _truncation_strategy(truncation):
    return _strategy("truncation", truncation, "longest_first", "do_not_truncate", TRUNCATION_STRATEGIES)


def _strategy(name, value, when_true, when_false, allowed):
    """True/False/None or a strategy name -> the strategy name (transformers' spelling)."""
    if value is True:
        return when_true
    if value is False or value is None:
        return when_false
    if value in allowed:
        return value
    raise ValueError(f"{name} must be True, False or one of {allowed}, got {value!r}")


def _cut(ids, count, side):
    """Remove ``count`` ids from one side of ``ids``."""
    if count <= 0:
        return ids
    return ids[:-count] if side == "right" else ids[count:]


def truncate_ids(ids, pair_ids, num_to_remove, strategy, side):
    """Drop ``num_to_remove`` ids following ``strategy``; raise if that is impossible.

    The reference only logs an error and returns the sequences untouched when the
    chosen sequence is too short; a caller would then silently get more than
    max_length tokens, so we raise a ValueError that says what to change.
    """
    if num_to_remove <= 0:
        return ids, pair_ids
    if strategy == "only_first" or (strategy == "longest_first" and pair_ids is None):
        if len(ids) <= num_to_remove:
            raise ValueError(
                f"cannot truncate: {num_to_remove} tokens must go but the first sequence has only "
                f"{len(ids)}; raise max_length (it must leave room for the special tokens and at "
                f"least one token of the sequence) or choose another truncation strategy"
            )
        return _cut(ids, num_to_remove, side), pair_ids
    if strategy == "only_second":
        if pair_ids is None or len(pair_ids) <= num_to_remove:
            have = 0 if pair_ids is None else len(pair_ids)
            raise ValueError(
                f"cannot truncate with truncation='only_second': {num_to_remove} tokens must go but "
                f"the second sequence has only {have}; raise max_length or use 'longest_first'"
            )
        return ids, _cut(pair_ids, num_to_remove, side)
    # longest_first on a pair: first even out the lengths, then take from both in turn.
    if num_to_remove > len(ids) + len(pair_ids):
        raise ValueError(
            f"cannot truncate: {num_to_remove} tokens must go but the pair has only "
            f"{len(ids) + len(pair_ids)}; raise max_length so the special tokens fit"
        )
    first_remove = min(abs(len(pair_ids) - len(ids)), num_to_remove)
    second_remove = num_to_remove - first_remove
    if len(ids) > len(pair_ids):
        from_ids = first_remove + second_remove // 2
        from_pair = second_remove - second_remove // 2
    else:
        from_ids = second_remove // 2
        from_pair = first_remove + second_remove - second_remove // 2
    return _cut(ids, from_ids, side), _cut(pair_ids, from_pair, side)


def truncate_with_offsets(ids, pair_ids, offsets, pair_offsets, num_to_remove, strategy, side):
    """truncate_ids that cuts each sequence's offsets at the same places as its ids.

    Returns ``(ids, pair_ids, offsets, pair_offsets)``.
    """
    first = list(zip(ids, offsets))
    second = None if pair_ids is None else list(zip(pair_ids, pair_offsets))
    first, second = truncate_ids(first, second, num_to_remove, strategy, side)
    ids, offsets = [i for i, _ in first], [o for _, o in first]
    if second is None:
        return ids, None, offsets, None
    return ids, [i for i, _ in second], offsets, [o for _, o in second]


def check_overflow_request(pair_ids, strategy, max_length, stride):
    """return_overflowing_tokens=True needs a truncation length and, for a pair, a strategy
    that cuts one sequence (transformers refuses longest_first on pairs too)."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise ValueError(f"stride={stride!r}: expected an integer >= 0 (ids repeated before the overflow)")
    if pair_ids is not None and strategy == "longest_first":
        raise ValueError("return_overflowing_tokens=True cannot return overflowing tokens for a pair with "
                         "truncation='longest_first'; use truncation='only_first' or 'only_second'")
    if max_length is None or strategy == "do_not_truncate":
        raise ValueError("return_overflowing_tokens=True needs truncation to a length: pass truncation=True "
                         "and max_length (or a tokenizer with a model_max_length)")


def truncate_with_overflow(ids, pair_ids, num_to_remove, strategy, side, stride):
    """truncate_ids for one cut sequence, also returning what was cut plus ``stride`` ids
    next to it (the overlap a sliding window keeps): ``(ids, pair_ids, overflowing)``."""
    second = strategy == "only_second"
    cut = pair_ids if second else ids
    new_ids, new_pair = truncate_ids(ids, pair_ids, num_to_remove, strategy, side)
    window = min(len(cut), stride + num_to_remove)
    overflowing = cut[:window] if side == "left" else cut[len(cut) - window:]
    return new_ids, new_pair, list(overflowing)


def offsets_with_specials(special_mask, offsets, pair_offsets):
    """Lay the sequences' offsets out along input_ids: (0, 0) where a special token sits."""
    spans = iter(list(offsets) + list(pair_offsets or []))
    return [(0, 0) if special else next(spans) for special in special_mask]


def pad_one(encoded, max_length, strategy, pad_to_multiple_of, side, pad_id, pad_type_id, return_attention_mask):
    """Pad one encoding (a dict of lists) to ``max_length``; adds attention_mask if asked."""
    ids = encoded["input_ids"]
    if strategy == "longest":
        max_length = len(ids)
    if max_length is not None and pad_to_multiple_of is not None and max_length % pad_to_multiple_of != 0:
        max_length = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
    if return_attention_mask and "attention_mask" not in encoded:
        encoded["attention_mask"] = [1] * len(ids)
    difference = (max_length - len(ids)) if (strategy != "do_not_pad" and max_length is not None) else 0
    if difference <= 0:
        return encoded
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": pad_type_id, "special_tokens_mask": 1,
            "offset_mapping": (0, 0)}  # fmt: skip
    for key, value in fill.items():
        if key not in encoded or (key == "attention_mask" and not return_attention_mask):
            continue
        padding = [value] * difference
        encoded[key] = encoded[key] + padding if side == "right" else padding + encoded[key]
    return encoded
