"""The model classes of the BERT-family halves: thin shells around the functions in model.py.

A model is a config, a parameter tree on a device, and three verbs: ``from_pretrained``
(loading.py does the reading), ``__call__`` (check inputs, run the math, wrap the result
in a ModelOutput) and ``save_pretrained``.  The math lives in model.py; the three
families differ there by a few lines chosen by the config, and here only by their names:

    family            encoder (base model)      decoder (causal LM)
    bert-generation   BertGenerationEncoder     BertGenerationDecoder
    bert              BertModel                 BertLMHeadModel
    roberta           RobertaModel              RobertaForCausalLM
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from . import loading
from .backend import device_and_dtype, parse_device
from .cache import EncoderDecoderCache
from .checkpoint.mapping import checkpoint_name, flatten
from .checkpoint.saving import save_model
from .config import BertConfig, BertGenerationConfig, RobertaConfig
from .fast import kernels_for
from .fast.lookup import runs_with_model_kernels
from .generation import GenerationMixin
from .inputs import (as_embeds, as_head_mask, as_ids, as_mask, as_position_ids, as_token_types, check_chunking,
                     check_positions)
from .model import bert_stack, causal_lm_loss, lm_head, pooler
from .modeling_surface import (EmbeddingsSurface, ModuleSpellings, generation_config_property,
                               move_generation_parameters)
from .outputs import ModelOutput
from .training import TrainingMixin, records_activations, sub_record

__all__ = ["PreTrainedModel", "BertGenerationEncoder", "BertGenerationDecoder", "BertModel", "BertLMHeadModel",
           "RobertaModel", "RobertaForCausalLM", "ENCODER_CLASSES", "DECODER_CLASSES"]

WEIGHTS_NAME = "model.safetensors"
_EMBEDDING_TABLES = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                     "distance_embedding.weight")  # transformers' nn.Embedding weights in these models


class ModelShell(ModuleSpellings, TrainingMixin):
    """What every model class shares around its parameters: counting, saving; training's
    train() / eval() / named_parameters() / zero_grad() come from training.TrainingMixin."""

    main_input_name = "input_ids"

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Each distinct array once (a tied weight once), 8-bit and 4-bit weights by the values
        they stand for, as transformers counts.  ``only_trainable``: without the quantized
        weights (frozen, as bitsandbytes' are) and those with requires_grad=False; ``exclude_embeddings``: without the embedding
        tables (words, positions, token types, relative distances; a head tied to the word
        embeddings goes with them)."""
        names = {}  # id -> (array, its checkpoint names)
        frozen = ({id(p.data) for p in self._parameters_by_array().values() if not p.requires_grad}
                  if only_trainable else set())
        for name, array in self.state_dict().items():
            names.setdefault(id(array), (array, []))[1].append(name)
        total = 0
        for array, aliases in names.values():
            if only_trainable and (getattr(array, "is_quantized", False) or id(array) in frozen):
                continue
            if exclude_embeddings and any(name.endswith(_EMBEDDING_TABLES) for name in aliases):
                continue
            total += array.size
        return int(total)

    def get_memory_footprint(self) -> int:
        return loading.memory_footprint(self.state_dict())

    def _move_and_cast(self, args, device, dtype):
        """``to(...)``'s arguments -> (the Device to use, the NumPy dtype to cast to or None)."""
        device, dtype = device_and_dtype(args, device, dtype)
        cast = loading.cast_dtype(self.state_dict(), dtype)
        return (parse_device(device) if device is not None else self.device), cast

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "generate")

    def _make_generation_config(self) -> None:
        """A model that generates gets its generation config when it is made, as in transformers
        (read from generation_config.json, else derived from the model config): settings put on
        model.config later reach generate() only through legacy_generation_config's rule."""
        if self.can_generate():
            self._generation_config = None
            self.generation_config  # noqa: B018 (made and remembered by the property)

    def _return_tuple(self, return_dict) -> bool:
        """return_dict=False (or config.return_dict=False) asks for transformers' plain tuple."""
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        return not return_dict

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

    def save_pretrained(self, save_directory, safe_serialization=True, **kwargs) -> Path:
        """Write config.json + model.safetensors (+ generation_config.json), loadable by transformers 4.57.

        Each half is written with its own model_type and checkpoint names; a tied weight is
        written once, under the name it ties to, as transformers writes it.  Quantized
        weights are written packed, in bitsandbytes' layout (quantization/serialization.py),
        and config.json gets their ``quantization_config``.  ``safe_serialization=False``
        (pytorch_model.bin) needs torch, which minibertgen never imports: refused.
        """
        if safe_serialization is not True:
            raise ValueError(f"safe_serialization={safe_serialization!r}: minibertgen writes safetensors only "
                             "(a pytorch_model.bin would need torch); transformers reads model.safetensors")
        unknown = [k for k in kwargs if k not in ("max_shard_size", "push_to_hub", "is_main_process")]
        if unknown or kwargs.get("push_to_hub"):
            raise TypeError(f"save_pretrained() got unsupported keyword argument(s): "
                            f"{', '.join(unknown or ['push_to_hub'])}")
        directory = Path(save_directory)
        flat = loading.saved_state(self.state_dict(), self._tied_checkpoint_pairs())
        if any(getattr(v, "is_quantized", False) for v in flat.values()):
            from .quantization.serialization import serialize_quantized

            self.config.quantization_config = self._quantization_config()
            flat = serialize_quantized(flat)
        self._mark_architectures()
        if self.can_generate():
            move_generation_parameters(self.config, self.generation_config)
        self.config.dtype = str(np.dtype(self.dtype))
        # All files are written first, then swapped in together (checkpoint/saving.py).
        generation_config = self.generation_config if self.can_generate() else None
        return save_model(directory, self.config, flat, generation_config)


class PreTrainedModel(ModelShell):
    """One half: config, parameter tree, device; loading and saving through loading.py."""

    config_class = BertGenerationConfig
    base_model_prefix = "bert"
    has_lm_head = False
    has_pooler = False

    def __init__(self, config, params=None, *, device=None, dtype=None, seed=None):
        if type(config) is not self.config_class:
            raise TypeError(f"config: {type(self).__name__} expects a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        loading.check_supported(config, type(self).__name__)
        self.config = config
        self.device = parse_device(device)
        self.kernels = kernels_for(self.device)  # the speed wing's table for this device (fast/)
        if params is None:  # a fresh model with random weights, as transformers' constructor
            params = loading.random_params(partial(self.weights_from_state, pooler=self.has_pooler), config, dtype,
                                           self.device, seed)
        self.params = params  # the tree as given: loading.place() arranged it for the device
        self._make_generation_config()

    # -- weights ----------------------------------------------------------------------------
    @classmethod
    def weights_from_state(cls, state, config, report, source, rng, strip="", pooler=None) -> dict:
        """Map a checkpoint's tensors onto this class's tree names (loading.half_weights);
        ``pooler``: with a pooler (default: the class's has_pooler)."""
        pooler = cls.has_pooler if pooler is None else pooler
        return loading.half_weights(state, config, report, source, rng, lm=cls.has_lm_head, pooler=pooler,
                                    strip=strip)

    def _tied_checkpoint_pairs(self) -> list:
        family = self.config.model_type
        return [(checkpoint_name(a, family, self.has_lm_head), checkpoint_name(b, family, self.has_lm_head))
                for a, b in loading.tie_pairs(self.config, self.has_lm_head)]

    @property
    def dtype(self):
        return self.embeddings_table.dtype

    @property
    def body_params(self) -> dict:
        return self.params["bert"] if self.has_lm_head else self.params

    @property
    def embeddings_table(self):
        return self.body_params["embeddings"]["word_embeddings"]["weight"]

    def state_dict(self) -> dict:
        """Flat {checkpoint name: array}, named as this transformers class names them."""
        family = self.config.model_type
        return {checkpoint_name(name, family, self.has_lm_head): array for name, array in flatten(self.params).items()}

    # -- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, **kwargs):
        """Load config.json + weights from a directory, a shipped model's name or a hub id (checkpoint/hub.py).

        ``dtype``: None -> float32, "auto" -> as stored, or "float16"/"bfloat16"/a NumPy dtype.
        Other keyword arguments override config fields (``bos_token_id=101``).
        ``output_loading_info=True`` returns (model, loading_info) as transformers does;
        ``from_pretrained(None, config=..., state_dict=...)`` loads given tensors.
        BertModel / RobertaModel take ``add_pooling_layer`` (default True); a checkpoint without
        pooler weights then needs ``add_pooling_layer=False`` (transformers would initialise a
        random pooler, whose pooler_output no other library reproduces: refused, not guessed).
        (``_missing_pooler="initialise"``, for a warm-started encoder whose pooler an
        EncoderDecoderModel never uses, initialises absent pooler weights as transformers does.)
        """
        missing_pooler = kwargs.pop("_missing_pooler", "refuse")
        pooled = cls.has_pooler
        if "add_pooling_layer" in kwargs and cls.has_pooler:
            pooled = _check_pooling_flag(kwargs.pop("add_pooling_layer"))

        def build_flat(state, config, report, source, rng):
            if pooled and missing_pooler == "refuse":
                loading.require_stored_pooler(cls.__name__, state, config, source)
            return cls.weights_from_state(state, config, report, source, rng, pooler=pooled)

        config, tree, device, directory, report, options = loading.from_pretrained(
            cls.__name__, pretrained_model_name_or_path, cls.config_class, build_flat, kwargs,
            quantized_as=lambda config: loading.half_quantization(config, cls.has_lm_head, pooled))
        model = cls(config, tree, device=device)
        model.name_or_path = str(directory) if directory is not None else None
        model._make_generation_config()  # generation_config.json next to the weights, if there is one
        return (model, loading.loading_info(report)) if options.get("output_loading_info") else model

    def to(self, *args, device=None, dtype=None):
        """Move the weights to ``device`` ("cpu", "cuda", 0, ...) and/or cast them to ``dtype``
        ("float16", "float32", torch.float16, ...), given as torch's ``to`` takes them; returns self."""
        self.device, cast = self._move_and_cast(args, device, dtype)
        self.params = loading.place(flatten(self.params), cast, self.device)
        self.kernels = kernels_for(self.device, self.kernels is not None)
        return self

    def use_fast_kernels(self, enabled: bool = True):
        """Run on the speed wing's kernels (default) or, with False, on the plain reference ops."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled={enabled!r}: expected True or False")
        self.kernels = kernels_for(self.device, enabled)
        return self

    # -- transformers' model surface --------------------------------------------------------
    def get_input_embeddings(self):
        return EmbeddingsSurface(self.body_params["embeddings"]["word_embeddings"])

    def set_input_embeddings(self, value):
        EmbeddingsSurface(self.body_params["embeddings"]["word_embeddings"]).replace(value, self.config.hidden_size)

    def get_output_embeddings(self):
        return EmbeddingsSurface(self.params["lm_head"]["decoder"]) if self.has_lm_head else None

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Grow or shrink the vocabulary (rows added at the mean of the old ones, as
        transformers' mean_resizing; else N(0, initializer_range)); ties are kept."""
        from .modeling_surface import resize_vocabulary

        return resize_vocabulary(self, new_num_tokens, pad_to_multiple_of, mean_resizing)

    @property
    def base_model(self):
        """The body as its family's base model (sharing this model's arrays)."""
        if not self.has_lm_head:
            return self
        return ENCODER_CLASSES[self.config.model_type](self.config, self.params["bert"], device=self.device)


class _Encoder(PreTrainedModel):
    """A body: embeddings and layers, returning hidden states (and BERT's pooler output).

    With ``config.is_decoder`` it is causal and can return a cache; with
    ``config.add_cross_attention`` it also attends to ``encoder_hidden_states``.
    """

    @runs_with_model_kernels
    @records_activations
    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 head_mask=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, record=None, **kwargs):
        out, cache = run_body(self, self.params, record=record, input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
                              inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                              use_cache=use_cache, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, extra=kwargs)
        pooled = pooler(self.params["pooler"], out["last_hidden_state"]) if "pooler" in self.params else None
        result = ModelOutput(last_hidden_state=out["last_hidden_state"], pooler_output=pooled,
                             past_key_values=cache, hidden_states=out.get("hidden_states"),
                             attentions=out.get("attentions"), cross_attentions=out.get("cross_attentions"))
        return result.to_tuple() if self._return_tuple(return_dict) else result


class _CausalLM(PreTrainedModel, GenerationMixin):
    """A body (under ``bert`` in the tree) with a language-modelling head on top."""

    has_lm_head = True

    generation_config = generation_config_property

    @runs_with_model_kernels
    @records_activations
    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 head_mask=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 labels=None, past_key_values=None, use_cache=None, output_attentions=None,
                 output_hidden_states=None, return_dict=None, record=None, **kwargs):
        if labels is not None:
            use_cache = False
        out, cache = run_body(self, self.params["bert"], record=sub_record(record, "bert"), input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
                              inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                              encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                              use_cache=use_cache, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, extra=kwargs)
        logits = lm_head(self.params["lm_head"], out["last_hidden_state"], self.config,
                         record=sub_record(record, "lm_head"))  # [batch, seq, vocab]
        loss = None
        if labels is not None:
            labels = as_ids(labels, "labels", self.device, self.config.vocab_size, allow_ignore=True)
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels has shape {tuple(labels.shape)}: expected {tuple(logits.shape[:2])}")
            loss = causal_lm_loss(logits, labels)
        result = ModelOutput(loss=loss, logits=logits, past_key_values=cache,
                             hidden_states=out.get("hidden_states"), attentions=out.get("attentions"),
                             cross_attentions=out.get("cross_attentions"))
        return result.to_tuple() if self._return_tuple(return_dict) else result

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs):
        """The inputs of one generation step, as transformers builds them: the ids the cache
        has not seen, the cache and the mask (a decoder alone also gets position ids)."""
        from .modeling_surface import step_inputs

        return step_inputs(input_ids, past_key_values, attention_mask, kwargs)


class BertGenerationEncoder(_Encoder):
    """transformers' BertGenerationEncoder: no token types, no pooler."""


class BertGenerationDecoder(_CausalLM):
    """transformers' BertGenerationDecoder: the head is the vocabulary projection alone."""


class _PooledEncoder(_Encoder):
    """A base model with BERT's pooler, pooler_output = tanh(dense(h[:, 0])); transformers'
    ``add_pooling_layer=False`` leaves it out (pooler_output None, no pooler weights saved)."""

    has_pooler = True

    def __init__(self, config, params=None, add_pooling_layer=None, *, device=None, dtype=None, seed=None):
        if isinstance(params, bool):  # BertModel(config, False): transformers' positional add_pooling_layer
            if add_pooling_layer is not None:
                raise TypeError(f"{type(self).__name__}() got add_pooling_layer twice ({params!r} and "
                                f"{add_pooling_layer!r})")
            params, add_pooling_layer = None, params
        if add_pooling_layer is None:  # default: a pooler, unless given weights without one
            add_pooling_layer = params is None or "pooler" in params
        add_pooling_layer = _check_pooling_flag(add_pooling_layer)
        if params is not None and ("pooler" in params) != add_pooling_layer:
            held = "holds" if "pooler" in params else "has no"
            raise ValueError(f"add_pooling_layer={add_pooling_layer}, but the given params {held} pooler weights: "
                             f"expected add_pooling_layer={not add_pooling_layer} for them")
        self.has_pooler = add_pooling_layer
        super().__init__(config, params, device=device, dtype=dtype, seed=seed)


def _check_pooling_flag(value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"add_pooling_layer={value!r}: expected True or False")
    return bool(value)


class BertModel(_PooledEncoder):
    """transformers' BertModel: token-type embeddings and the pooler (tanh(dense(h[:, 0])))."""

    config_class = BertConfig


class BertLMHeadModel(_CausalLM):
    """transformers' BertLMHeadModel: the head transforms (dense, activation, LayerNorm) first."""

    config_class = BertConfig


class RobertaModel(_PooledEncoder):
    """transformers' RobertaModel: BertModel with positions counted from pad_token_id + 1."""

    config_class = RobertaConfig
    base_model_prefix = "roberta"


class RobertaForCausalLM(_CausalLM):
    """transformers' RobertaForCausalLM: its head's transform always uses the erf GELU."""

    config_class = RobertaConfig
    base_model_prefix = "roberta"


# The classes transformers' AutoModel / AutoModelForCausalLM pick for each model_type.
ENCODER_CLASSES = {"bert-generation": BertGenerationEncoder, "bert": BertModel, "roberta": RobertaModel}
DECODER_CLASSES = {"bert-generation": BertGenerationDecoder, "bert": BertLMHeadModel, "roberta": RobertaForCausalLM}

_TOLERATED_EXTRA = ("return_dict", "cache_position")


def run_body(model, body_params, *, input_ids, attention_mask, token_type_ids, position_ids, head_mask,
             inputs_embeds, encoder_hidden_states, encoder_attention_mask, past_key_values, use_cache,
             output_attentions, output_hidden_states, extra, record=None):
    """Validate the inputs of a body, then run model.bert_stack on them (``record``: training's)."""
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

    check_positions(config, past, seq, position_ids)
    check_chunking(config, seq)
    position_ids = as_position_ids(position_ids, "position_ids", device, config.max_position_embeddings, batch, seq)
    token_type_ids = as_token_types(config, token_type_ids, device, (batch, seq))
    attention_mask = as_mask(attention_mask, "attention_mask", device, dtype, (batch, past + seq), queries=seq)
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
                                         encoder_hidden_states.shape[:2], queries=seq)
    out = bert_stack(body_params, config, input_ids=input_ids, inputs_embeds=inputs_embeds,
                     attention_mask=attention_mask, position_ids=position_ids, head_mask=head_mask,
                     encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
                     cache=cache, past_length=past, token_type_ids=token_type_ids, record=record,
                     output_attentions=_flag(output_attentions, config.output_attentions),
                     output_hidden_states=_flag(output_hidden_states, config.output_hidden_states))
    return out, cache


def _flag(value, default):
    return bool(default if value is None else value)

