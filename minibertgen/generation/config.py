"""GenerationConfig: the knobs of generate(), with transformers' names and defaults.

Where the values come from, highest priority first (as in transformers 4.57):

1. keyword arguments to ``generate()`` (``model.generate(ids, num_beams=4)``);
2. a ``generation_config=`` passed to ``generate()`` -- its fields still at the global
   default are filled from the model's own generation config;
3. the model's ``generation_config``: ``generation_config.json`` next to the weights when
   the checkpoint has one, else derived from the model config (:meth:`from_model_config`);
4. the defaults below.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

from ..pretrained_config import non_default_generation_parameters

__all__ = ["GenerationConfig", "GENERATION_CONFIG_NAME", "legacy_generation_config",
           "non_default_generation_parameters", "move_generation_parameters"]

GENERATION_CONFIG_NAME = "generation_config.json"
TRANSFORMERS_VERSION = "4.57.6"  # written into saved files; the version we imitate

# transformers' GenerationConfig fields and defaults (the ones generate() reads here).
DEFAULTS = {
    # length
    "max_length": 20, "max_new_tokens": None, "min_length": 0, "min_new_tokens": None,
    "early_stopping": False, "max_time": None, "stop_strings": None,
    # strategy
    "do_sample": False, "num_beams": 1, "use_cache": True, "cache_implementation": None,
    "cache_config": None, "return_legacy_cache": None, "prefill_chunk_size": None,
    # logits manipulation
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
    "bad_words_ids": None, "renormalize_logits": False, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "sequence_bias": None, "token_healing": False, "guidance_scale": None, "watermarking_config": None,
    # outputs
    "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "output_logits": None, "return_dict_in_generate": False,
    # special tokens
    "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
    "encoder_no_repeat_ngram_size": 0, "decoder_start_token_id": None,
    # assisted generation and other strategies (accepted in files; refused by generate() when set)
    "num_assistant_tokens": 20, "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4, "prompt_lookup_num_tokens": None,
    "max_matching_ngram_size": None, "assistant_early_exit": None, "assistant_lookbehind": 10,
    "target_lookbehind": 10, "compile_config": None, "disable_compile": False, "low_memory": None,
    "penalty_alpha": None, "dola_layers": None, "diversity_penalty": 0.0, "num_beam_groups": 1,
    "constraints": None, "force_words_ids": None,
}

# Fields generate() honours when they differ from the default; any other field with a
# non-default value is refused with a clear error rather than silently ignored.
SUPPORTED = {
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "do_sample",
    "num_beams", "use_cache", "temperature", "top_k", "top_p", "repetition_penalty",
    "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "forced_bos_token_id", "forced_eos_token_id", "sequence_bias", "suppress_tokens",
    "begin_suppress_tokens", "renormalize_logits", "remove_invalid_values", "min_p",
    "num_return_sequences", "output_scores", "output_logits", "return_dict_in_generate",
    "output_attentions", "output_hidden_states",
    "pad_token_id", "bos_token_id", "eos_token_id", "encoder_no_repeat_ngram_size",
    "decoder_start_token_id",
    # inert here: only meaningful for strategies/features we refuse anyway
    "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "assistant_lookbehind", "target_lookbehind", "disable_compile", "cache_implementation",
    "cache_config", "return_legacy_cache", "compile_config", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "exponential_decay_length_penalty", "prompt_lookup_num_tokens", "max_matching_ngram_size",
}

_METADATA = ("transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash")


class GenerationConfig:
    """The parameters of ``generate()``; unknown keys are kept (and saved) unchanged."""

    def __init__(self, **kwargs):
        from_model_config = kwargs.pop("_from_model_config", False)
        kwargs.pop("_commit_hash", None)
        kwargs.pop("_original_object_hash", None)
        self.transformers_version = kwargs.pop("transformers_version", TRANSFORMERS_VERSION)
        for key, default in DEFAULTS.items():
            setattr(self, key, kwargs.pop(key, copy.deepcopy(default)))
        self._from_model_config = from_model_config
        if not from_model_config:  # a model config's other keys are not generation parameters
            for key, value in kwargs.items():
                setattr(self, key, value)
        self.validate()

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Reject values that are wrong whatever the model (generate() checks the rest)."""
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping={self.early_stopping!r}: expected True, False or 'never'")
        for name in ("max_length", "num_beams", "num_return_sequences"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("min_length", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("max_new_tokens", "min_new_tokens", "top_k"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1 if name == "max_new_tokens" else 0)
        if self.num_return_sequences != 1:
            if self.num_beams == 1 and not self.do_sample:
                raise ValueError(f"num_return_sequences={self.num_return_sequences} needs beam search "
                                 "(num_beams > 1) or sampling (do_sample=True): greedy search returns "
                                 "one sequence per input")
            if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
                raise ValueError(f"num_return_sequences={self.num_return_sequences} is larger than "
                                 f"num_beams={self.num_beams}: beam search keeps only num_beams hypotheses")
        for name in ("repetition_penalty", "encoder_repetition_penalty", "length_penalty", "temperature", "top_p"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TypeError(f"{name}={value!r}: expected a number")
        if self.bad_words_ids is not None:
            _check_id_lists("bad_words_ids", self.bad_words_ids)

    def unsupported_fields(self) -> list[str]:
        """Names of fields set to a non-default value that minibertgen's generate() cannot honour."""
        out = []
        for key, default in DEFAULTS.items():
            if key in SUPPORTED:
                continue
            if getattr(self, key) != default:
                out.append(key)
        return out

    # -- dict / JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        if self._from_model_config:
            out["_from_model_config"] = True
        out["transformers_version"] = TRANSFORMERS_VERSION
        return out

    def to_diff_dict(self) -> dict:
        """Only the values that differ from the defaults (what save_pretrained writes)."""
        defaults = GenerationConfig().to_dict()
        return {k: v for k, v in self.to_dict().items()
                if k not in defaults or k == "transformers_version" or v != defaults[k]}

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "GenerationConfig":
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict: expected a dict, got {type(config_dict).__name__}")
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name, config_file_name=GENERATION_CONFIG_NAME, **kwargs):
        """Read generation_config.json from a directory (or the path of the file itself)."""
        path = Path(os.fspath(pretrained_model_name))
        if path.is_dir():
            path = path / config_file_name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {config_file_name} here (pass the checkpoint directory "
                                    "or the file itself)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid UTF-8 JSON ({exc})") from None
        except RecursionError:
            raise ValueError(f"{path}: nested too deeply to be a generation config") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
        return cls.from_dict(data, **kwargs)

    def save_pretrained(self, save_directory, config_file_name=GENERATION_CONFIG_NAME) -> Path:
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"save_directory={str(save_directory)!r} is a file, expected a directory")
        directory.mkdir(parents=True, exist_ok=True)
        from ..checkpoint.atomic import text_writer, write_atomically  # a unique, exclusive temporary name

        return write_atomically(directory / config_file_name, text_writer(self.to_json_string()))

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """Generation defaults stored in a model config (top level, then its decoder), as transformers."""
        data = {k: v for k, v in model_config.to_dict().items() if v is not None}
        config = cls.from_dict(data, _from_model_config=True)
        decoder = getattr(model_config, "decoder", None)
        if decoder is not None and hasattr(decoder, "to_dict"):
            decoder_data = decoder.to_dict()
            for key, default in DEFAULTS.items():  # fill what the top level left at the default
                if key in decoder_data and getattr(config, key) == default:
                    setattr(config, key, decoder_data[key])
        return config

    def update(self, **kwargs) -> dict:
        """Set the known fields among ``kwargs``; return the others (unused)."""
        unused = {}
        for key, value in kwargs.items():
            if key in DEFAULTS or key in self.__dict__:
                setattr(self, key, value)
            else:
                unused[key] = value
        self.validate()
        return unused

    def copy(self) -> "GenerationConfig":
        return copy.deepcopy(self)

    def __eq__(self, other) -> bool:
        if not isinstance(other, GenerationConfig):
            return NotImplemented
        strip = lambda d: {k: v for k, v in d.items() if k not in _METADATA}  # noqa: E731
        return strip(self.to_dict()) == strip(other.to_dict())

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_json_string()}"


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")


def _check_id_lists(name, value):
    if (not isinstance(value, (list, tuple)) or not value
            or any(not isinstance(seq, (list, tuple)) or not seq for seq in value)):
        raise ValueError(f"{name}={value!r}: expected a non-empty list of non-empty lists of token ids")
    for seq in value:
        for token in seq:
            if isinstance(token, bool) or not isinstance(token, int) or token < 0:
                raise ValueError(f"{name}={value!r}: token id {token!r} is not a non-negative integer")


# -- the model config's generation parameters (transformers' legacy rule) -------------------

def _snapshot(generation_config) -> dict:
    data = generation_config.to_dict()
    data.pop("transformers_version", None)
    return data


def legacy_generation_config(model, current):
    """transformers' legacy rule, applied where generate() reads ``model.generation_config``.

    When the generation config was derived from the model config (``_from_model_config``,
    e.g. generation_config.json written that way), has not been changed since it was made,
    and the model config now holds non-default generation parameters (the warm-starting
    guide sets ``config.num_beams``, ``max_length``, ``decoder_start_token_id``, ... on the
    model after making it), the generation config is rebuilt from the model config, with
    transformers' warning, and kept.
    """
    if not getattr(current, "_from_model_config", False):
        return current
    snapshot = getattr(model, "_generation_snapshot", None)
    if snapshot is None:
        model._generation_snapshot = snapshot = _snapshot(current)
    if _snapshot(current) != snapshot or not non_default_generation_parameters(model.config):
        return current
    rebuilt = type(current).from_model_config(model.config)
    if _snapshot(rebuilt) == snapshot:
        return current
    names = ", ".join(non_default_generation_parameters(model.config))
    warnings.warn(f"model.config holds generation settings ({names}) "
                  "that the generation config made from it lacks: it is rebuilt from model.config, as transformers "
                  "4.57 does (a legacy rule; set model.generation_config instead)", UserWarning, stacklevel=3)
    model._generation_config = rebuilt
    model._generation_snapshot = _snapshot(rebuilt)
    return rebuilt


def move_generation_parameters(model_config, generation_config) -> None:
    """save_pretrained, as transformers 4.57: generation parameters set on the model config move
    to the generation config (with its warning) and read None in config.json."""
    moved = non_default_generation_parameters(model_config)
    if not moved:
        return
    warnings.warn(f"save_pretrained: moving generation parameters from the model config to the generation "
                  f"config: {moved} (set them on model.generation_config instead)", UserWarning, stacklevel=3)
    for name, value in moved.items():
        setattr(generation_config, name, value)
        setattr(model_config, name, None)
