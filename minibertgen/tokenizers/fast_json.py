"""Read a fast-tokenizer ``tokenizer.json`` into slow-tokenizer constructor arguments.

Many hub repositories ship only ``tokenizer.json`` (the ``tokenizers`` library's
single-file format) and no ``vocab.txt`` / ``vocab.json`` + ``merges.txt``. For the
two models we implement from scratch the file carries everything needed: the
vocabulary, the merges, the normalizer flags and the added tokens. Values already
given by ``tokenizer_config.json`` (passed in ``kwargs``) win over the file's.
"""
from .added_tokens import AddedToken
from .files import read_json


def _load_model(path, expected_type):
    data = read_json(path, "fast tokenizer file")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", expected_type) != expected_type:
        found = model.get("type") if isinstance(model, dict) else None
        raise ValueError(f"{str(path)!r} holds a {found!r} model; expected {expected_type!r}")
    if not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{str(path)!r}: model.vocab must be a JSON object token -> id")
    return data, model


def _added_tokens(data, kwargs):
    """Use tokenizer.json's added tokens when tokenizer_config.json listed none."""
    if kwargs.get("added_tokens_decoder"):
        return
    kwargs["added_tokens_decoder"] = {
        int(entry["id"]): AddedToken.from_dict(entry) for entry in data.get("added_tokens") or []
    }


def _find(component, type_name):
    """The first part of a (possibly ``Sequence``) normalizer/pre-tokenizer of a given type."""
    if not isinstance(component, dict):
        return None
    if component.get("type") == type_name:
        return component
    for key in ("normalizers", "pretokenizers"):
        for part in component.get(key) or []:
            found = _find(part, type_name)
            if found is not None:
                return found
    return None


def wordpiece_kwargs(path, kwargs):
    """Arguments for BertTokenizer from a WordPiece tokenizer.json."""
    data, model = _load_model(path, "WordPiece")
    kwargs = dict(kwargs)
    kwargs["vocab"] = model["vocab"]
    kwargs.pop("vocab_file", None)
    if model.get("continuing_subword_prefix", "##") != "##":
        raise ValueError(f"{str(path)!r}: only the '##' continuing-subword prefix is supported")
    kwargs.setdefault("unk_token", model.get("unk_token", "[UNK]"))
    kwargs.setdefault("max_input_chars_per_word", model.get("max_input_chars_per_word", 100))
    normalizer = _find(data.get("normalizer"), "BertNormalizer")
    if normalizer is not None:
        kwargs.setdefault("do_lower_case", normalizer.get("lowercase", True))
        kwargs.setdefault("strip_accents", normalizer.get("strip_accents"))
        kwargs.setdefault("tokenize_chinese_chars", normalizer.get("handle_chinese_chars", True))
    _added_tokens(data, kwargs)
    return kwargs


def bytelevel_bpe_kwargs(path, kwargs):
    """Arguments for RobertaTokenizer from a byte-level BPE tokenizer.json."""
    data, model = _load_model(path, "BPE")
    byte_level = _find(data.get("pre_tokenizer"), "ByteLevel")
    if byte_level is None:
        raise ValueError(f"{str(path)!r} is a BPE model without a ByteLevel pre-tokenizer; not byte-level BPE")
    kwargs = dict(kwargs)
    kwargs["vocab"] = model["vocab"]
    merges = model.get("merges") or []
    # Older files store "left right" strings, newer ones [left, right] lists.
    kwargs["merges"] = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    kwargs.pop("vocab_file", None)
    kwargs.pop("merges_file", None)
    kwargs.setdefault("add_prefix_space", byte_level.get("add_prefix_space", False))
    _added_tokens(data, kwargs)
    return kwargs
