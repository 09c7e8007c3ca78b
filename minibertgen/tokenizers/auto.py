"""AutoTokenizer: choose the tokenizer class for a directory, then load it.

The choice, in order:
1. ``tokenizer_class`` in tokenizer_config.json ("BertTokenizerFast" counts as
   "BertTokenizer": we only have the slow, exact versions);
2. the vocabulary files present (spiece.model, vocab.txt, vocab.json + merges.txt,
   or the model type inside tokenizer.json);
3. ``model_type`` in config.json (for an encoder-decoder, its encoder's).
"""
from .bytelevel_bpe import RobertaTokenizer
from .files import FAST_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, pop_hub_options, read_json, resolve_directory
from .sentencepiece import BertGenerationTokenizer
from .wordpiece import BertTokenizer

TOKENIZER_CLASSES = {cls.__name__: cls for cls in (BertGenerationTokenizer, BertTokenizer, RobertaTokenizer)}

MODEL_TYPE_TO_CLASS = {
    "bert-generation": BertGenerationTokenizer,
    "bert_generation": BertGenerationTokenizer,
    "bert": BertTokenizer,
    "roberta": RobertaTokenizer,
}


def _class_from_config(directory):
    path = directory / TOKENIZER_CONFIG_FILE
    if not path.is_file():
        return None
    name = read_json(path, "tokenizer config").get("tokenizer_class")
    if name is None:
        return None
    slow_name = name[: -len("Fast")] if name.endswith("Fast") else name
    if slow_name not in TOKENIZER_CLASSES:
        raise ValueError(
            f"{str(path)!r} asks for tokenizer_class {name!r}; minibertgen provides "
            f"{sorted(TOKENIZER_CLASSES)}"
        )
    return TOKENIZER_CLASSES[slow_name]


def _class_from_files(directory):
    if (directory / "spiece.model").is_file():
        return BertGenerationTokenizer
    if (directory / "vocab.txt").is_file():
        return BertTokenizer
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return RobertaTokenizer
    fast = directory / FAST_TOKENIZER_FILE
    if fast.is_file():
        model_type = (read_json(fast, "fast tokenizer file").get("model") or {}).get("type")
        return {"WordPiece": BertTokenizer, "BPE": RobertaTokenizer}.get(model_type)
    return None


def _class_from_model_config(directory):
    path = directory / "config.json"
    if not path.is_file():
        return None
    config = read_json(path, "model config")
    model_type = config.get("model_type")
    if model_type == "encoder-decoder":
        model_type = (config.get("encoder") or {}).get("model_type")
    return MODEL_TYPE_TO_CLASS.get(model_type)


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(path)`` returns the right tokenizer for ``path``."""

    def __init__(self):
        raise TypeError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, use_fast=None, trust_remote_code=False, **kwargs):
        """``use_fast`` is accepted for compatibility and ignored; remote code is never run."""
        if trust_remote_code:
            raise ValueError("trust_remote_code=True is not supported: minibertgen never runs code from a checkpoint")
        vocab_files = ("spiece.model", "vocab.txt", "vocab.json", "merges.txt")
        directory = resolve_directory(pretrained_model_name_or_path, vocab_files, **pop_hub_options(kwargs))
        for pick in (_class_from_config, _class_from_files, _class_from_model_config):
            tokenizer_class = pick(directory)
            if tokenizer_class is not None:
                tokenizer = tokenizer_class.from_pretrained(directory, **kwargs)
                tokenizer.name_or_path = str(pretrained_model_name_or_path)
                return tokenizer
        raise FileNotFoundError(
            f"cannot tell which tokenizer {str(pretrained_model_name_or_path)!r} uses: no tokenizer_class in "
            f"tokenizer_config.json, no spiece.model / vocab.txt / vocab.json+merges.txt / tokenizer.json, "
            f"and no known model_type in config.json"
        )
