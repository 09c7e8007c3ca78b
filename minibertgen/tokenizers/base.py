"""The shared tokenizer shell: special tokens, added tokens, encode and decode.

A concrete tokenizer (SentencePiece, WordPiece, byte-level BPE) supplies five small
things: ``vocab_size``, ``get_vocab``, ``_tokenize`` (text -> subword strings),
``_convert_token_to_id`` / ``_convert_id_to_token`` and ``convert_tokens_to_string``.
Everything else (splitting around special tokens, adding ``[CLS]``/``[SEP]``,
truncation, padding, arrays, decoding) lives here once, following the behaviour of
transformers' slow ``PreTrainedTokenizer`` so ids and strings come out identical.
"""
import copy
import inspect
import re

from ..suggest import unexpected_keywords
from .added_tokens import AddedToken, adopt, as_added_token, build_matcher, split_on_added_tokens
from .calling import CallMixin
from .chat_template import ChatTemplateMixin
from .decoding import DecodeMixin
from .files import FilesMixin
from .plus import PlusMixin
from .encoding import VERY_LARGE_INTEGER
from .special_tokens import SPECIAL_TOKEN_NAMES, SpecialTokensMixin


class PreTrainedTokenizer(SpecialTokensMixin, CallMixin, DecodeMixin, PlusMixin, FilesMixin, ChatTemplateMixin):
    """Base class of the three tokenizers; not used on its own."""

    vocab_files_names = {}
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    # Lower-case text (except special tokens) before splitting; WordPiece turns it on.
    _lowercase_text = False
    # Whether tokenize_with_offsets works (return_offsets_mapping=True), as for the
    # tokenizers transformers has a fast version of.
    _supports_offsets = False

    def __init__(self, **kwargs):
        for key in kwargs:  # an attribute named like a method would shadow it: transformers refuses too
            if callable(getattr(type(self), key, None)):
                raise AttributeError(f"{key} conflicts with the method {key} in {type(self).__name__}: "
                                     "pick another keyword argument name")
        self.init_inputs = ()
        self.init_kwargs = copy.deepcopy(kwargs)
        self.deprecation_warnings = {}  # warnings given once, by key (transformers' attribute)
        self._set_chat_template(kwargs.pop("chat_template", None))
        self.name_or_path = kwargs.pop("name_or_path", "")
        model_max_length = kwargs.pop("model_max_length", kwargs.pop("max_len", None))
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self.padding_side = _check_side("padding_side", kwargs.pop("padding_side", self.padding_side))
        self.truncation_side = _check_side("truncation_side", kwargs.pop("truncation_side", self.truncation_side))
        self.model_input_names = list(kwargs.pop("model_input_names", self.model_input_names))
        self.clean_up_tokenization_spaces = bool(kwargs.pop("clean_up_tokenization_spaces", False))
        self.split_special_tokens = bool(kwargs.pop("split_special_tokens", False))
        self.pad_token_type_id = 0
        self._special = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self._additional_special = []
        for name in SPECIAL_TOKEN_NAMES:
            if kwargs.get(name) is not None:
                setattr(self, name, kwargs[name])
        extra = kwargs.get("additional_special_tokens") or []
        if not isinstance(extra, (list, tuple)):
            raise TypeError(f"additional_special_tokens must be a list of str, got {type(extra).__name__}")
        self._additional_special = [as_added_token(t, special=True) for t in extra]
        self._added_decoder = {}  # id -> AddedToken
        for index, token in (kwargs.get("added_tokens_decoder") or {}).items():
            self._added_decoder[int(index)] = as_added_token(token, special=False)
        self._added_encoder = {t.content: i for i, t in self._added_decoder.items()}
        self._refresh_added()
        # Special tokens are added tokens too, so that the text is split around them.
        self._add_tokens(
            [t for t in self.all_special_tokens_extended if not (isinstance(t, str) and t in self._added_encoder)],
            special_tokens=True,
        )

    # ----- vocabulary hooks (the subclasses fill these in) -----
    @property
    def vocab_size(self):
        raise NotImplementedError

    def get_vocab(self):
        raise NotImplementedError

    def _tokenize(self, text):
        raise NotImplementedError

    def _convert_token_to_id(self, token):
        raise NotImplementedError

    def _convert_id_to_token(self, index):
        raise NotImplementedError

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens)

    def prepare_for_tokenization(self, text, is_split_into_words=False, **kwargs):
        return text, kwargs

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return token_ids_0 if token_ids_1 is None else token_ids_0 + token_ids_1

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        return [0] * (len(token_ids_0) + (len(token_ids_1) if token_ids_1 else 0))

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
        # The reference's generic rule: one cls and one sep slot if those tokens exist.
        # (For BertGeneration, which adds no special tokens, this makes the list one
        # longer than input_ids; transformers does the same, so we keep it.)
        cls_len = int(self.cls_token_id is not None)
        sep_len = int(self.sep_token_id is not None)
        first = [0] * (cls_len + len(token_ids_0) + sep_len)
        return first if token_ids_1 is None else first + [1] * (len(token_ids_1) + sep_len)

    def num_special_tokens_to_add(self, pair=False):
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    # ----- added tokens -----
    @property
    def added_tokens_decoder(self):
        return dict(sorted(self._added_decoder.items()))

    @property
    def added_tokens_encoder(self):
        return {t.content: i for i, t in sorted(self._added_decoder.items())}

    def get_added_vocab(self):
        return dict(self._added_encoder)

    def __len__(self):
        return self._total_vocab_size

    def add_tokens(self, new_tokens, special_tokens=False):
        """Add tokens that the subword model must never split; returns how many are new ids."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        return self._add_tokens(list(new_tokens), special_tokens=special_tokens)

    def add_special_tokens(self, special_tokens_dict, replace_additional_special_tokens=True):
        """Set special tokens by role, e.g. ``{"pad_token": "[PAD]"}``, adding them if new."""
        to_add = []
        for name, value in special_tokens_dict.items():
            if name == "additional_special_tokens":
                tokens = [as_added_token(t, special=True) for t in value]
                if replace_additional_special_tokens and tokens:
                    self._additional_special = list(tokens)
                else:
                    known = set(self.additional_special_tokens)
                    self._additional_special += [t for t in tokens if str(t) not in known]
                to_add += tokens
            elif name in SPECIAL_TOKEN_NAMES:
                token = as_added_token(value, special=True)
                setattr(self, name, token)
                to_add.append(token)
            else:
                raise ValueError(
                    f"special_tokens_dict key {name!r} is not a special token role; expected one of "
                    f"{SPECIAL_TOKEN_NAMES + ('additional_special_tokens',)}"
                )
        return self._add_tokens(to_add, special_tokens=True)

    def _add_tokens(self, new_tokens, special_tokens=False):
        vocab = self.get_vocab()
        next_id = len(vocab)
        added = 0
        for token in map(adopt, new_tokens):
            if not isinstance(token, (str, AddedToken)):
                raise TypeError(f"new_tokens must hold str or AddedToken, got {type(token).__name__} ({token!r})")
            if str(token) == "":
                continue
            if isinstance(token, str):
                if token in self._added_encoder:
                    continue
                is_special = special_tokens or token in self.all_special_tokens
                token = AddedToken(token, normalized=not is_special, special=is_special)
            elif special_tokens:
                token = copy.copy(token)
                token.special = True
            if not token.special and token.normalized and self._lowercase_text:
                token.content = token.content.lower()
            if token.content in vocab:
                index = vocab[token.content]
            else:
                index = vocab[token.content] = next_id + added
                added += 1
            if token.special and str(token) not in self.all_special_tokens:
                self._additional_special.append(token)
            self._added_decoder[index] = token
            self._added_encoder[token.content] = index
        self._refresh_added()
        return added

    def _refresh_added(self):
        """Rebuild the matcher for added tokens and the cached full vocabulary size."""
        self._added_matcher = build_matcher(self._added_encoder)
        self._total_vocab_size = len(self.get_vocab())

    # ----- text <-> tokens <-> ids -----
    def tokenize(self, text, **kwargs):
        """Split ``text`` into tokens: added tokens whole, everything else by the subword model."""
        text, split_special = self._prepared(text, kwargs)
        if self._lowercase_text:
            text = self._lowercase_outside_special(text)
        tokens = []
        for piece, is_added in self._pieces(text, split_special):
            tokens.extend([piece] if is_added else self._tokenize(piece))
        return tokens

    def _prepared(self, text, kwargs):
        """What tokenize and tokenize_with_offsets check and prepare alike: -> (text, split_special)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__} ({text!r:.60})")
        split_special = kwargs.pop("split_special_tokens", self.split_special_tokens)
        text, kwargs = self.prepare_for_tokenization(text, **kwargs)
        if kwargs:
            known = [*inspect.signature(type(self).__call__).parameters, "split_special_tokens"]
            raise TypeError(unexpected_keywords("tokenize()", sorted(kwargs), known))
        return text, split_special

    def _pieces(self, text, split_special):
        """(piece, is_added) in order: added tokens whole, the text between them for the subword model."""
        if split_special:
            return [(text, False)] if text else []
        return split_on_added_tokens(text, self._added_matcher, self._token_for_content())

    def tokenize_with_offsets(self, text, **kwargs):
        """``tokenize`` plus each token's ``(start, end)`` character span in ``text``.

        Returns ``(tokens, spans)``. The spans follow transformers' fast tokenizers:
        they point at the original characters even where lower-casing or accent
        stripping changed them, and an added token spans its own characters.
        """
        if not self._supports_offsets:
            raise NotImplementedError(
                f"return_offsets_mapping=True is not available for {type(self).__name__}: transformers "
                "has only a slow (Python) version of it, which raises the same; use return_offsets_mapping=False"
            )
        prepared, split_special = self._prepared(text, kwargs)
        prefix_length = len(prepared) - len(text)  # characters put in front (RoBERTa's prefix space)
        source = list(range(len(prepared)))  # position in `prepared` of each character split below
        if self._lowercase_text:
            lowered = self._lowercase_outside_special(prepared)
            if len(lowered) != len(prepared):  # e.g. "İ" lower-cases to two characters
                source = [i for i, char in enumerate(prepared) for _ in char.lower()]
            prepared = lowered
        tokens, spans, cursor = [], [], 0
        for piece, is_added in self._pieces(prepared, split_special):
            start = prepared.find(piece, cursor)  # pieces come in order; stripping only drops spaces
            cursor = start + len(piece)
            found = [(piece, 0, len(piece))] if is_added else self._tokenize_with_offsets(piece)
            for token, first, end in found:
                tokens.append(token)
                spans.append(_source_span(source, start + first, start + end))
        # Spans of characters that prepare_for_tokenization put in front shrink to the text's start.
        return tokens, [(max(start - prefix_length, 0), max(end - prefix_length, 0)) for start, end in spans]

    def _tokenize_with_offsets(self, text):
        """(token, start, end) for each token of ``_tokenize(text)``; subclasses with offsets fill it in."""
        raise NotImplementedError

    def _trim_offsets(self, ids, spans):
        """Adjust the spans of one sequence after truncation; RoBERTa trims spaces here."""
        return spans

    def _token_for_content(self):
        return {t.content: t for t in self._added_decoder.values()}

    def _lowercase_outside_special(self, text):
        """Lower-case the text, leaving special and protected added tokens alone.

        The reference lower-cases one character at a time, which differs from
        ``str.lower`` on a whole string only for the Greek capital sigma (whole-string
        lowering turns a word-final one into the final form "ς"), so only text with a
        sigma takes the slow per-character path.
        """
        keep = list(self.all_special_tokens)
        keep += [t.content for t in self._added_decoder.values() if not t.special and t.normalized]
        keep = tuple(k for k in keep if k)
        if getattr(self, "_keep_key", None) != keep:
            # Alternatives in the reference's order (first listed wins, not longest).
            self._keep_key = keep
            self._keep_matcher = re.compile("|".join(re.escape(k) for k in keep)) if keep else None
        out, position = [], 0
        for match in self._keep_matcher.finditer(text) if self._keep_matcher else ():
            out.append(_lower_per_char(text[position : match.start()]))
            out.append(match.group())
            position = match.end()
        out.append(_lower_per_char(text[position:]))
        return "".join(out)

    def convert_tokens_to_ids(self, tokens):
        if tokens is None:
            return None
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _token_to_id(self, token):
        if token is None:
            return None
        if token in self._added_encoder:
            return self._added_encoder[token]
        return self._convert_token_to_id(token)

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        if isinstance(ids, int):
            return self._id_to_token(ids)
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in special]

    def _id_to_token(self, index):
        if index in self._added_decoder:
            return self._added_decoder[index].content
        return self._convert_id_to_token(index)

    def __repr__(self):
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
            f"special_tokens={self.special_tokens_map})"
        )


def _source_span(source, start, end):
    """Map a [start, end) range of split characters back to the text they came from."""
    if end <= start:
        position = source[start] if start < len(source) else (source[-1] + 1 if source else 0)
        return position, position
    return source[start], source[end - 1] + 1


def _lower_per_char(text):
    if "\u03a3" in text:
        return "".join(char.lower() for char in text)
    return text.lower()


def _check_side(name, value):
    if value not in ("right", "left"):
        raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
    return value
