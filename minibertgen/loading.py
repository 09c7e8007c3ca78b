"""Loading, in one place: from a checkpoint to a model's parameter tree on a device.

Every ``from_pretrained`` (and every model built with random weights) goes through the
same steps, each a function below:

    read (config.json + weights, or a given state_dict) -> refuse what we do not compute
    -> map names (checkpoint/mapping.py) -> fill missing weights as transformers does ->
    tie (decided once, :func:`tie_pairs`) -> report -> cast and place on the device ->
    quantize -> CPU memory layout (fast/layout.py)

The model classes (modeling.py, encoder_decoder.py) keep only their surface: they say
which family and which parts they have (``config_class``, ``has_lm_head``,
``has_pooler``) and call :func:`from_pretrained` / :func:`random_params` / :func:`place`.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from . import seeding
from .backend import Device, parse_device, resolve_dtype
from .checkpoint.files import load_state_dict
from .checkpoint.hub import resolve_model_dir
from .checkpoint.mapping import (LoadReport, body_shapes, check_layer_count, checkpoint_name, head_shapes, initialise,
                                 select, tree_name)
from .families import MODEL_TYPES
from .placement import place, prequantized_state, stored_float_dtype
from .suggest import unexpected_keywords

__all__ = ["FAMILIES", "new_projection", "needs_projection", "check_supported", "require_stored_pooler",
           "half_quantization", "seq2seq_quantization", "half_weights", "seq2seq_weights", "tie_pairs",
           "seq2seq_tie_pairs", "tie", "random_params", "read_options", "from_pretrained", "loading_info"]

FAMILIES = MODEL_TYPES  # (families.py: the one registry)
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "subfolder")
# transformers loading options that change nothing here (accepted, as transformers accepts them).
_NO_EFFECT = ("low_cpu_mem_usage", "use_safetensors", "trust_remote_code", "force_download")
_ATTENTION = (None, "eager", "sdpa")  # both compute the same attention


# -- what we refuse ----------------------------------------------------------------------------

def check_supported(config, where: str) -> None:
    """Refuse, naming the field, a half whose config asks for something minibertgen does
    not compute exactly as transformers does.  Called whenever a model is built."""
    family = config.model_type
    if family not in FAMILIES:
        raise ValueError(f"{where}: model_type={family!r} is not supported; minibertgen builds the "
                         f"BERT-family halves {', '.join(FAMILIES)}")
    config.validate()
    pruned = getattr(config, "pruned_heads", None)
    if pruned:
        raise ValueError(f"{where}: pruned_heads={pruned!r} is not supported (transformers removes those heads' "
                         "weights); expected no pruned heads")
    if family != "bert-generation":
        types = getattr(config, "type_vocab_size", None)
        if isinstance(types, bool) or not isinstance(types, int) or types <= 0:
            raise ValueError(f"{where}: type_vocab_size={types!r}: expected a positive integer")
    if family == "roberta":
        pad = config.pad_token_id
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < config.vocab_size:
            raise ValueError(f"{where}: pad_token_id={pad!r}: RoBERTa counts positions from pad_token_id + 1, "
                             f"so it needs a token id in [0, {config.vocab_size})")
        if config.max_position_embeddings <= pad + 1:
            raise ValueError(f"{where}: max_position_embeddings={config.max_position_embeddings} leaves no "
                             f"position after pad_token_id + 1 = {pad + 1}")


def check_seq2seq_supported(config) -> None:
    width = getattr(config.decoder, "cross_attention_hidden_size", None)
    if width is not None and width != config.encoder.hidden_size:
        raise ValueError(f"decoder.cross_attention_hidden_size={width} must equal the encoder's "
                         f"hidden_size={config.encoder.hidden_size} (as transformers requires)")
    check_supported(config.encoder, "EncoderDecoderModel encoder")
    check_supported(config.decoder, "EncoderDecoderModel decoder")


# -- names, shapes and ties of one half ---------------------------------------------------------

def expected_shapes(config, lm: bool, pooler: bool) -> dict:
    """{tree name: shape} of a half: an encoder's body bare, a causal LM's under ``bert.``."""
    body = body_shapes(config, pooler=pooler and not lm)
    if not lm:
        return body
    return {**{"bert." + name: shape for name, shape in body.items()}, **head_shapes(config)}


def tie_pairs(config, lm: bool, prefix: str = "") -> list:
    """(tied name, the name it takes its array from) of one half: a causal LM's head is its
    word-embedding matrix when tie_word_embeddings is set (one array, as transformers)."""
    if lm and config.tie_word_embeddings:
        return [(prefix + "lm_head.decoder.weight", prefix + "bert.embeddings.word_embeddings.weight")]
    return []


def seq2seq_tie_pairs(config, encoder_names, decoder_names) -> list:
    """The ties of an EncoderDecoderModel, in transformers' order: each half's own, then with
    tie_encoder_decoder every encoder weight becomes the DECODER's weight of the same name
    (all but the decoder's cross-attention and head, and the encoder's pooler).  An encoder
    with more layers than the decoder ties its first ones and keeps the rest, as transformers
    does (it warns "not tied"); a decoder with more layers transformers cannot build."""
    pairs = tie_pairs(config.decoder, True, "decoder.")
    if config.tie_encoder_decoder:
        if config.encoder.num_hidden_layers < config.decoder.num_hidden_layers:
            raise ValueError(f"tie_encoder_decoder=True with encoder.num_hidden_layers="
                             f"{config.encoder.num_hidden_layers} < decoder.num_hidden_layers="
                             f"{config.decoder.num_hidden_layers}: the decoder's extra layers have no encoder layer "
                             "to tie to (transformers cannot build this model either)")
        shared = set(decoder_names)  # tree names of the decoder, without "decoder."
        pairs += [("encoder." + name, "decoder.bert." + name) for name in encoder_names if "bert." + name in shared]
    return pairs


def tie(flat: dict, pairs) -> dict:
    """Make every tied name hold its source's array (shapes must agree)."""
    for target, source in pairs:
        if target in flat and tuple(flat[target].shape) != tuple(flat[source].shape):
            raise ValueError(f"cannot tie {target!r} {tuple(flat[target].shape)} to {source!r} "
                             f"{tuple(flat[source].shape)}: the shapes differ")
        flat[target] = flat[source]
    return flat


def half_weights(state, config, report: LoadReport, source: str, rng, *, lm: bool, pooler: bool,
                 strip: str = "", skip=()) -> dict:
    """One half's weights {tree name: array} from a checkpoint's ``state`` (names under ``strip``).

    Weights the file lacks are initialised as transformers initialises them and reported
    (by their checkpoint names), except tied ones and those in ``skip`` (tied later).
    """
    check_layer_count(state, config, source, strip)  # before any shape is listed (issue 17)
    shapes = expected_shapes(config, lm, pooler)
    wanted = {name[len("bert."):] if name.startswith("bert.") else name: shape for name, shape in shapes.items()}
    found = select(state, wanted, source, report, family=config.model_type, lm=lm, strip=strip)
    flat = {("bert." + name if lm and not name.startswith("lm_head.") else name): array
            for name, array in found.items()}
    pairs = tie_pairs(config, lm)
    later = {target for target, _ in pairs} | set(skip)
    for name, shape in shapes.items():
        if name not in flat and name not in later:
            flat[name] = initialise(name, shape, config, rng)
            looked_up = name[len("bert."):] if name.startswith("bert.") else name  # select()'s name
            if looked_up not in report.mismatched_names:  # those are reported as mismatched
                report.missing.append(strip + checkpoint_name(name, config.model_type, lm))
    return tie(flat, pairs)


def require_stored_pooler(owner, state, config, source) -> None:
    """Refuse a checkpoint without (all of) the pooler weights for a model that has a pooler."""
    stored = {tree_name(name, config.model_type, False) for name in state}
    missing = [name for name in ("pooler.dense.weight", "pooler.dense.bias") if name not in stored]
    if state and missing:
        raise ValueError(f"{source}: the checkpoint has no {', '.join(missing)}, and {owner} has a pooler: "
                         "transformers would initialise it randomly, and no other library reproduces that "
                         f"pooler_output. Load it with {owner}.from_pretrained(..., add_pooling_layer=False) "
                         "(pooler_output is then None)")


def _projection(config, state, report, rng) -> dict:
    """enc_to_dec_proj (encoder width -> decoder width), when transformers adds one."""
    if not needs_projection(config):
        return {}
    shapes = {"enc_to_dec_proj.weight": (config.decoder.hidden_size, config.encoder.hidden_size),
              "enc_to_dec_proj.bias": (config.decoder.hidden_size,)}
    out = {}
    for name, shape in shapes.items():
        if name in state and tuple(state[name].shape) == shape:
            out[name] = state[name]
        elif name in state and not report.ignore_mismatched:
            raise ValueError(f"weight {name!r} has shape {tuple(state[name].shape)}, expected {shape}")
        elif name in state:  # ignore_mismatched_sizes=True: initialised afresh, reported as mismatched
            report.mismatched[name] = (tuple(state[name].shape), shape)
            out[name] = initialise(name, shape, config.decoder, rng)
        else:
            out[name] = initialise(name, shape, config.decoder, rng)
            report.missing.append(name)
    return out


def new_projection(config, dtype, device, seed=None):
    """A freshly initialised enc_to_dec_proj ({"weight", "bias"}) placed on ``device`` in
    ``dtype``, as transformers makes it when it joins two halves of different widths."""
    flat = _projection(config, {}, LoadReport(), _init_generator(seed))
    return place(flat, dtype, device)["enc_to_dec_proj"]


def needs_projection(config) -> bool:
    """transformers adds a Linear when encoder and decoder widths differ (and no explicit width)."""
    return (config.encoder.hidden_size != config.decoder.hidden_size
            and getattr(config.decoder, "cross_attention_hidden_size", None) is None)


def seq2seq_weights(state, config, report: LoadReport, source: str, rng, *, encoder_pooler: bool) -> dict:
    """All weights of an EncoderDecoderModel as one flat dict (encoder. / decoder. / enc_to_dec_proj.)."""
    check_seq2seq_supported(config)
    for name in state:
        if not name.startswith(("encoder.", "decoder.", "enc_to_dec_proj.")):
            report.unexpected.append(name)
    for half in ("encoder", "decoder"):  # before any per-layer name is listed (issue 32)
        check_layer_count(state, getattr(config, half), source, f"{half}.")
    encoder_names = list(expected_shapes(config.encoder, False, encoder_pooler))
    decoder_names = list(expected_shapes(config.decoder, True, False))
    pairs = seq2seq_tie_pairs(config, encoder_names, decoder_names)
    tied_encoder = {target[len("encoder."):] for target, _ in pairs if target.startswith("encoder.")}
    encoder = half_weights(state, config.encoder, report, source, rng, lm=False, pooler=encoder_pooler,
                           strip="encoder.", skip=tied_encoder)
    decoder = half_weights(state, config.decoder, report, source, rng, lm=True, pooler=False, strip="decoder.")
    flat = {f"encoder.{k}": v for k, v in encoder.items()}
    flat.update({f"decoder.{k}": v for k, v in decoder.items()})
    flat.update(_projection(config, state, report, rng))
    return tie(flat, pairs)


def _head_module(family: str) -> str:
    """transformers' module holding a causal LM's head (its bias is tied to the projection's)."""
    return "cls.predictions" if family == "bert" else "lm_head"


def half_quantization(config, lm: bool, pooler: bool):
    """(checkpoint_name, keep_float) of one half loaded alone, for quantize_params.

    transformers keeps float, by default, the modules of tied weights and of the model's last
    parameter: for a causal LM its whole head (the head's bias is tied to the vocabulary
    projection's bias, so the tied module is ``cls.predictions`` / ``lm_head`` itself),
    for a base model its pooler (nothing when it has none: its last module is a LayerNorm)."""
    family = config.model_type
    keep = [_head_module(family)] if lm else (["pooler.dense"] if pooler else [])
    return (lambda name: checkpoint_name(name, family, lm)), keep


def seq2seq_quantization(config):
    """(checkpoint_name, keep_float) of an EncoderDecoderModel: the decoder's head and the
    model's last module, ``enc_to_dec_proj`` when there is one (the encoder's pooler is quantized);
    weights shared by tie_encoder_decoder are tied, so they stay float too (quantize_params)."""
    encoder, decoder = config.encoder.model_type, config.decoder.model_type

    def name(ours: str) -> str:
        if ours.startswith("encoder."):
            return "encoder." + checkpoint_name(ours[len("encoder."):], encoder, False)
        if ours.startswith("decoder."):
            return "decoder." + checkpoint_name(ours[len("decoder."):], decoder, True)
        return ours

    keep = ["decoder." + _head_module(decoder)] + (["enc_to_dec_proj"] if needs_projection(config) else [])
    return name, keep


def random_params(build_flat, config, dtype, device: Device, seed) -> dict:
    """A fresh model's tree, initialised as transformers' constructor does.
    ``build_flat(state, config, report, source, rng)`` is the class's weight mapping."""
    flat = build_flat({}, config, LoadReport(), "init", _init_generator(seed))
    return place(flat, resolve_dtype(dtype), device)


# -- from_pretrained ----------------------------------------------------------------------------

_OPTIONS = ("config", "dtype", "device", "seed", "quantization_config", "output_loading_info",
            "ignore_mismatched_sizes", "state_dict", *_HUB_KWARGS)


def read_options(config_class, kwargs: dict) -> tuple[dict, dict]:
    """Split from_pretrained's keyword arguments into loading options and config overrides.

    As in transformers, a keyword that is neither a loading option nor a field of the
    config is an error; a loading option never ends up in the config.
    """
    kwargs = dict(kwargs)
    options = {name: kwargs.pop(name) for name in _OPTIONS if name in kwargs}
    if "torch_dtype" in kwargs:  # transformers' pre-4.56 spelling
        legacy = kwargs.pop("torch_dtype")
        if options.get("dtype") is None:
            options["dtype"] = legacy
    for name in _NO_EFFECT:
        kwargs.pop(name, None)
    attention = kwargs.pop("attn_implementation", None)
    if attention not in _ATTENTION:
        raise ValueError(f"attn_implementation={attention!r}: expected one of 'eager', 'sdpa' (both compute the "
                         "same attention here)")
    return options, kwargs


# Fields every transformers config carries (PretrainedConfig), whether or not ours holds them yet.
_PRETRAINED_FIELDS = (
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "num_beam_groups", "diversity_penalty", "torchscript", "pruned_heads",
    "chunk_size_feed_forward", "finetuning_task", "id2label", "label2id", "num_labels", "task_specific_params",
    "problem_type", "tokenizer_class", "prefix", "name_or_path", "use_return_dict",
)


def _check_overrides(config, overrides: dict, owner: str) -> None:
    known = set(vars(config)) | set(dir(type(config))) | set(_PRETRAINED_FIELDS)
    unknown = [name for name in overrides if name not in known]
    if unknown:
        raise TypeError(unexpected_keywords(f"{owner}.from_pretrained()", unknown, sorted(known) + list(_OPTIONS),
                                            "(neither loading options nor fields of the config)"))


def from_pretrained(owner: str, name_or_path, config_class, build_flat, kwargs: dict, quantized_as=None):
    """What every from_pretrained does; returns (config, tree, device, directory, report, options).

    ``build_flat(state, config, report, source, rng) -> flat`` maps the tensors; keyword
    arguments that name config fields override them (``bos_token_id=101``).
    ``quantized_as(config)`` -> :func:`half_quantization` / :func:`seq2seq_quantization`.
    """
    options, overrides = read_options(config_class, kwargs)
    config = options.get("config")
    directory = None
    if name_or_path is not None:
        hub = {k: options[k] for k in _HUB_KWARGS if k in options and k != "subfolder"}
        directory = resolve_model_dir(name_or_path, **hub)
        if options.get("subfolder"):
            directory = os.path.join(directory, options["subfolder"])
    elif config is None or options.get("state_dict") is None:
        raise ValueError(f"{owner}.from_pretrained(None, ...) needs both config= and state_dict=")
    if config is None:
        config = config_class.from_pretrained(directory)
    else:
        if not isinstance(config, config_class):
            raise TypeError(f"config: expected a {config_class.__name__}, got {type(config).__name__}")
        config = copy.deepcopy(config)
    _check_overrides(config, overrides, owner)
    for name, value in overrides.items():
        setattr(config, name, value)
    config.validate()  # configs are data: checked when a model is built from one, before any weight
    state = options.get("state_dict")
    state = load_state_dict(directory) if state is None else _as_state(state)
    state, quantization_config = prequantized_state(state, config, options.get("quantization_config"))
    report = LoadReport(ignore_mismatched=bool(options.get("ignore_mismatched_sizes", False)))
    source = os.fspath(name_or_path) if name_or_path is not None else "state_dict"
    flat = build_flat(state, config, report, source, _init_generator(options.get("seed")))
    report.warn(f"{owner}.from_pretrained({source!r})")
    device = parse_device(options.get("device"))
    tree = place(flat, resolve_dtype(options.get("dtype"), stored_float_dtype(state)), device,
                 quantization_config=quantization_config, config=config,
                 quantized_as=None if quantized_as is None else quantized_as(config))
    return config, tree, device, directory, report, options


def _init_generator(seed):
    """The generator new weights are drawn from: ``seed=``, else the seeded source (set_seed)."""
    return seeding.generator() if seed is None else np.random.default_rng(seed)


def _as_state(state) -> dict:
    """A user's state_dict (NumPy arrays or torch tensors) as {name: NumPy array}."""
    if not isinstance(state, dict):
        raise TypeError(f"state_dict: expected a dict of arrays, got {type(state).__name__}")
    out = {}
    for name, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().float().numpy() if str(value.dtype) == "torch.bfloat16" \
                else value.detach().cpu().numpy()
        out[name] = value if getattr(value, "is_quantized", False) else np.asarray(value)
    return out


def loading_info(report: LoadReport) -> dict:
    """from_pretrained(..., output_loading_info=True)'s second value, with transformers' keys."""
    return {"missing_keys": list(report.missing), "unexpected_keys": list(report.unexpected),
            "mismatched_keys": list(report.mismatched), "error_msgs": []}
