"""Reading and writing tokenizer directories in transformers' layout.

A tokenizer directory holds the vocabulary file(s) plus three small JSON files:
``tokenizer_config.json`` (constructor arguments, ``tokenizer_class`` and
``added_tokens_decoder``), ``special_tokens_map.json`` and, when tokens were added
beyond the base vocabulary, ``added_tokens.json``. Everything is read with ``json``:
loading never imports or runs code named in these files (``auto_map`` is ignored).
"""
import copy
import json
import os
from pathlib import Path

from .added_tokens import AddedToken
from .chat_template import CHAT_TEMPLATE_DIR, CHAT_TEMPLATE_FILE, read_chat_templates, write_chat_templates

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
FAST_TOKENIZER_FILE = "tokenizer.json"
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def read_json(path, what):
    """Load a JSON file, turning I/O and syntax problems into errors that name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid UTF-8 JSON: {exc}") from exc


def resolve_directory(name_or_path, filenames=(), **hub_options):
    """A local directory, or a hub id found in (or, if allowed, fetched into) the HF cache.

    ``hub_options`` are ``revision``, ``cache_dir`` and ``local_files_only``; the lookup
    itself is the checkpoint package's, so models and tokenizers resolve names alike.
    """
    from ..checkpoint.hub import resolve_model_dir

    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_file():
        raise FileNotFoundError(f"pretrained_model_name_or_path {str(name_or_path)!r} is a file, expected a directory")
    patterns = list(filenames) + [TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, ADDED_TOKENS_FILE,
                                  FAST_TOKENIZER_FILE, "config.json", CHAT_TEMPLATE_FILE,
                                  f"{CHAT_TEMPLATE_DIR}/*.jinja"]  # fmt: skip
    return resolve_model_dir(path if path.is_dir() else name_or_path, allow_patterns=patterns, **hub_options)


HUB_OPTIONS = ("revision", "cache_dir", "local_files_only")


def pop_hub_options(kwargs):
    """Take the hub lookup arguments out of from_pretrained's keyword arguments."""
    return {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}


def _decode_added_token(value):
    """``{"__type": "AddedToken", ...}`` (transformers' saved form) -> AddedToken."""
    if isinstance(value, dict) and "content" in value:
        return AddedToken.from_dict(value)
    return value


def _encode_added_token(value, keep_special=True):
    if isinstance(value, AddedToken):
        data = value.to_dict()
        if keep_special:
            data["__type"] = "AddedToken"
        else:
            data.pop("special")
        return data
    if isinstance(value, (list, tuple)):
        return [_encode_added_token(v, keep_special) for v in value]
    if isinstance(value, dict):
        return {k: _encode_added_token(v, keep_special) for k, v in value.items()}
    return value


def load_init_kwargs(cls, directory):
    """Constructor arguments for ``cls`` from a tokenizer directory (without vocab paths)."""
    config_path = directory / TOKENIZER_CONFIG_FILE
    kwargs = read_json(config_path, "tokenizer config") if config_path.is_file() else {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"tokenizer config {str(config_path)!r} must hold a JSON object")
    for key in ("tokenizer_class", "auto_map", "init_inputs", "tokenizer_file", "special_tokens_map_file"):
        kwargs.pop(key, None)
    for key in _SPECIAL_KEYS:
        kwargs[key] = _decode_added_token(kwargs[key]) if key in kwargs else kwargs.get(key)
        if kwargs[key] is None:
            kwargs.pop(key)
    if "additional_special_tokens" in kwargs:
        kwargs["additional_special_tokens"] = [_decode_added_token(t) for t in kwargs["additional_special_tokens"] or []]
    decoder = {}
    if "added_tokens_decoder" in kwargs:
        for index, token in kwargs["added_tokens_decoder"].items():
            decoder[int(index)] = AddedToken.from_dict(token)
    else:
        _merge_legacy_files(directory, kwargs, decoder)
    kwargs["added_tokens_decoder"] = decoder
    # Special tokens take their strip/normalize flags from the added-token table.
    by_content = {t.content: t for t in decoder.values()}
    for key in _SPECIAL_KEYS:
        if key in kwargs and str(kwargs[key]) in by_content:
            kwargs[key] = by_content[str(kwargs[key])]
    return kwargs


def _merge_legacy_files(directory, kwargs, decoder):
    """Older directories keep special tokens and added tokens in two side files."""
    special_path = directory / SPECIAL_TOKENS_MAP_FILE
    if special_path.is_file():
        for key, value in read_json(special_path, "special tokens map").items():
            if key == "additional_special_tokens":
                extra = list(kwargs.get("additional_special_tokens") or [])
                extra += [_as_special(t) for t in value if _as_special(t) not in extra]
                kwargs[key] = extra
            elif key in _SPECIAL_KEYS:
                kwargs[key] = _as_special(value)
    added_path = directory / ADDED_TOKENS_FILE
    if added_path.is_file():
        specials = {str(kwargs[k]) for k in _SPECIAL_KEYS if kwargs.get(k) is not None}
        specials |= {str(t) for t in kwargs.get("additional_special_tokens") or []}
        for content, index in read_json(added_path, "added tokens file").items():
            special = content in specials
            decoder[int(index)] = AddedToken(content, normalized=not special, special=special)


def _as_special(value):
    if isinstance(value, dict):
        return AddedToken.from_dict({**value, "special": True})
    return value


class FilesMixin:
    """``from_pretrained`` / ``save_pretrained`` for PreTrainedTokenizer."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load from a directory with tokenizer_config.json and the vocabulary file(s)."""
        directory = resolve_directory(
            pretrained_model_name_or_path, cls.vocab_files_names.values(), **pop_hub_options(kwargs)
        )
        init_kwargs = load_init_kwargs(cls, directory)
        templates = read_chat_templates(directory)
        if templates is not None:  # chat_template.jinja (and additional_chat_templates/) win over the config
            init_kwargs["chat_template"] = templates
        missing = []
        for argument, filename in cls.vocab_files_names.items():
            if (directory / filename).is_file():
                init_kwargs.setdefault(argument, str(directory / filename))
            elif argument not in kwargs:
                missing.append(filename)
        init_kwargs.update(kwargs)
        init_kwargs["name_or_path"] = str(pretrained_model_name_or_path)
        if missing:
            if (directory / FAST_TOKENIZER_FILE).is_file() and hasattr(cls, "_from_tokenizer_json"):
                return cls._from_tokenizer_json(directory / FAST_TOKENIZER_FILE, **init_kwargs)
            raise FileNotFoundError(
                f"{cls.__name__}.from_pretrained: {str(directory)!r} has no {', '.join(missing)}"
                f" (the vocabulary file{'s' if len(missing) > 1 else ''} this tokenizer needs)"
            )
        return cls(**init_kwargs)

    def save_pretrained(self, save_directory, filename_prefix=None, save_jinja_files=True):
        """Write the vocabulary and config files; returns the paths written.  A chat template
        goes to chat_template.jinja (save_jinja_files=False: into tokenizer_config.json)."""
        directory = Path(save_directory)
        if directory.is_file():
            raise FileExistsError(f"save_directory {str(directory)!r} is a file, expected a directory")
        directory.mkdir(parents=True, exist_ok=True)
        prefix = filename_prefix + "-" if filename_prefix else ""
        config = copy.deepcopy(self.init_kwargs)
        for key in set(config) | {"model_max_length", "clean_up_tokenization_spaces"}:
            value = getattr(self, key, None)
            if value is not None and not callable(value):
                config[key] = value
        config.update(self.special_tokens_map)
        config.setdefault("extra_special_tokens", {})
        # Vocabulary contents (given in memory when read from tokenizer.json) go to the
        # vocabulary files, not into the config.
        dropped = ["name_or_path", "special_tokens_map_file", "tokenizer_file", "vocab", "merges"]
        for key in list(self.vocab_files_names) + dropped:
            config.pop(key, None)
        config = _encode_added_token(config)
        config["added_tokens_decoder"] = {str(i): t.to_dict() for i, t in self.added_tokens_decoder.items()}
        config["tokenizer_class"] = type(self).__name__
        templates = write_chat_templates(self.chat_template, directory, prefix, config, save_jinja_files)
        written = [directory / (prefix + TOKENIZER_CONFIG_FILE), directory / (prefix + SPECIAL_TOKENS_MAP_FILE)]
        _write_json(written[0], config)
        written += templates
        _write_json(written[1], _encode_added_token(self.special_tokens_map_extended, keep_special=False))
        beyond = {t: i for t, i in self.added_tokens_encoder.items() if i >= self.vocab_size}
        if beyond:
            written.append(directory / (prefix + ADDED_TOKENS_FILE))
            _write_json(written[-1], beyond)
        written += [Path(p) for p in self.save_vocabulary(str(directory), filename_prefix=filename_prefix)]
        return tuple(str(p) for p in written)


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
