"""The character classes BERT's basic tokenization works with (as the original BERT code
and transformers' slow BertTokenizer define them), and the small text steps built on them:
cleaning, spacing out CJK ideographs, stripping accents, cutting off punctuation."""
import unicodedata


# ----- character classes -----------------------------------------------------


def is_whitespace(char):
    """Space-like characters. Tab/newline/CR count although Unicode calls them controls."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char):
    """Control and other invisible characters (category C*), except tab/newline/CR."""
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_punctuation(char):
    """Unicode punctuation plus every ASCII non-alphanumeric symbol.

    BERT treats ``$``, ``^``, `````, ``+`` ... as punctuation too, although Unicode
    files them under symbols (S*), so that "$5" splits into "$", "5".
    """
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


# CJK Unified Ideographs blocks. Hangul, Hiragana and Katakana are deliberately absent:
# those scripts use spaces, so their words are kept together.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def is_cjk_ideograph(char):
    cp = ord(char)
    if cp < 0x3400:  # fast exit for Latin, Greek, Cyrillic ... (all below the first block)
        return False
    return any(low <= cp <= high for low, high in _CJK_RANGES)


def clean_text(text):
    """Remove NUL, U+FFFD and control characters; map all whitespace to a plain space."""
    out = []
    for char in text:
        if char in "\x00\ufffd" or is_control(char):
            continue
        out.append(" " if is_whitespace(char) else char)
    return "".join(out)


def space_out_cjk(text):
    return "".join(f" {char} " if is_cjk_ideograph(char) else char for char in text)


def strip_accents(text):
    """Decompose (NFD) so accents become separate marks (category Mn), then drop them."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def split_on_punctuation(word):
    """'hello,world!' -> ['hello', ',', 'world', '!']."""
    pieces, current = [], []
    for char in word:
        if is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces
