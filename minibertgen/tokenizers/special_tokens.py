"""The special tokens of a tokenizer, as transformers exposes them: ``bos_token`` ... ``mask_token``
(and their ``*_id``), ``additional_special_tokens``, ``special_tokens_map`` and the
``all_special_*`` lists.  Mixed into PreTrainedTokenizer (base.py), which holds ``_special``
and ``_additional_special``.
"""
from .added_tokens import AddedToken, as_added_token

__all__ = ["SPECIAL_TOKEN_NAMES", "SpecialTokensMixin"]

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class SpecialTokensMixin:
    """The special-token properties of PreTrainedTokenizer."""

    @property
    def additional_special_tokens(self):
        """The extra special tokens; None after ``tokenizer.additional_special_tokens = None``,
        as in transformers."""
        if getattr(self, "_additional_special_none", False):
            return None
        return [str(t) for t in self._additional_special]

    @additional_special_tokens.setter
    def additional_special_tokens(self, tokens):
        self._additional_special_none = tokens is None
        if tokens is not None and (isinstance(tokens, str) or not isinstance(tokens, (list, tuple))):
            raise TypeError(f"additional_special_tokens must be a list of str or None, got {tokens!r:.80}")
        self._additional_special = [as_added_token(t, special=True) for t in tokens or []]

    @property
    def additional_special_tokens_ids(self):
        tokens = self.additional_special_tokens
        return None if tokens is None else self.convert_tokens_to_ids(tokens)

    @additional_special_tokens_ids.setter
    def additional_special_tokens_ids(self, ids):
        """Set the extra special tokens by id (each id must be in the vocabulary)."""
        if ids is None:
            self.additional_special_tokens = None
            return
        tokens = []
        for index in ids:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
                raise ValueError(f"additional_special_tokens_ids holds {index!r}: expected token ids in "
                                 f"[0, {len(self)})")
            tokens.append(self.convert_ids_to_tokens(index))
        self.additional_special_tokens = tokens

    @property
    def special_tokens_map_extended(self):
        result = {name: value for name, value in self._special.items() if value}
        if self._additional_special:
            result["additional_special_tokens"] = list(self._additional_special)
        return result

    @property
    def special_tokens_map(self):
        return {
            name: ([str(t) for t in value] if isinstance(value, list) else str(value))
            for name, value in self.special_tokens_map_extended.items()
        }

    @property
    def all_special_tokens_extended(self):
        seen, result = set(), []
        for value in self.special_tokens_map_extended.values():
            for token in value if isinstance(value, list) else [value]:
                if str(token) not in seen:
                    seen.add(str(token))
                    result.append(token)
        return result

    @property
    def all_special_tokens(self):
        # Asked for on every tokenize/decode call, so cached until a special token changes.
        key = (tuple(map(str, self._special.values())), tuple(map(str, self._additional_special)))
        if getattr(self, "_all_special_key", None) != key:
            self._all_special_key = key
            self._all_special_cache = [str(t) for t in self.all_special_tokens_extended]
        return list(self._all_special_cache)

    @property
    def all_special_ids(self):
        return self.convert_tokens_to_ids(self.all_special_tokens)


def _special_property(name):
    def get(self):
        value = self._special[name]
        return None if value is None else str(value)

    def set_(self, value):
        if value is not None and not isinstance(value, (str, AddedToken)):
            raise TypeError(f"{name} must be a str or AddedToken, got {type(value).__name__} ({value!r})")
        self._special[name] = value

    return property(get, set_, doc=f"The {name.replace('_', ' ')} as a string, or None.")


def _special_id_property(name):
    def get(self):
        token = getattr(self, name)
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_(self, value):
        setattr(self, name, None if value is None else self.convert_ids_to_tokens(int(value)))

    return property(get, set_, doc=f"The id of the {name.replace('_', ' ')}, or None.")


for _name in SPECIAL_TOKEN_NAMES:
    setattr(SpecialTokensMixin, _name, _special_property(_name))
    setattr(SpecialTokensMixin, _name + "_id", _special_id_property(_name))
