"""PretrainedConfig: what every model config shares.

A config is a bag of named hyper-parameters read from and written to ``config.json``,
with transformers' key names and defaults.  Keys we do not know are kept and written
back unchanged, so a config survives a round trip through minibertgen untouched.
Configs are data: creating one checks almost nothing (as transformers); ``validate()``
runs when a model is built from it.  config.json is written as transformers writes it
(``to_diff_dict``: the values that differ from the defaults).  Reading it is guarded:
UTF-8 JSON holding an object, nested a few levels deep, nothing else.

The model configs built on this class are in config.py.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path

__all__ = ["PretrainedConfig", "CONFIG_NAME", "GENERATION_DEFAULTS", "config_file", "read_json",
           "non_default_generation_parameters"]

CONFIG_NAME = "config.json"
logger = logging.getLogger("minibertgen.config")  # its name from before the split: log filters use it

# Fields every transformers config carries (PretrainedConfig), with its defaults.
_COMMON_DEFAULTS = {
    "is_decoder": False,
    "add_cross_attention": False,
    "cross_attention_hidden_size": None,
    "is_encoder_decoder": False,
    "tie_word_embeddings": True,
    "tie_encoder_decoder": False,
    "bos_token_id": None,
    "pad_token_id": None,
    "eos_token_id": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "dtype": None,
    "architectures": None,
    "torchscript": False,
    "pruned_heads": {},
    "chunk_size_feed_forward": 0,
    "finetuning_task": None,
    "task_specific_params": None,
    "problem_type": None,
    "tokenizer_class": None,
    "prefix": None,
    "tf_legacy_loss": False,
    "use_bfloat16": False,
}
# The generation defaults a PretrainedConfig still carries (transformers 4.57); generate()
# reads them through GenerationConfig.from_model_config.
GENERATION_DEFAULTS = {
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "num_return_sequences": 1, "output_scores": False,
    "return_dict_in_generate": False, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "remove_invalid_values": False, "exponential_decay_length_penalty": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "num_beam_groups": 1, "diversity_penalty": 0.0,
}
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
TRANSFORMERS_VERSION = "4.57.6"  # written into config.json, as GenerationConfig writes it
_MAX_JSON_NESTING = 200  # config.json is a few levels deep; far deeper is a corrupt or hostile file


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise ValueError(f"{path}: {what} is not UTF-8 text (byte {exc.start} is {bad!r}); "
                         "expected a UTF-8 JSON file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: {what} is nested too deeply to be a config (expected a JSON object "
                         "a few levels deep)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object, found {type(data).__name__}")
    if _depth(data) > _MAX_JSON_NESTING:
        raise ValueError(f"{path}: {what} is nested more than {_MAX_JSON_NESTING} levels deep: "
                         "expected a JSON object a few levels deep")
    return data


def _depth(value, level=0) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile file may be thousands deep)."""
    deepest, stack = level, [(value, level)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def config_file(pretrained_model_name_or_path, subfolder="", **hub_kwargs) -> Path:
    """Find config.json for a directory, a file path, or a hub id in the local cache."""
    from .checkpoint.saving import check_save_complete

    path = Path(os.fspath(pretrained_model_name_or_path))
    if path.is_file():
        check_save_complete(path.parent)
        return path
    if not path.is_dir():
        from .checkpoint.hub import resolve_model_dir

        path = Path(resolve_model_dir(pretrained_model_name_or_path, **hub_kwargs))
    directory = path / subfolder if subfolder else path
    candidate = directory / CONFIG_NAME
    if not candidate.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME} in this directory")
    check_save_complete(directory)
    return candidate


# -- the one rule: which generation parameters a model config holds with non-default values -------

def non_default_generation_parameters(model_config) -> dict:
    """Generation parameters the model config (its top level) holds with non-default values
    (the defaults: transformers' PretrainedConfig._get_global_generation_defaults)."""
    found = {}
    for name, default in GENERATION_DEFAULTS.items():
        value = getattr(model_config, name, None)
        if value is not None and value != default:
            found[name] = value
    return found


class PretrainedConfig:
    """Base class: attribute access over a dict of hyper-parameters, JSON in and out.

    Creating a config checks only what transformers checks at creation (the label maps,
    ``problem_type``): configs are data.  :meth:`validate` checks that a model can be
    built from it, and runs when one is built.
    """

    model_type = ""
    # Subclasses list their own fields and defaults here.
    _defaults: dict = {}
    _has_defaults_at_init = True  # False where the class cannot be built without arguments

    def __init__(self, **kwargs):
        if "torch_dtype" in kwargs:  # the pre-4.56 name of `dtype`
            legacy = kwargs.pop("torch_dtype")
            kwargs.setdefault("dtype", legacy)
        if kwargs.get("dtype") is not None and not isinstance(kwargs["dtype"], str):
            kwargs["dtype"] = str(kwargs["dtype"]).replace("torch.", "")
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        labels = {key: kwargs.pop(key, None) for key in ("id2label", "label2id", "num_labels")}
        for key, value in {**_COMMON_DEFAULTS, **GENERATION_DEFAULTS, **self._defaults}.items():
            setattr(self, key, copy.deepcopy(value))
        self._set_labels(**labels)
        for key, value in kwargs.items():
            setattr(self, key, value)
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type={self.problem_type!r}: expected one of {', '.join(PROBLEM_TYPES)}")

    def __setattr__(self, name, value):
        # model_type names the class, and the class decides (transformers' models never read the
        # attribute): config.model_type = "bert" on a BertGenerationConfig is kept aside, unused.
        if name == "model_type":
            name = "_assigned_model_type"
        super().__setattr__(name, value)

    def validate(self) -> None:
        """Check that a model can be built from this config; subclasses add their checks."""

    # -- labels (as PretrainedConfig: id2label's keys are ints here, strings in JSON) ----------
    def _set_labels(self, id2label, label2id, num_labels) -> None:
        for name, value in (("id2label", id2label), ("label2id", label2id)):
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name}={value!r}: expected a dict")
        if num_labels is not None and id2label is not None and len(id2label) != num_labels:
            logger.warning("num_labels=%s does not match the id2label map of length %d: id2label is used",
                           num_labels, len(id2label))
        self.label2id = label2id
        if id2label is None:
            self.num_labels = 2 if num_labels is None else num_labels
        else:
            self.id2label = {_label_id(key): value for key, value in id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, num_labels) -> None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 0:
            raise ValueError(f"num_labels={num_labels!r}: expected a non-negative integer")
        if getattr(self, "id2label", None) is None or len(self.id2label) != num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            self.label2id = {label: i for i, label in self.id2label.items()}

    def get_text_config(self, decoder=None, encoder=None) -> "PretrainedConfig":
        """The config of the text input (``encoder=True``) or output (``decoder=True``) side, as
        transformers finds it: a sub-config named ``decoder`` / ``text_config`` (or
        ``text_encoder``), else this config itself."""
        both = decoder == encoder
        names = (("text_encoder",) if encoder or both else ()) + (
            ("decoder", "generator", "text_config") if decoder or both else ())
        found = [name for name in names if getattr(self, name, None) is not None]
        if len(found) > 1:
            raise ValueError(f"get_text_config: this config has several text configs ({', '.join(found)}); "
                             "pick one directly, e.g. config.decoder")
        if found:
            return getattr(self, found[0])
        if not both and self.is_encoder_decoder:
            raise ValueError(f"get_text_config(encoder={encoder!r}, decoder={decoder!r}): transformers returns a "
                             "renamed copy of a flat encoder-decoder config here, which minibertgen does not "
                             "build; use config.encoder / config.decoder")
        return self

    # -- dict / JSON ------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"model_type": self.model_type}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            out[key] = value.to_dict() if isinstance(value, PretrainedConfig) else copy.deepcopy(value)
        out["transformers_version"] = TRANSFORMERS_VERSION
        return out

    def to_diff_dict(self) -> dict:
        """What transformers writes to config.json: fields that differ from PretrainedConfig's
        defaults or from this class's, every field of this class, sub-configs likewise."""
        common = PretrainedConfig().to_dict()
        own = type(self)().to_dict() if self._has_defaults_at_init else {}
        out = {}
        for key, value in self.to_dict().items():
            child = getattr(self, key, None)
            if isinstance(child, PretrainedConfig):
                out[key] = child._nested_diff(common)
            elif (key not in common or key == "transformers_version" or value != common[key]
                    or value != own.get(key, value)):
                out[key] = value
        return out

    def _nested_diff(self, common: dict) -> dict:
        """A sub-config's part of to_diff_dict: what differs from its class's defaults, and model_type."""
        own = type(self)().to_dict() if self._has_defaults_at_init else {}
        out = {key: value for key, value in self.to_dict().items()
               if key not in common or value != own.get(key, value)}
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict: expected a dict, got {type(config_dict).__name__}")
        if "num_labels" in kwargs and kwargs.get("id2label") is not None and \
                len(kwargs["id2label"]) != kwargs["num_labels"]:
            raise ValueError(f"num_labels={kwargs['num_labels']} and id2label={kwargs['id2label']!r} disagree: "
                             "pass one of them")
        return cls(**{**config_dict, **kwargs})

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path, use_diff: bool = True) -> Path:
        """Write this config as JSON to ``json_file_path`` (atomically: a temporary file renamed over it)."""
        from .checkpoint.atomic import text_writer, write_atomically

        return write_atomically(json_file_path, text_writer(self.to_json_string(use_diff=use_diff)))

    @classmethod
    def from_json_file(cls, json_file):
        """A config from a JSON file (no keyword overrides, as transformers)."""
        return cls(**read_json(Path(os.fspath(json_file)), "config file"))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Read config.json from a directory (or a file, or a hub id's ``subfolder``);
        keyword arguments override it."""
        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only", "subfolder")
                      if k in kwargs}
        path = config_file(pretrained_model_name_or_path, **hub_kwargs)
        data = read_json(path, CONFIG_NAME)
        found = data.get("model_type")
        if found is not None and cls.model_type and found != cls.model_type:
            logger.warning("%s: model_type=%r: you are using a model of type %s to instantiate a model of type %s; "
                           "this is not supported for all configurations of models and can yield errors", path, found,
                           found, cls.model_type)
        return cls.from_dict(data, **kwargs)

    def save_pretrained(self, save_directory, **kwargs) -> Path:
        """Write config.json into ``save_directory`` (created if needed), as transformers writes it."""
        from .checkpoint.atomic import prepare_directory

        if kwargs.get("push_to_hub"):
            raise ValueError("push_to_hub=True: minibertgen never uploads; push the directory with "
                             "`pip install huggingface_hub && hf upload REPO_ID DIRECTORY`")
        moved = non_default_generation_parameters(self)
        if moved:  # as transformers warns (None delegates to the generation config: not counted)
            warnings.warn(f"non-default generation parameters are set in the model config: {moved}; they belong "
                          "in model.generation_config (generation_config.json)", UserWarning, stacklevel=2)
        return self.to_json_file(prepare_directory(save_directory) / CONFIG_NAME, use_diff=True)

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def _label_id(key) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ValueError(f"id2label key {key!r}: expected an integer label id") from None
