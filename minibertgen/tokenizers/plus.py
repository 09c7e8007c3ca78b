"""transformers' older encoding entry points, kept for code (and tests) that still call them:
``encode_plus`` / ``batch_encode_plus`` (texts, pre-split tokens or ids) and
``prepare_seq2seq_batch`` (sources plus targets as ``labels``).  They go through the
same steps as ``tokenizer(...)``: calling.py."""
import warnings

from .encoding import BatchEncoding

# The keyword arguments prepare_for_model takes for one row (padding is done per batch).
_ROW_OPTIONS = ("add_special_tokens", "truncation", "return_token_type_ids", "return_special_tokens_mask",
                "return_length", "stride", "return_overflowing_tokens")
_BATCH_OPTIONS = ("padding", "max_length", "pad_to_multiple_of", "padding_side", "return_attention_mask",
                  "return_tensors")


class PlusMixin:
    """Mixed into PreTrainedTokenizer next to CallMixin."""

    is_fast = False  # these are transformers' slow (Python) tokenizers, re-written

    def encode_plus(self, text, text_pair=None, is_split_into_words=False, return_tensors=None, **kwargs):
        """One text (or pair) -> BatchEncoding; ``text`` may be a str, a list of tokens or of ids."""
        if _is_text(text, is_split_into_words) and (text_pair is None or _is_text(text_pair, is_split_into_words)):
            return self(text, text_pair, is_split_into_words=is_split_into_words, return_tensors=return_tensors,
                        **kwargs)
        row, options, tokenize = _split_options(kwargs)
        ids = self._text_to_ids(text, is_split_into_words, "text", tokenize, allow_ids=True)
        pair = None if text_pair is None else self._text_to_ids(text_pair, is_split_into_words, "text_pair",
                                                                tokenize, allow_ids=True)
        options.pop("return_tensors", None)
        encoded = self.prepare_for_model(ids, pair, **row, **options)
        return BatchEncoding(encoded).convert_to_tensors(return_tensors, prepend_batch_axis=True)

    def batch_encode_plus(self, batch_text_or_text_pairs, is_split_into_words=False, **kwargs):
        """A list of texts or (text, text_pair) pairs -> one padded BatchEncoding.

        As in transformers, an item that is a list/tuple of two is a pair (unless
        is_split_into_words and its items are words); items may be tokens or ids.
        """
        if not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TypeError(f"batch_text_or_text_pairs must be a list, got {type(batch_text_or_text_pairs).__name__}")
        row, options, tokenize = _split_options(kwargs)
        id_pairs = []
        for index, item in enumerate(batch_text_or_text_pairs):
            if not isinstance(item, (list, tuple)) or (is_split_into_words and not isinstance(item[0], (list, tuple))):
                first, second = item, None
            elif len(item) == 2:
                first, second = item
            else:
                raise ValueError(f"batch_text_or_text_pairs[{index}] has {len(item)} items: expected a text or a "
                                 "(text, text_pair) pair")
            ids = self._text_to_ids(first, is_split_into_words, f"batch[{index}]", tokenize, allow_ids=True)
            pair = None if second is None else self._text_to_ids(second, is_split_into_words,
                                                                 f"batch[{index}] pair", tokenize, allow_ids=True)
            id_pairs.append((ids, pair))
        batch = {name: options.get(name) for name in _BATCH_OPTIONS}
        batch["padding"] = batch["padding"] or False
        return self._encode_batch(id_pairs, **batch, **row)

    def prepare_seq2seq_batch(self, src_texts, tgt_texts=None, max_length=None, max_target_length=None,
                              padding="longest", return_tensors=None, truncation=True, **kwargs):
        """Sources and (optionally) targets in one BatchEncoding, targets' ids as ``labels``.

        Deprecated in transformers (which warns, as we do): call ``tokenizer(src_texts,
        text_target=tgt_texts, ...)`` instead.
        """
        warnings.warn("prepare_seq2seq_batch is deprecated (as in transformers): use tokenizer(src_texts, "
                      "text_target=tgt_texts, ...)", FutureWarning, stacklevel=2)
        kwargs.pop("src_lang", None)
        kwargs.pop("tgt_lang", None)
        if max_length is None:
            max_length = self.model_max_length
        common = dict(add_special_tokens=True, return_tensors=return_tensors, padding=padding,
                      truncation=truncation, **kwargs)
        inputs = self(src_texts, max_length=max_length, **common)
        if tgt_texts is None:
            return inputs
        labels = self(tgt_texts, max_length=max_target_length if max_target_length is not None else max_length,
                      **common)
        inputs["labels"] = labels["input_ids"]
        return inputs


def _is_text(value, is_split_into_words):
    return isinstance(value, str) or (
        is_split_into_words and isinstance(value, (list, tuple)) and all(isinstance(w, str) for w in value))


def _split_options(kwargs):
    """(row options, batch options, tokenize options) out of encode_plus-style kwargs."""
    kwargs = dict(kwargs)
    if kwargs.pop("return_offsets_mapping", False):
        raise NotImplementedError("return_offsets_mapping=True needs text (a str): call tokenizer(text, ...)")
    kwargs.pop("verbose", None)
    row = {name: kwargs.pop(name) for name in _ROW_OPTIONS if name in kwargs}
    options = {name: kwargs.pop(name) for name in _BATCH_OPTIONS if name in kwargs}
    return row, options, kwargs
