"""RobertaTokenizer: GPT-2 style byte-level BPE, written out step by step.

1. **Pre-tokenize** with a regular expression into chunks: contractions ("'s"),
   runs of letters, runs of digits, runs of other symbols, each with at most one
   leading space, and runs of whitespace. BPE never merges across chunks.
2. **Bytes to characters**: each chunk is encoded as UTF-8 and every byte becomes
   one printable character (``bytes_to_unicode``). So any text, emoji included, is
   covered by a base alphabet of 256 symbols and nothing is ever unknown.
3. **BPE**: starting from single characters, repeatedly merge the adjacent pair with
   the best (lowest) rank in ``merges.txt`` until no ranked pair is left.

Decoding reverses step 2: join the pieces, map characters back to bytes, decode UTF-8.
"""
import json
import os
from pathlib import Path

from .added_tokens import AddedToken
from .base import PreTrainedTokenizer

# GPT-2's split pattern; \p{L} / \p{N} (any letter / any digit) need the `regex` module.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    """Map each byte 0..255 to a printable character.

    Bytes that are already printable Latin-1 characters map to themselves; the other
    68 (control codes, space, ...) are moved to code points 256, 257, ... so that no
    vocabulary entry contains whitespace or control characters. Space (0x20) becomes
    "Ġ" (U+0120), which is why RoBERTa tokens for words after a space start with "Ġ".
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


def bpe(symbols, ranks):
    """Apply merges to a list of symbols until no adjacent pair has a rank.

    Each round finds the best-ranked adjacent pair and merges *every* occurrence of
    it, scanning left to right (so "a a a" with merge "a a" gives "aa a").
    """
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = zip(symbols, symbols[1:])
        best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def read_merges(merges_file):
    """merges.txt: a '#version' header line, then one 'left right' pair per line.

    Like the reference reader, the first line is always treated as the header and the
    text after the last newline is ignored; a later duplicate pair overrides the rank.
    """
    if merges_file is None or not os.path.isfile(merges_file):
        raise FileNotFoundError(f"merges_file {str(merges_file)!r}: no such BPE merges file")
    with open(merges_file, encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1:-1]
    return [tuple(line.split()) for line in lines]


def read_vocab_json(vocab_file):
    if vocab_file is None or not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab_file {str(vocab_file)!r}: no such BPE vocabulary (vocab.json) file")
    try:
        with open(vocab_file, encoding="utf-8") as handle:
            vocab = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"vocab_file {str(vocab_file)!r} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(vocab, dict):
        raise ValueError(f"vocab_file {str(vocab_file)!r} must hold a JSON object token -> id")
    return vocab


def _compile_pattern():
    try:
        import regex
    except ImportError as exc:
        raise ImportError(
            "RobertaTokenizer needs the 'regex' package for its Unicode-aware split pattern: pip install regex"
        ) from exc
    return regex.compile(GPT2_PATTERN)


class RobertaTokenizer(PreTrainedTokenizer):
    """Byte-level BPE tokenizer of RoBERTa (transformers' ``RobertaTokenizer``): ``<s> A </s></s> B </s>``."""

    vocab_files_names = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
    model_input_names = ["input_ids", "attention_mask"]
    _supports_offsets = True
    _CACHE_LIMIT = 100_000

    def __init__(self, vocab_file=None, merges_file=None, errors="replace", bos_token="<s>", eos_token="</s>",
                 sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                 add_prefix_space=False, vocab=None, merges=None, **kwargs):  # fmt: skip
        self.encoder = dict(vocab) if vocab is not None else read_vocab_json(vocab_file)
        self.decoder = {index: token for token, index in self.encoder.items()}
        pairs = [tuple(m) for m in merges] if merges is not None else read_merges(merges_file)
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(pairs)}
        self.errors = errors
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        self.add_prefix_space = add_prefix_space
        self.pattern = _compile_pattern()
        self.cache = {}
        # <mask> swallows the space before it ("Hello <mask>" predicts " world" as one token).
        if isinstance(mask_token, str):
            mask_token = AddedToken(mask_token, lstrip=True, rstrip=False, normalized=False)
        special = dict(bos_token=bos_token, eos_token=eos_token, sep_token=sep_token, cls_token=cls_token,
                       unk_token=unk_token, pad_token=pad_token)  # fmt: skip
        special = {k: AddedToken(v) if isinstance(v, str) else v for k, v in special.items()}
        super().__init__(errors=errors, mask_token=mask_token, add_prefix_space=add_prefix_space, **special, **kwargs)
        # every argument with a default is recorded, as transformers' tests expect (not deep-copied)
        self.init_kwargs.update(vocab_file=vocab_file, merges_file=merges_file, vocab=vocab, merges=merges)

    @property
    def vocab_size(self):
        return len(self.encoder)

    def get_vocab(self):
        return dict(self.encoder, **self.added_tokens_encoder)

    def prepare_for_tokenization(self, text, is_split_into_words=False, add_prefix_space=None, **kwargs):
        # The vocabulary has separate tokens for "Ġworld" (after a space) and "world";
        # a prefix space makes the first word look like any other word.
        if add_prefix_space is None:
            add_prefix_space = self.add_prefix_space
        if (is_split_into_words or add_prefix_space) and text and not text[0].isspace():
            text = " " + text
        return text, kwargs

    def _tokenize(self, text):
        tokens = []
        for chunk in self.pattern.findall(text):
            chars = "".join(self.byte_encoder[b] for b in chunk.encode("utf-8"))
            tokens.extend(self._bpe_cached(chars))
        return tokens

    def _tokenize_with_offsets(self, text):
        """_tokenize, plus each token's (start, end) character span in ``text``.

        A token covers some UTF-8 bytes; its span runs from the character holding its
        first byte to the one holding its last (so the pieces of one "é" share a span).
        """
        found = []
        for match in self.pattern.finditer(text):
            owner = [match.start() + i for i, char in enumerate(match.group()) for _ in char.encode("utf-8")]
            chars = "".join(self.byte_encoder[b] for b in match.group().encode("utf-8"))
            position = 0
            for token in self._bpe_cached(chars):
                found.append((token, owner[position], owner[position + len(token) - 1] + 1))
                position += len(token)
        return found

    def _trim_offsets(self, ids, spans):
        """Trim spaces off the spans of one (already truncated) sequence, as RoBERTa's
        fast tokenizer does by default (trim_offsets=True): "Ġworld" starts at "w"."""
        space = self.byte_encoder[ord(" ")]
        trimmed = []
        for number, (token, (start, end)) in enumerate(zip(self.convert_ids_to_tokens(ids), spans)):
            leading = len(token) - len(token.lstrip(space))
            trailing = len(token) - len(token.rstrip(space))
            # With add_prefix_space, the sequence's first token keeps its one "Ġ".
            if (number == 0 or start == 0) and self.add_prefix_space and leading == 1:
                leading = 0
            if leading:
                start = min(start + leading, end)
            if trailing and end >= trailing:
                end = max(end - trailing, start)
            trimmed.append((start, end))
        return trimmed

    def _bpe_cached(self, chars):
        pieces = self.cache.get(chars)
        if pieces is None:
            pieces = bpe(chars, self.bpe_ranks)
            if len(self.cache) >= self._CACHE_LIMIT:
                self.cache.clear()  # a crude bound; chunks repeat a lot, so the cache refills fast
            self.cache[chars] = pieces
        return pieces

    def _convert_token_to_id(self, token):
        return self.encoder.get(token, self.encoder.get(self.unk_token))

    def _convert_id_to_token(self, index):
        if index not in self.decoder:
            raise ValueError(f"token id {index} is not in the vocabulary (ids 0..{len(self.encoder) - 1} are)")
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens):
        text = "".join(tokens)
        # A special token may hold characters outside the byte alphabet: use their UTF-8.
        data = bytearray()
        for char in text:
            byte = self.byte_decoder.get(char)
            data.extend(char.encode("utf-8") if byte is None else bytes([byte]))
        return data.decode("utf-8", errors=self.errors)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if token_ids_1 is None:
            return cls + token_ids_0 + sep
        return cls + token_ids_0 + sep + sep + token_ids_1 + sep

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1, 1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
        # RoBERTa has no segment embeddings: every position is type 0.
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory, filename_prefix=None):
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"save_directory {str(save_directory)!r} is not a directory")
        prefix = filename_prefix + "-" if filename_prefix else ""
        vocab_path = Path(save_directory) / (prefix + "vocab.json")
        merges_path = Path(save_directory) / (prefix + "merges.txt")
        vocab_path.write_text(
            json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        ordered = sorted(self.bpe_ranks.items(), key=lambda item: item[1])
        merges_path.write_text(
            "#version: 0.2\n" + "".join(" ".join(pair) + "\n" for pair, _ in ordered), encoding="utf-8"
        )
        return str(vocab_path), str(merges_path)

    @classmethod
    def _from_tokenizer_json(cls, path, **kwargs):
        """Build from a fast-tokenizer ``tokenizer.json`` whose model is byte-level BPE."""
        from .fast_json import bytelevel_bpe_kwargs

        return cls(**bytelevel_bpe_kwargs(path, kwargs))
