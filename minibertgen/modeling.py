"""The model classes: thin shells around the functions in model.py.

A model is a config, a parameter tree on a device, and three verbs:
``from_pretrained`` (read a checkpoint), ``__call__`` (check inputs, run the math,
wrap the result in a ModelOutput) and ``save_pretrained``.  The math itself lives in
model.py; nothing here computes anything a student needs to read.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .backend import Device, parse_device, resolve_dtype, to_device
from .cache import EncoderDecoderCache
from .checkpoint.files import load_state_dict
from .checkpoint.hub import resolve_model_dir
from .checkpoint.mapping import LoadReport, body_shapes, flatten, head_shapes, initialise, select, unflatten
from .checkpoint.safetensors_io import write_safetensors
from .config import BertGenerationConfig
from .fast.layout import arrange_for_cpu
from .inputs import as_embeds, as_head_mask, as_ids, as_mask
from .model import bert_stack, causal_lm_loss, lm_head
from .generation import GenerationMixin
from .outputs import ModelOutput
from .progress import progress

__all__ = ["PreTrainedModel", "BertGenerationEncoder", "BertGenerationDecoder"]

WEIGHTS_NAME = "model.safetensors"
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only")


def materialise(flat: dict, dtype, device: Device) -> dict:
    """Cast floating weights to ``dtype`` and move everything to ``device``.

    Arrays already in the right dtype on the CPU are kept as they are (memory-mapped
    views of the checkpoint: no copy; a CPU model then stores a few transposed, see
    layout.py).  Tied weights (the same array under two names) stay one array.
    """
    done: dict[int, object] = {}
    out = {}
    for name, array in progress(flat.items(), desc="loading weights", unit="tensor", min_items=64,
                                total=len(flat)):
        if id(array) not in done:
            done[id(array)] = _placed(array, dtype, device)
        out[name] = done[id(array)]
    return out


def _placed(array, dtype, device: Device):
    """One checkpoint entry on ``device``: floats cast to ``dtype``, integers as they are,
    a quantized weight (from a quantized checkpoint) with each of its parts moved."""
    if getattr(array, "is_quantized", False):
        from .quantization.serialization import move_quantized

        return move_quantized(array, lambda part: to_device(part, device))
    return to_device(array, device, dtype=dtype if np.dtype(array.dtype).kind == "f" else None)


def stored_float_dtype(state: dict):
    for array in state.values():
        if np.dtype(array.dtype).kind == "f" and not getattr(array, "is_quantized", False):
            return np.dtype(array.dtype)
    return None


def fill_missing(found: dict, shapes: dict, config, report: LoadReport, rng) -> dict:
    """Initialise, as transformers does, every weight in ``shapes`` the file did not hold."""
    for name, shape in shapes.items():
        if name not in found:
            found[name] = initialise(name, shape, config, rng)
            report.missing.append(name)
    return found


def tie_lm_head(flat: dict, config, prefix: str = "") -> None:
    """With tie_word_embeddings the LM head reuses the input embedding matrix (one array)."""
    if config.tie_word_embeddings:
        flat[prefix + "lm_head.decoder.weight"] = flat[prefix + "embeddings.word_embeddings.weight"]


def quantize_if_asked(tree: dict, quantization_config, config):
    """Swap linear-layer weights for 8/4-bit ones when a BitsAndBytesConfig is given; the
    config then records it (``quantization_config`` in config.json, as transformers writes)."""
    if quantization_config is None:
        return tree
    from .quantization.params import as_config, quantize_params

    quantization_config = as_config(quantization_config)
    tree = quantize_params(tree, quantization_config)
    config.quantization_config = quantization_config.to_dict()
    return tree


def prequantized_state(state: dict, config, quantization_config):
    """A checkpoint saved quantized (config.json has a quantization_config): its packed
    weights become quantized weight objects, as transformers loads bitsandbytes files.
    Returns (state, the quantization_config still to apply: None for such a checkpoint)."""
    saved = getattr(config, "quantization_config", None)
    if saved is None:
        return state, quantization_config
    from .quantization.params import as_config
    from .quantization.serialization import load_prequantized

    saved = as_config(saved)
    if quantization_config is not None and as_config(quantization_config) != saved:
        warnings.warn("quantization_config was passed to from_pretrained, but the checkpoint is already "
                      "quantized: the quantization_config from its config.json is used", stacklevel=4)
    config.quantization_config = saved.to_dict()
    return load_prequantized(state, saved), None


def memory_footprint(flat: dict) -> int:
    """Bytes held by the distinct arrays (tied weights counted once), as transformers reports."""
    unique = {id(a): a for a in flat.values()}
    return int(sum(a.nbytes for a in unique.values()))


def load_checkpoint(owner, name_or_path, config_class, config, dtype, device, seed, quantization_config,
                    kwargs, build_weights):
    """What every from_pretrained does: find the files, read the config (kwargs override it),
    map the tensors (``build_weights(state, config, report, source, rng) -> flat``), report
    missing/unused weights, cast, move, quantize.  Returns (config, tree, device, directory).
    """
    hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    legacy_dtype = kwargs.pop("torch_dtype", None)  # transformers' pre-4.56 spelling
    dtype = legacy_dtype if dtype is None else dtype
    directory = resolve_model_dir(name_or_path, **hub_kwargs)
    if config is None:
        config = config_class.from_pretrained(directory, **kwargs)
    elif kwargs:
        config = config_class.from_dict(config.to_dict(), **kwargs)
    state, quantization_config = prequantized_state(load_state_dict(directory), config, quantization_config)
    report = LoadReport()
    source = os.fspath(name_or_path)
    flat = build_weights(state, config, report, source, np.random.default_rng(seed))
    report.warn(f"{owner}.from_pretrained({source!r})")
    device = parse_device(device)
    tree = unflatten(materialise(flat, resolve_dtype(dtype, stored_float_dtype(state)), device))
    return config, quantize_if_asked(tree, quantization_config, config), device, directory


class ModelShell:
    """What every model class shares around its parameters: counting, eval(), saving."""

    def num_parameters(self) -> int:
        unique = {id(a): a for a in self.state_dict().values()}
        return int(sum(a.size for a in unique.values()))

    def get_memory_footprint(self) -> int:
        return memory_footprint(self.state_dict())

    def eval(self):
        """No-op (inference only, no dropout): kept so transformers code runs unchanged."""
        return self

    def _mark_architectures(self) -> None:
        self.config.architectures = [type(self).__name__]

    def _quantization_config(self) -> dict:
        """The quantization_config of a quantized model: its config's, else the one its
        encoder and decoder were loaded with (they must agree: config.json holds one)."""
        found = getattr(self.config, "quantization_config", None)
        parts = [getattr(self.config, part, None) for part in ("encoder", "decoder")]
        parts = [c.quantization_config for c in parts if getattr(c, "quantization_config", None) is not None]
        if found is None and parts and all(p == parts[0] for p in parts):
            found = parts[0]
        if found is None:
            raise ValueError("this model holds quantized weights but its config has no quantization_config "
                             "(and its encoder's and decoder's differ): cannot save it")
        return found

    def save_pretrained(self, save_directory) -> Path:
        """Write config.json + model.safetensors (+ generation_config.json), loadable by transformers 4.57.

        An LM head tied to the word embeddings is one array under two names; like
        transformers, the file holds it once (under the embeddings' name).  Quantized
        weights are written packed, in bitsandbytes' layout (quantization/serialization.py),
        and config.json gets their ``quantization_config``.
        """
        directory = Path(save_directory)
        flat = self.state_dict()
        others = {id(v) for k, v in flat.items() if not k.endswith("lm_head.decoder.weight")}
        flat = {k: v for k, v in flat.items() if not (k.endswith("lm_head.decoder.weight") and id(v) in others)}
        if any(getattr(v, "is_quantized", False) for v in flat.values()):
            from .quantization.serialization import serialize_quantized

            self.config.quantization_config = self._quantization_config()
            flat = serialize_quantized(flat)
        self._mark_architectures()
        self.config.dtype = str(np.dtype(self.dtype))
        self.config.save_pretrained(directory)
        write_safetensors(flat, directory / WEIGHTS_NAME, metadata={"format": "pt"})
        if hasattr(self, "generate"):  # models that generate also write generation_config.json
            self.generation_config.save_pretrained(directory)
        return directory


class PreTrainedModel(ModelShell):
    """What every model shares: config, parameters, device, loading and saving."""

    config_class = BertGenerationConfig
    has_lm_head = False

    def __init__(self, config, params=None, *, device=None, dtype=None, seed=None):
        if not isinstance(config, self.config_class):
            raise TypeError(f"config: expected a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.device = parse_device(device)
        if params is None:  # a fresh model with random weights, as transformers' constructor
            flat = self.weights_from_state({}, config, LoadReport(), "init", np.random.default_rng(seed))
            params = unflatten(materialise(flat, resolve_dtype(dtype), self.device))
        self.params = params

    @property
    def params(self) -> dict:
        """The parameter tree (nested dicts of arrays under the checkpoint's names)."""
        return self._params

    @params.setter
    def params(self, tree) -> None:
        # On the CPU every tree set here is rearranged in memory for faster matrix
        # products: same shapes and values, see layout.py.
        self._params = arrange_for_cpu(tree) if self.device.kind == "cpu" else tree

    # -- weights ----------------------------------------------------------------------------
    @classmethod
    def expected_shapes(cls, config) -> dict:
        shapes = body_shapes(config)
        if cls.has_lm_head:
            shapes.update(head_shapes(config))
        return shapes

    @classmethod
    def weights_from_state(cls, state, config, report, source, rng) -> dict:
        """Map a checkpoint's tensors onto this class's weight names (body names, plus lm_head)."""
        shapes = cls.expected_shapes(config)
        found = select(state, shapes, source, report)
        tied = cls.has_lm_head and config.tie_word_embeddings
        if tied:  # the head is the embedding matrix: nothing to initialise (0.6 s at vocab 50k x 1024)
            shapes = {k: v for k, v in shapes.items() if k != "lm_head.decoder.weight"}
        found = fill_missing(found, shapes, config, report, rng)
        if tied:
            tie_lm_head(found, config)
        return {cls._prefix(name): array for name, array in found.items()}

    @staticmethod
    def _prefix(name: str) -> str:
        return name

    @property
    def dtype(self):
        return self.embeddings_table.dtype

    def state_dict(self) -> dict:
        """Flat {checkpoint name: array}, as transformers' state_dict names them."""
        return flatten(self.params)

    # -- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, config=None, dtype=None, device=None,
                        seed=None, quantization_config=None, **kwargs):
        """Load config.json + weights from a directory (or hub id in the local cache).

        ``dtype``: None -> float32, "auto" -> as stored, or "float16"/"bfloat16"/a NumPy dtype.
        Other keyword arguments override config fields (``bos_token_id=101``).
        """
        config, tree, device, directory = load_checkpoint(
            cls.__name__, pretrained_model_name_or_path, cls.config_class, config, dtype, device, seed,
            quantization_config, kwargs, cls.weights_from_state)
        model = cls(config, tree, device=device)
        model.name_or_path = str(directory)  # where generation_config.json etc. may be found
        return model

    def to(self, device):
        """Move the weights to ``device`` ("cpu", "cuda", 0, ...); returns self."""
        self.device = parse_device(device)
        flat = materialise(self.state_dict(), None, self.device)
        self.params = unflatten(flat)
        return self


class BertGenerationEncoder(PreTrainedModel):
    """The BERT body: embeddings and layers, returning hidden states (no head).

    With ``config.is_decoder`` it is causal and can return a cache; with
    ``config.add_cross_attention`` it also attends to ``encoder_hidden_states``.
    """

    @property
    def embeddings_table(self):
        return self.params["embeddings"]["word_embeddings"]["weight"]

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, head_mask=None,
                 inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, **kwargs):
        out, cache = run_body(self, self.params, input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                              use_cache=use_cache, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, extra=kwargs)
        return ModelOutput(last_hidden_state=out["last_hidden_state"], past_key_values=cache,
                           hidden_states=out.get("hidden_states"), attentions=out.get("attentions"),
                           cross_attentions=out.get("cross_attentions"))


class BertGenerationDecoder(PreTrainedModel, GenerationMixin):
    """A BertGeneration body (under ``bert``) with a language-modelling head on top."""

    has_lm_head = True

    @staticmethod
    def _prefix(name: str) -> str:
        return name if name.startswith("lm_head.") else "bert." + name

    @property
    def embeddings_table(self):
        return self.params["bert"]["embeddings"]["word_embeddings"]["weight"]

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, head_mask=None,
                 inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                 past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, **kwargs):
        if labels is not None:
            use_cache = False
        out, cache = run_body(self, self.params["bert"], input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, head_mask=head_mask, inputs_embeds=inputs_embeds,
                              encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                              use_cache=use_cache, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, extra=kwargs)
        logits = lm_head(self.params["lm_head"], out["last_hidden_state"])  # [batch, seq, vocab]
        loss = None
        if labels is not None:
            labels = as_ids(labels, "labels", self.device, self.config.vocab_size, allow_ignore=True)
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels has shape {tuple(labels.shape)}: expected {tuple(logits.shape[:2])}")
            loss = causal_lm_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, past_key_values=cache,
                           hidden_states=out.get("hidden_states"), attentions=out.get("attentions"),
                           cross_attentions=out.get("cross_attentions"))


_TOLERATED_EXTRA = ("token_type_ids", "return_dict", "cache_position")


def run_body(model, body_params, *, input_ids, attention_mask, position_ids, head_mask, inputs_embeds,
             encoder_hidden_states, encoder_attention_mask, past_key_values, use_cache, output_attentions,
             output_hidden_states, extra):
    """Validate the inputs of a BertGeneration body, then run model.bert_stack on them."""
    config, device, dtype = model.config, model.device, model.dtype
    unknown = [k for k in extra if k not in _TOLERATED_EXTRA]
    if unknown:
        raise TypeError(f"{type(model).__name__}() got unexpected keyword argument(s): {', '.join(unknown)}")
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds "
                         f"(got {'both' if input_ids is not None else 'neither'})")
    input_ids = as_ids(input_ids, "input_ids", device, config.vocab_size)
    inputs_embeds = as_embeds(inputs_embeds, "inputs_embeds", device, dtype, config.hidden_size)
    batch, seq = (input_ids if input_ids is not None else inputs_embeds).shape[:2]

    use_cache = bool(config.is_decoder and (config.use_cache if use_cache is None else use_cache))
    if past_key_values is not None and not isinstance(past_key_values, EncoderDecoderCache):
        raise TypeError(f"past_key_values: expected the EncoderDecoderCache a model returned, "
                        f"got {type(past_key_values).__name__}")
    cache = past_key_values if past_key_values is not None else (
        EncoderDecoderCache(config.num_hidden_layers) if use_cache else None)
    past = cache.get_seq_length() if cache is not None else 0

    if position_ids is None and past + seq > config.max_position_embeddings:
        raise ValueError(f"sequence length {past + seq} (past {past} + new {seq}) exceeds "
                         f"max_position_embeddings={config.max_position_embeddings}")
    if position_ids is not None:
        position_ids = as_ids(position_ids, "position_ids", device, config.max_position_embeddings)
    attention_mask = as_mask(attention_mask, "attention_mask", device, dtype, (batch, past + seq))
    head_mask = as_head_mask(head_mask, "head_mask", device, dtype, config.num_hidden_layers,
                             config.num_attention_heads)

    if encoder_hidden_states is not None:
        if not config.add_cross_attention:
            raise ValueError(f"encoder_hidden_states were given, but this {type(model).__name__} has no "
                             "cross-attention: load it with is_decoder=True, add_cross_attention=True")
        width = getattr(config, "cross_attention_hidden_size", None) or config.hidden_size
        encoder_hidden_states = as_embeds(encoder_hidden_states, "encoder_hidden_states", device, dtype, width)
        if encoder_hidden_states.shape[0] != batch:
            raise ValueError(f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]}: expected {batch}")
        encoder_attention_mask = as_mask(encoder_attention_mask, "encoder_attention_mask", device, dtype,
                                         encoder_hidden_states.shape[:2])
    out = bert_stack(body_params, config, input_ids=input_ids, inputs_embeds=inputs_embeds,
                     attention_mask=attention_mask, position_ids=position_ids, head_mask=head_mask,
                     encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
                     cache=cache, output_attentions=_flag(output_attentions, config.output_attentions),
                     output_hidden_states=_flag(output_hidden_states, config.output_hidden_states))
    return out, cache


def _flag(value, default):
    return bool(default if value is None else value)
