"""Added tokens: strings that bypass the subword model.

Special tokens (``[CLS]``, ``<s>``, ``<mask>`` ...) and tokens a user adds later must
never be cut into subwords, so tokenization first splits the text around them and
only runs the subword model on the pieces in between. This module holds the small
record that describes such a token and the splitting step.
"""
import re
from dataclasses import dataclass


@dataclass
class AddedToken:
    """One added token and how it treats the text around it.

    ``lstrip`` / ``rstrip`` swallow whitespace on that side of the token (RoBERTa's
    ``<mask>`` has ``lstrip=True`` so that ``"a <mask>"`` does not leave a lone space
    before the mask). ``single_word`` only matches when the token is not glued to other
    text. ``normalized`` says whether lower-casing applies to it; special tokens are
    never normalized. ``special`` tokens are the ones ``skip_special_tokens`` removes.
    """

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = None
    special: bool = False

    def __post_init__(self):
        if not isinstance(self.content, str):
            raise TypeError(
                f"AddedToken content must be a str, got {type(self.content).__name__} ({self.content!r})"
            )
        if self.normalized is None:
            # Matches the tokenizers library: special tokens are matched verbatim.
            self.normalized = not self.special

    def __str__(self):
        return self.content

    def to_dict(self):
        """The JSON form used in tokenizer_config.json's ``added_tokens_decoder``."""
        return {
            "content": self.content,
            "lstrip": self.lstrip,
            "normalized": self.normalized,
            "rstrip": self.rstrip,
            "single_word": self.single_word,
            "special": self.special,
        }

    @classmethod
    def from_dict(cls, data):
        """Build from the JSON form; unknown keys (such as ``__type`` or ``id``) are ignored."""
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise ValueError(f"an added token must be a JSON object with a string 'content', got {data!r}")
        fields = ("single_word", "lstrip", "rstrip", "normalized", "special")
        return cls(data["content"], **{k: bool(data[k]) for k in fields if k in data})


def adopt(value):
    """transformers' (the tokenizers library's) AddedToken -> ours, with the same flags; else value."""
    if not isinstance(value, AddedToken) and type(value).__name__ == "AddedToken" \
            and isinstance(getattr(value, "content", None), str):
        fields = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
        return AddedToken.from_dict({name: getattr(value, name) for name in fields if hasattr(value, name)})
    return value


def as_added_token(value, special):
    """Accept a plain string or an AddedToken (ours, transformers', or its JSON dict) and return ours."""
    value = adopt(value)
    if isinstance(value, AddedToken):
        return value
    if isinstance(value, dict):
        return AddedToken.from_dict(value)
    if isinstance(value, str):
        return AddedToken(value, special=special, normalized=not special)
    raise TypeError(f"a token must be a str or AddedToken, got {type(value).__name__} ({value!r})")


def build_matcher(contents):
    """A regex that finds added tokens, leftmost first and, at one position, longest first.

    Python's ``re`` tries alternatives in the order given, so sorting by length
    (longest first) turns "first alternative that matches" into "longest match".
    """
    ordered = sorted(set(c for c in contents if c), key=lambda c: (-len(c), c))
    if not ordered:
        return None
    return re.compile("|".join(re.escape(c) for c in ordered))


def split_on_added_tokens(text, matcher, added):
    """Cut ``text`` into pieces; pieces that are added tokens are kept whole.

    Returns a list of ``(piece, is_added)``. ``added`` maps content -> AddedToken and
    decides the whitespace stripping around each match. As in the reference, a piece
    counts as an added token by its content, after the stripping and re-gluing.
    """
    pieces = []
    position = 0
    for match in matcher.finditer(text) if matcher is not None else ():
        if match.start() > position:
            pieces.append([text[position : match.start()], False])
        pieces.append([match.group(), True])
        position = match.end()
    if position < len(text):
        pieces.append([text[position:], False])
    _apply_token_options(pieces, added)
    return [(piece, piece in added) for piece, _ in pieces if piece]


def _apply_token_options(pieces, added):
    """Strip whitespace next to tokens with lstrip/rstrip and un-split single_word misses.

    Works in place on ``[piece, is_added]`` pairs; neighbours are plain text pieces
    or other tokens, exactly as the reference treats them.
    """
    for i, (piece, is_added) in enumerate(pieces):
        if not is_added:
            continue
        token = added[piece]
        left = pieces[i - 1][0] if i > 0 else None
        right = pieces[i + 1][0] if i + 1 < len(pieces) else None
        if token.rstrip and right:
            pieces[i + 1][0] = right.lstrip()
        if token.lstrip and left:
            pieces[i - 1][0] = left.rstrip()
        # A single_word token glued to a word is not a token: give it back to the word.
        if token.single_word and left and left[-1] != " ":
            pieces[i - 1][0] += piece
            pieces[i][0] = ""
        elif token.single_word and right and right[0] != " ":
            pieces[i + 1][0] = piece + pieces[i + 1][0]
            pieces[i][0] = ""
