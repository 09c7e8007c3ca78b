"""``tokenizer(...)``, ``encode`` and ``decode``: the parts every tokenizer shares.

The flow for one text: tokenize -> ids -> truncate -> add special tokens -> pad ->
arrays. For a batch, every text goes through the same steps except padding, which
waits until the longest sequence is known.
"""
import logging

from .encoding import (BatchEncoding, check_overflow_request, offsets_with_specials, pad_one, resolve_strategies,
                       truncate_ids, truncate_with_offsets, truncate_with_overflow)  # fmt: skip

logger = logging.getLogger("minibertgen.tokenizers")


class CallMixin:
    """Mixed into PreTrainedTokenizer; relies on its tokenize/convert/special-token API."""

    def __call__(
        self,
        text=None,
        text_pair=None,
        text_target=None,
        text_pair_target=None,
        add_special_tokens=True,
        padding=False,
        truncation=None,
        max_length=None,
        is_split_into_words=False,
        pad_to_multiple_of=None,
        padding_side=None,
        return_tensors=None,
        return_token_type_ids=None,
        return_attention_mask=None,
        return_special_tokens_mask=False,
        return_length=False,
        return_offsets_mapping=False,
        stride=0,
        return_overflowing_tokens=False,
        **kwargs,
    ):
        """Encode one text, a pair, or a batch into a BatchEncoding (``input_ids`` ...).

        ``text_target`` encodes decoder targets; with ``text`` too, their ids land in
        ``labels``. ``return_tensors`` is None (lists), "np" (int64 NumPy) or "cp" (CuPy).
        Other keyword arguments go to ``tokenize`` (e.g. ``add_prefix_space``,
        ``split_special_tokens``; unlike transformers, the latter applies to batches too).
        ``return_offsets_mapping=True`` adds ``offset_mapping``: each token's (start, end)
        character span in its text, (0, 0) for special tokens and padding, as
        transformers' fast tokenizers give it (WordPiece and byte-level BPE only).
        ``return_overflowing_tokens=True`` (with truncation) adds ``overflowing_tokens``, the ids
        cut off plus ``stride`` ids before them, and ``num_truncated_tokens``, as transformers'
        slow tokenizers do (one row per text; the fast tokenizers' extra rows and their
        ``overflow_to_sample_mapping`` are not produced).
        """
        _reject_unsupported(kwargs)
        if return_offsets_mapping and not self._supports_offsets:
            raise NotImplementedError(
                f"return_offsets_mapping=True is not available for {type(self).__name__} (transformers has "
                "no fast version of it either); pass return_offsets_mapping=False"
            )
        if return_offsets_mapping and return_overflowing_tokens:
            raise NotImplementedError("return_overflowing_tokens=True with return_offsets_mapping=True is not "
                                      "supported; drop one of them")
        if return_offsets_mapping and is_split_into_words:
            raise NotImplementedError(
                "return_offsets_mapping=True with is_split_into_words=True is not supported; "
                "pass the text as one string, or drop return_offsets_mapping"
            )
        options = dict(tokenize_options=kwargs,
            add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
            max_length=max_length, is_split_into_words=is_split_into_words,
            pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
            return_tensors=return_tensors, return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_special_tokens_mask=return_special_tokens_mask, return_length=return_length,
            return_offsets_mapping=return_offsets_mapping, stride=stride,
            return_overflowing_tokens=return_overflowing_tokens,
        )  # fmt: skip
        if text is None and text_target is None:
            raise ValueError("pass text (or text_target) to encode; both are None")
        encodings = self._call_one(text, text_pair, **options) if text is not None else None
        if text_target is None:
            return encodings
        targets = self._call_one(text_target, text_pair_target, **options)
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def _call_one(self, text, text_pair, tokenize_options, is_split_into_words=False, return_tensors=None,
                  return_offsets_mapping=False, **options):  # fmt: skip
        batched = _is_batch(text, is_split_into_words, "text")
        if text_pair is not None and _is_batch(text_pair, is_split_into_words, "text_pair") != batched:
            raise TypeError("text_pair must be a batch (list) exactly when text is a batch")
        if return_offsets_mapping:
            return self._call_with_offsets(text, text_pair, tokenize_options, batched, return_tensors, options)
        if not batched:
            ids = self._text_to_ids(text, is_split_into_words, "text", tokenize_options)
            pair = None if text_pair is None else self._text_to_ids(text_pair, is_split_into_words, "text_pair",
                                                                    tokenize_options)  # fmt: skip
            encoded = self.prepare_for_model(ids, pair, **options)
            return BatchEncoding(encoded).convert_to_tensors(return_tensors, prepend_batch_axis=True)
        if text_pair is not None and len(text_pair) != len(text):
            raise ValueError(f"text has {len(text)} items but text_pair has {len(text_pair)}; they must match")
        pairs = text_pair if text_pair is not None else [None] * len(text)
        id_pairs = []
        for index, (first, second) in enumerate(zip(text, pairs)):
            name = f"text[{index}]"
            ids = self._text_to_ids(first, is_split_into_words, name, tokenize_options)
            pair = None if second is None else self._text_to_ids(second, is_split_into_words, f"text_pair[{index}]",
                                                                 tokenize_options)  # fmt: skip
            id_pairs.append((ids, pair))
        return self._encode_batch(id_pairs, return_tensors=return_tensors, **options)

    def _call_with_offsets(self, text, text_pair, tokenize_options, batched, return_tensors, options):
        """The _call_one path for return_offsets_mapping=True: spans travel with the ids."""
        texts, pairs = (text, text_pair) if batched else ([text], None if text_pair is None else [text_pair])
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"text has {len(texts)} items but text_pair has {len(pairs)}; they must match")
        rows = []
        for index, (first, second) in enumerate(zip(texts, pairs if pairs is not None else [None] * len(texts))):
            suffix = f"[{index}]" if batched else ""
            ids, offsets = self._text_to_ids_and_offsets(first, "text" + suffix, tokenize_options)
            pair, pair_offsets = (None, None) if second is None else self._text_to_ids_and_offsets(
                second, "text_pair" + suffix, tokenize_options)  # fmt: skip
            rows.append((ids, pair, (offsets, pair_offsets)))
        if batched:
            return self._encode_batch(rows, return_tensors=return_tensors, **options)
        ids, pair, offsets = rows[0]
        encoded = self.prepare_for_model(ids, pair, _offsets=offsets, **options)
        return BatchEncoding(encoded).convert_to_tensors(return_tensors, prepend_batch_axis=True)

    def _text_to_ids_and_offsets(self, text, name, options):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str with return_offsets_mapping=True, got "
                            f"{type(text).__name__} ({text!r:.80})")  # fmt: skip
        tokens, spans = self.tokenize_with_offsets(text, **options)
        return self.convert_tokens_to_ids(tokens), spans

    def _encode_batch(self, id_pairs, padding, max_length, pad_to_multiple_of, padding_side,
                      return_attention_mask, return_tensors, **options):  # fmt: skip
        """Encode rows of (ids, pair_ids) or (ids, pair_ids, (offsets, pair_offsets)), then pad together."""
        rows = [
            self.prepare_for_model(
                row[0], row[1], padding=False, max_length=max_length, return_attention_mask=False,
                pad_to_multiple_of=pad_to_multiple_of,  # only checked here (truncation length): rows pad below
                _padding_for_strategy=padding, _offsets=row[2] if len(row) > 2 else None, **options,
            )  # fmt: skip
            for row in id_pairs
        ]
        columns = {key: [row[key] for row in rows] for key in (rows[0] if rows else {"input_ids": []})}
        padded = self.pad(
            columns, padding=padding, max_length=max_length, pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side, return_attention_mask=return_attention_mask,
        )  # fmt: skip
        return padded.convert_to_tensors(return_tensors)

    def _text_to_ids(self, text, is_split_into_words, name, options, allow_ids=False):
        if isinstance(text, str):
            return self.convert_tokens_to_ids(self.tokenize(text, **options))
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            if is_split_into_words:
                return self.convert_tokens_to_ids(
                    [tok for word in text for tok in self.tokenize(word, is_split_into_words=True, **options)]
                )
            if allow_ids:  # encode(["tok", ...]) takes already-split tokens, as in transformers
                return self.convert_tokens_to_ids(list(text))
        if allow_ids and isinstance(text, (list, tuple)) and all(_is_int(t) for t in text):
            return [int(t) for t in text]
        expected = "a str" + (", a list of str or a list of int" if allow_ids else "")
        if is_split_into_words:
            expected += " (a list of str words, with is_split_into_words=True)"
        raise TypeError(f"{name} must be {expected}, got {type(text).__name__} ({text!r:.80})")

    def prepare_for_model(
        self, ids, pair_ids=None, add_special_tokens=True, padding=False, truncation=None,
        max_length=None, pad_to_multiple_of=None, padding_side=None, return_token_type_ids=None,
        return_attention_mask=None, return_special_tokens_mask=False, return_length=False,
        stride=0, return_overflowing_tokens=False, _padding_for_strategy=None, _offsets=None,
    ):  # fmt: skip
        """Truncate, add special tokens and (for one sequence) pad a list of ids.

        ``_offsets`` (internal) is ``(offsets, pair_offsets)``, one span per id; when
        given, the result has an ``offset_mapping`` cut and laid out like ``input_ids``.
        """
        strategy_padding = padding if _padding_for_strategy is None else _padding_for_strategy
        padding_strategy, truncation_strategy, max_length = resolve_strategies(
            strategy_padding, truncation, max_length, self.model_max_length, pad_to_multiple_of
        )
        if _padding_for_strategy is not None:
            padding_strategy = "do_not_pad"  # a batch pads afterwards, all rows together
        if return_token_type_ids and not add_special_tokens:
            raise ValueError("return_token_type_ids=True needs add_special_tokens=True (the types are undefined)")
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        specials = self.num_special_tokens_to_add(pair=pair_ids is not None) if add_special_tokens else 0
        total = len(ids) + (len(pair_ids) if pair_ids is not None else 0) + specials
        encoded = {}
        if return_overflowing_tokens:
            check_overflow_request(pair_ids, truncation_strategy, max_length, stride)
        ids, pair_ids, overflow, _offsets = self._truncated(ids, pair_ids, total, specials, truncation_strategy,
                                                            max_length, stride, return_overflowing_tokens, _offsets)
        if return_overflowing_tokens:
            encoded.update(overflowing_tokens=overflow, num_truncated_tokens=total - max_length)
        encoded.update(self._with_specials(ids, pair_ids, add_special_tokens, return_token_type_ids,
                                           return_special_tokens_mask, _offsets))
        if padding_strategy != "do_not_pad" or return_attention_mask:
            encoded = self._pad_one(
                encoded, max_length, padding_strategy, pad_to_multiple_of, padding_side, return_attention_mask
            )
        self._warn_if_too_long(encoded["input_ids"], max_length)
        if return_length:
            encoded["length"] = len(encoded["input_ids"])
        return encoded

    def _truncated(self, ids, pair_ids, total, specials, truncation_strategy, max_length, stride,
                   return_overflowing_tokens, offsets):
        """prepare_for_model's truncation: -> (ids, pair_ids, the overflowing tokens, offsets),
        the offsets (when given) cut like the ids and trimmed."""
        overflow = []  # what return_overflowing_tokens returns when nothing is cut
        cut_overflow = return_overflowing_tokens and total > max_length
        cut = cut_overflow or (truncation_strategy != "do_not_truncate" and max_length is not None
                               and total > max_length)
        if cut and max_length < specials:
            raise ValueError(f"max_length={max_length} is shorter than the {specials} special tokens this "
                             f"tokenizer adds; use max_length >= {specials} or add_special_tokens=False")
        if cut_overflow:
            ids, pair_ids, overflow = truncate_with_overflow(ids, pair_ids, total - max_length, truncation_strategy,
                                                             self.truncation_side, stride)
        elif cut and offsets is None:
            ids, pair_ids = truncate_ids(ids, pair_ids, total - max_length, truncation_strategy,
                                         self.truncation_side)  # fmt: skip
        elif cut:
            ids, pair_ids, *kept = truncate_with_offsets(ids, pair_ids, *offsets, total - max_length,
                                                         truncation_strategy, self.truncation_side)  # fmt: skip
            offsets = tuple(kept)
        if offsets is not None:
            offsets = (self._trim_offsets(ids, offsets[0]),
                       None if pair_ids is None else self._trim_offsets(pair_ids, offsets[1]))  # fmt: skip
        return ids, pair_ids, overflow, offsets

    def _with_specials(self, ids, pair_ids, add_special_tokens, return_token_type_ids, return_special_tokens_mask,
                       offsets) -> dict:
        """prepare_for_model's ids with the special tokens added, and what goes with them:
        token types, the special-tokens mask, offsets laid out like the ids."""
        encoded = {}
        if add_special_tokens:
            encoded["input_ids"] = self.build_inputs_with_special_tokens(ids, pair_ids)
            type_ids = self.create_token_type_ids_from_sequences(ids, pair_ids)
        else:
            encoded["input_ids"] = ids + (pair_ids or [])
            type_ids = [0] * len(encoded["input_ids"])
        if return_token_type_ids:
            encoded["token_type_ids"] = type_ids
        if return_special_tokens_mask or offsets is not None:
            special_mask = (
                self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens else [0] * len(encoded["input_ids"])
            )
        if return_special_tokens_mask:
            encoded["special_tokens_mask"] = special_mask
        if offsets is not None:
            encoded["offset_mapping"] = offsets_with_specials(special_mask, *offsets)
        return encoded

    def _warn_if_too_long(self, ids, max_length):
        """Log once per tokenizer, as transformers does, when an untruncated encoding is
        longer than model_max_length (the model's position table would be overrun); the
        "once" is remembered in ``tokenizer.deprecation_warnings``, as transformers keeps it."""
        if max_length is not None or len(ids) <= self.model_max_length or self.model_max_length == 0:
            return
        if not self.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum", False):
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length for this "
                f"model ({len(ids)} > {self.model_max_length}). Running this sequence through the model will "
                "result in indexing errors"
            )
        self.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True

    def _pad_one(self, encoded, max_length, strategy, pad_to_multiple_of, padding_side, return_attention_mask):
        if strategy != "do_not_pad" and self.pad_token_id is None:
            raise ValueError(
                "padding needs a pad token but this tokenizer has none; set one, e.g. "
                "tokenizer.pad_token = tokenizer.eos_token, or add_special_tokens({'pad_token': '[PAD]'})"
            )
        side = padding_side if padding_side is not None else self.padding_side
        if side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
        return pad_one(
            encoded, max_length, strategy, pad_to_multiple_of, side,
            self.pad_token_id, self.pad_token_type_id, return_attention_mask,
        )  # fmt: skip

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None,
            padding_side=None, return_attention_mask=None, return_tensors=None):  # fmt: skip
        """Pad a dict of lists (one row per sequence) or a list of encodings to equal length."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {key: [row[key] for row in encoded_inputs] for key in encoded_inputs[0]}
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"pad() needs an 'input_ids' field, got fields {sorted(encoded_inputs)}")
        encoded_inputs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in encoded_inputs.items()}
        strategy, _, max_length = resolve_strategies(
            padding, False, max_length, self.model_max_length, pad_to_multiple_of
        )
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        rows = encoded_inputs["input_ids"]
        if not rows or not isinstance(rows[0], (list, tuple)):  # a single sequence
            one = self._pad_one(dict(encoded_inputs), max_length, strategy, pad_to_multiple_of,
                                padding_side, return_attention_mask)  # fmt: skip
            return BatchEncoding(one).convert_to_tensors(return_tensors)
        if strategy == "longest":
            max_length, strategy = max(len(r) for r in rows), "max_length"
        out = {}
        for i in range(len(rows)):
            row = {k: list(v[i]) if isinstance(v[i], (list, tuple)) else v[i] for k, v in encoded_inputs.items()}
            row = self._pad_one(row, max_length, strategy, pad_to_multiple_of, padding_side, return_attention_mask)
            for key, value in row.items():
                out.setdefault(key, []).append(value)
        return BatchEncoding(out).convert_to_tensors(return_tensors)

    def encode(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
               max_length=None, return_tensors=None, **kwargs):  # fmt: skip
        """Ids of one text (or pair); ``text`` may also be a list of tokens or of ids."""
        _reject_unsupported(kwargs)
        split = kwargs.pop("is_split_into_words", False)  # words are tokenized each, as in __call__
        ids = self._text_to_ids(text, split, "text", kwargs, allow_ids=True)
        pair = None if text_pair is None else self._text_to_ids(text_pair, split, "text_pair", kwargs, allow_ids=True)
        encoded = self.prepare_for_model(
            ids, pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
            max_length=max_length,
        )  # fmt: skip
        result = BatchEncoding(input_ids=encoded["input_ids"])
        return result.convert_to_tensors(return_tensors, prepend_batch_axis=True)["input_ids"]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__.startswith(("int", "uint"))


def _to_int_list(token_ids):
    """Accept an int, a list, or a NumPy/CuPy array of ids; return an int or list of ints."""
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    if _is_int(token_ids):
        return int(token_ids)
    if isinstance(token_ids, (list, tuple)) and all(_is_int(i) for i in token_ids):
        return [int(i) for i in token_ids]
    raise TypeError(f"token_ids must be an int or a 1-D sequence of ints, got {type(token_ids).__name__} "
                    f"({token_ids!r:.80})")  # fmt: skip


def _is_batch(text, is_split_into_words, name):
    if isinstance(text, str):
        return False
    if isinstance(text, (list, tuple)):
        if is_split_into_words:
            return bool(text) and isinstance(text[0], (list, tuple))
        return True
    raise TypeError(f"{name} must be a str or a list of str, got {type(text).__name__} ({text!r:.80})")


_UNSUPPORTED = ("return_offsets_mapping",)


def _reject_unsupported(kwargs):
    for name in _UNSUPPORTED:
        if kwargs.pop(name, None):
            raise NotImplementedError(f"{name} is not supported by minibertgen's tokenizers")
    kwargs.pop("verbose", None)  # remaining keywords are checked by tokenize()
