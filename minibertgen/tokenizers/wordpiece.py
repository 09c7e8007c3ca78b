"""BertTokenizer: BERT's WordPiece tokenizer, written out step by step.

Two stages, as in the original BERT code:

1. **Basic tokenization** cleans the text and cuts it into words: drop control
   characters, turn every kind of whitespace into a space, put spaces around CJK
   ideographs (Chinese has no spaces, so each character is its own word), lower-case
   and strip accents (uncased models), and cut punctuation off into its own words.
2. **WordPiece** splits each word greedily into the longest vocabulary entries, left
   to right; pieces after the first carry the ``##`` prefix ("unaffable" ->
   "un", "##aff", "##able"). A word that cannot be covered becomes ``[UNK]``.

Ids follow transformers' slow BertTokenizer.  Its fast (Rust) twin differs on one class
of characters: it keeps every unassigned code point (category Cn, e.g. U+FFFE, U+FFFF,
U+0378) where the slow rules delete them as "other" -- so a word holding one is [UNK]
there and the ids differ.  Offsets (return_offsets_mapping) are the fast tokenizer's
wherever the ids agree, including an unknown word's span over such characters.
"""
import os
import re
import unicodedata
from pathlib import Path

from .base import PreTrainedTokenizer

from .characters import (clean_text, is_cjk_ideograph, is_control, is_punctuation, is_whitespace,  # noqa: F401
                         space_out_cjk, split_on_punctuation, strip_accents)


# ----- basic tokenization ----------------------------------------------------


def basic_tokenize(text, lowercase=True, accents=None, cjk=True, never_split=frozenset(), split_punctuation=True):
    """Stage 1: text -> words. ``accents=None`` strips accents exactly when lower-casing."""
    text = clean_text(text)
    if cjk:
        text = space_out_cjk(text)
    # NFC first so that "e" + combining accent and "é" are the same word.
    text = unicodedata.normalize("NFC", text)
    words = []
    for word in text.split():  # str.split() knows every Unicode space, e.g. U+2028
        if word not in never_split:
            if lowercase:
                word = word.lower()
                if accents is not False:
                    word = strip_accents(word)
            elif accents:
                word = strip_accents(word)
        if not split_punctuation or word in never_split:
            words.append(word)
        else:
            words.extend(split_on_punctuation(word))
    # Accent stripping can leave a word empty or with inner spaces: split again.
    return " ".join(words).split()


def basic_tokenize_with_offsets(text, lowercase=True, accents=None, cjk=True, never_split=frozenset()):
    """basic_tokenize that also says where each word's characters came from.

    Returns a list of words, each a list of ``(char, index)`` pairs: one normalised
    character and the position in ``text`` of the character it came from (lower-casing
    or accent stripping can turn one source character into several or none). Unlike
    basic_tokenize, no NFC composition runs first, as in transformers' fast tokenizer.
    """
    spaced = []  # (char, index) after cleaning and CJK spacing; words are split on " "
    for index, char in enumerate(text):
        if char in "\x00\ufffd" or is_control(char):
            continue
        if is_whitespace(char):
            spaced.append((" ", index))
        elif cjk and is_cjk_ideograph(char):
            spaced += [(" ", index), (char, index), (" ", index)]
        else:
            spaced.append((char, index))
    words = []
    for raw in _split_pairs(spaced, lambda char: char.isspace()):
        protected = "".join(char for char, _ in raw) in never_split
        normal = raw if protected else _normalise_pairs(raw, lowercase, accents)
        words.extend([normal] if protected else _split_pairs(normal, is_punctuation, keep=True))
    # Accent stripping can leave a word empty or with inner spaces: split again.
    return [w for word in words for w in _split_pairs(word, lambda char: char.isspace())]


def _normalise_pairs(pairs, lowercase, accents):
    out = []
    for char, index in pairs:
        if lowercase:
            char = char.lower()
        if (lowercase and accents is not False) or (not lowercase and accents):
            char = strip_accents(char)
        out.extend((c, index) for c in char)
    return out


def _split_pairs(pairs, is_separator, keep=False):
    """Split a list of (char, index) pairs at separator characters: dropped, or with
    ``keep`` each kept as a piece of its own (split_on_punctuation for pairs)."""
    words, current = [], []
    for pair in pairs:
        if is_separator(pair[0]):
            if current:
                words.append(current)
            current = []
            if keep:
                words.append([pair])
        else:
            current.append(pair)
    if current:
        words.append(current)
    return words


# ----- WordPiece -------------------------------------------------------------


def wordpiece(word, vocab, unk_token="[UNK]", max_chars=100, prefix="##"):
    """Stage 2: greedy longest-match-first split of one word into vocabulary pieces."""
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        # Try the longest remaining substring first and shrink until it is known.
        for end in range(len(word), start, -1):
            candidate = word[start:end] if start == 0 else prefix + word[start:end]
            if candidate in vocab:
                pieces.append(candidate)
                start = end
                break
        else:  # no prefix of the rest is in the vocabulary: the whole word is unknown
            return [unk_token]
    return pieces


def load_vocab(vocab_file):
    """vocab.txt: one token per line; the line number is the id."""
    if vocab_file is None or not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab_file {str(vocab_file)!r}: no such WordPiece vocabulary file")
    try:
        with open(vocab_file, encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"vocab_file {str(vocab_file)!r} is not UTF-8 text: {exc}") from exc
    vocab = {}
    for index, line in enumerate(lines):
        vocab[line.rstrip("\n")] = index  # a repeated token keeps its last line, as in BERT
    return vocab


def _piece_spans(pieces, pairs, unk_token):
    """(piece, start, end) for WordPiece pieces of one word given as (char, index) pairs.

    The pieces spell the word (minus "##"), so they take consecutive characters; an
    unknown word is one [UNK] spanning all of it.
    """
    if pieces == [unk_token] and "".join(c for c, _ in pairs) != unk_token:
        return [(unk_token, pairs[0][1], pairs[-1][1] + 1)]
    spans, position = [], 0
    for number, piece in enumerate(pieces):
        length = len(piece) - (2 if number > 0 and piece.startswith("##") else 0)
        first, last = pairs[position], pairs[position + length - 1]
        spans.append((piece, first[1], last[1] + 1))
        position += length
    return spans


# Characters transformers' fast (Rust) normaliser keeps although Python calls them "other"
# (category C*), which the slow tokenizer deletes: every unassigned code point (Cn, e.g. the
# noncharacters U+FFFE and U+FFFF) and these format characters newer than its tables.
_FAST_KEEPS_CF = frozenset(map(chr, (0x890, 0x891, 0x8E2, 0x110CD, *range(0x13430, 0x13439))))


def fast_keeps(char):
    return unicodedata.category(char) == "Cn" or char in _FAST_KEEPS_CF


def _deleted_by_both(char, strips_accents):
    if strips_accents and unicodedata.category(char) == "Mn":
        return True
    return (char in "\x00\ufffd" or is_control(char)) and not fast_keeps(char)


def _alone_in_fast(word, cjk):
    """A word the fast tokenizer also keeps alone (a CJK ideograph, a punctuation mark): the
    characters it keeps beside it form words of their own, so its span is never widened."""
    return len(word) == 1 and (is_punctuation(word) or (cjk and is_cjk_ideograph(word)))


def _widen_over_fast_kept(text, start, end, strips_accents):
    """The span the fast tokenizer gives an unknown word: its word also holds the
    characters of :func:`fast_keeps` next to ours (the slow rules delete them, so our
    word lacks them), reached across characters both delete (controls, and accents
    when they are stripped).  Both words are [UNK] when
    the ids agree; the span then runs from its first kept character to its last."""
    def passable(char):
        return fast_keeps(char) or _deleted_by_both(char, strips_accents)

    position = start
    while position > 0 and passable(text[position - 1]):
        position -= 1
        if fast_keeps(text[position]):
            start = position
    position = end
    while position < len(text) and passable(text[position]):
        position += 1
        if fast_keeps(text[position - 1]):
            end = position
    return start, end


class BertTokenizer(PreTrainedTokenizer):
    """WordPiece tokenizer of BERT (transformers' ``BertTokenizer``): ``[CLS] A [SEP] B [SEP]``."""

    vocab_files_names = {"vocab_file": "vocab.txt"}
    _supports_offsets = True

    def __init__(self, vocab_file=None, do_lower_case=True, do_basic_tokenize=True, never_split=None,
                 unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                 mask_token="[MASK]", tokenize_chinese_chars=True, strip_accents=None,
                 clean_up_tokenization_spaces=True, vocab=None, max_input_chars_per_word=100,
                 **kwargs):  # fmt: skip
        self.vocab = dict(vocab) if vocab is not None else load_vocab(vocab_file)
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.do_basic_tokenize = do_basic_tokenize
        self._do_lower_case = do_lower_case
        # The shell lower-cases the text before splitting off added tokens, but only
        # when basic tokenization (which owns the lower-casing) is on.
        self._lowercase_text = bool(do_lower_case and do_basic_tokenize)
        self._never_split = set(never_split or [])
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self.max_input_chars_per_word = max_input_chars_per_word
        super().__init__(
            do_lower_case=do_lower_case, do_basic_tokenize=do_basic_tokenize, never_split=never_split,
            unk_token=unk_token, sep_token=sep_token, pad_token=pad_token, cls_token=cls_token,
            mask_token=mask_token, tokenize_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )  # fmt: skip
        # every argument with a default is recorded, as transformers' tests expect (not deep-copied)
        self.init_kwargs.update(vocab_file=vocab_file, vocab=vocab, max_input_chars_per_word=max_input_chars_per_word)

    @property
    def do_lower_case(self):
        return self._do_lower_case

    @property
    def vocab_size(self):
        return len(self.vocab)

    def get_vocab(self):
        return dict(self.vocab, **self.added_tokens_encoder)

    def _tokenize(self, text):
        if not self.do_basic_tokenize:
            return [p for word in text.split() for p in self._wordpiece(word)]
        protected = self._never_split | set(self.all_special_tokens)
        words = basic_tokenize(
            text, lowercase=self._do_lower_case, accents=self.strip_accents,
            cjk=self.tokenize_chinese_chars, never_split=protected,
        )  # fmt: skip
        tokens = []
        for word in words:
            # Only the user's never_split list skips WordPiece; special tokens were
            # protected from lower-casing above but still go through the vocabulary.
            tokens.extend([word] if word in self._never_split else self._wordpiece(word))
        return tokens

    def _tokenize_with_offsets(self, text):
        """_tokenize, plus each token's (start, end) span in ``text``."""
        if not self.do_basic_tokenize:
            words = [[(char, match.start() + i) for i, char in enumerate(match.group())]
                     for match in re.finditer(r"\S+", text)]  # fmt: skip
        else:
            protected = self._never_split | set(self.all_special_tokens)
            words = basic_tokenize_with_offsets(
                text, lowercase=self._do_lower_case, accents=self.strip_accents,
                cjk=self.tokenize_chinese_chars, never_split=protected,
            )  # fmt: skip
        found, unk = [], str(self.unk_token)
        for pairs in words:
            word = "".join(char for char, _ in pairs)
            pieces = [word] if word in self._never_split else self._wordpiece(word)
            spans = _piece_spans(pieces, pairs, unk)
            if pieces == [unk] and word != unk and self.do_basic_tokenize \
                    and not _alone_in_fast(word, self.tokenize_chinese_chars):
                strips = self.strip_accents if not self._do_lower_case else self.strip_accents is not False
                spans = [(unk, *_widen_over_fast_kept(text, spans[0][1], spans[0][2], bool(strips)))]
            found.extend(spans)
        return found

    def _wordpiece(self, word):
        return wordpiece(word, self.vocab, str(self.unk_token), self.max_input_chars_per_word)

    def _convert_token_to_id(self, token):
        return self.vocab.get(token, self.vocab.get(self.unk_token))

    def _convert_id_to_token(self, index):
        return self.ids_to_tokens.get(index, self.unk_token)

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens).replace(" ##", "").strip()

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if token_ids_1 is None:
            return cls + token_ids_0 + sep
        return cls + token_ids_0 + sep + token_ids_1 + sep

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1] + [0] * len(token_ids_1) + [1]

    def save_vocabulary(self, save_directory, filename_prefix=None):
        name = (filename_prefix + "-" if filename_prefix else "") + "vocab.txt"
        target = Path(save_directory) / name if os.path.isdir(save_directory) else Path(save_directory)
        ordered = sorted(self.vocab.items(), key=lambda item: item[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise ValueError(f"cannot write {str(target)!r}: the vocabulary ids are not 0..{len(ordered) - 1}")
        target.write_text("".join(token + "\n" for token, _ in ordered), encoding="utf-8")
        return (str(target),)

    @classmethod
    def _from_tokenizer_json(cls, path, **kwargs):
        """Build from a fast-tokenizer ``tokenizer.json`` whose model is WordPiece."""
        from .fast_json import wordpiece_kwargs

        return cls(**wordpiece_kwargs(path, kwargs))
