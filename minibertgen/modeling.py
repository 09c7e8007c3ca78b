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

import numpy as np

from . import loading, placement
from .backend import parse_device
from .checkpoint.mapping import checkpoint_name, flatten
from .config import BertConfig, BertGenerationConfig, RobertaConfig
from .families import FAMILIES
from .fast import kernels_for
from .generation import GenerationMixin
from .inputs import as_ids, body_inputs
from .model import bert_stack, causal_lm, pooler
from .embeddings_surface import EmbeddingsSurface
from .generation.utils import generation_config_property
from .model_shell import ModelShell
from .outputs import ModelOutput
from .training import records_activations

__all__ = ["PreTrainedModel", "BertGenerationEncoder", "BertGenerationDecoder", "BertModel", "BertLMHeadModel",
           "RobertaModel", "RobertaForCausalLM", "ENCODER_CLASSES", "DECODER_CLASSES"]

WEIGHTS_NAME = "model.safetensors"
class PreTrainedModel(ModelShell):
    """One half: config, parameter tree, device; loading and saving through loading.py."""

    config_class = BertGenerationConfig
    base_model_prefix = "bert"
    _tied_weights_keys = None
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
        self.params = params  # the tree as given: placement.place() arranged it for the device
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
        # the body before the head, as torch registers them: a tied table is then named after the
        # body's embeddings in named_parameters(), as in transformers (a checkpoint may list lm_head first)
        ordered = sorted(flatten(self.params).items(), key=lambda item: item[0].startswith("lm_head."))
        return {checkpoint_name(name, family, self.has_lm_head): array for name, array in ordered}

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
        self.params = placement.place(flatten(self.params), cast, self.device)
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
        """Use ``value`` (an embeddings object or a [rows, width] array) as the word embeddings.
        Any shape is taken, as transformers takes any module; the forward pass needs width
        hidden_size (config.vocab_size is not changed: resize_token_embeddings does that)."""
        EmbeddingsSurface(self.body_params["embeddings"]["word_embeddings"]).replace(value)

    def get_output_embeddings(self):
        """The head's vocabulary projection (``.weight`` [vocab, hidden], ``.bias`` [vocab]), or None."""
        return EmbeddingsSurface(self.params["lm_head"]["decoder"], self.params["lm_head"]) \
            if self.has_lm_head else None

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Grow or shrink the vocabulary (rows added at the mean of the old ones, as
        transformers' mean_resizing; else N(0, initializer_range)); ties are kept."""
        from .embeddings_surface import resize_vocabulary

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

    @records_activations
    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 head_mask=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, record=None, **kwargs):
        """The body's forward pass: embeddings and every layer.

        Args:
            input_ids: token ids [batch, seq] (or ``inputs_embeds`` [batch, seq, hidden]).
            attention_mask: [batch, seq] (past + seq with a cache), 1 for real tokens, 0 for padding.
            token_type_ids: [batch, seq] segment ids (BERT, RoBERTa; ignored by BertGeneration).
            position_ids: [batch, seq] positions (default: counted from the cache's length).
            head_mask: [layers, heads] (or [heads]) multipliers of the attention probabilities.
            encoder_hidden_states / encoder_attention_mask: what a cross-attending decoder reads.
            past_key_values / use_cache: a decoder's EncoderDecoderCache (default
                ``config.use_cache`` for a decoder, never for an encoder).
            output_attentions / output_hidden_states / return_dict: as in transformers.

        Returns:
            A ModelOutput: ``last_hidden_state`` [batch, seq, hidden], ``pooler_output`` [batch,
            hidden] (BERT and RoBERTa with a pooler), ``past_key_values``, ``hidden_states``,
            ``attentions``, ``cross_attentions`` (those asked for); a tuple with return_dict=False.
        """
        inputs, cache = body_inputs(self, input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
                                    inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                                    encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                                    use_cache=use_cache, output_attentions=output_attentions,
                                    output_hidden_states=output_hidden_states, extra=kwargs)
        out = bert_stack(self.params, self.config, record=record, **inputs)
        pooled = pooler(self.params["pooler"], out["last_hidden_state"]) if "pooler" in self.params else None
        result = ModelOutput(last_hidden_state=out["last_hidden_state"], pooler_output=pooled,
                             past_key_values=cache, hidden_states=out.get("hidden_states"),
                             attentions=out.get("attentions"), cross_attentions=out.get("cross_attentions"))
        return result.to_tuple() if self._return_tuple(return_dict) else result


class _CausalLM(PreTrainedModel, GenerationMixin):
    """A body (under ``bert`` in the tree) with a language-modelling head on top."""

    has_lm_head = True

    generation_config = generation_config_property

    @records_activations
    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 head_mask=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                 labels=None, past_key_values=None, use_cache=None, output_attentions=None,
                 output_hidden_states=None, return_dict=None, record=None, **kwargs):
        """The body plus the language-model head; with ``labels``, also the next-token loss.

        Args: those of the body (see BertGenerationEncoder.__call__), and
            labels: [batch, seq] ids; position t is scored against label t + 1 (the shift is done
                here), -100 marks positions to ignore.  Given labels, no cache is used (as
                transformers), so relative positions are each query's own.

        Returns:
            A ModelOutput (transformers' CausalLMOutputWithCrossAttentions fields): ``loss``,
            ``logits`` [batch, seq, vocab], ``past_key_values``, ``hidden_states``,
            ``attentions``, ``cross_attentions``; a tuple with return_dict=False.  In training
            mode ``loss.backward()`` fills every parameter's ``.grad``.
        """
        inputs, cache = body_inputs(self, input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
                                    inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
                                    encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
                                    use_cache=False if labels is not None else use_cache,
                                    output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                    extra=kwargs)
        if labels is not None:
            labels = as_ids(labels, "labels", self.device, self.config.vocab_size, allow_ignore=True)
            expected = (inputs["input_ids"] if input_ids is not None else inputs["inputs_embeds"]).shape[:2]
            if labels.shape != expected:
                raise ValueError(f"labels has shape {tuple(labels.shape)}: expected {tuple(expected)}")
        out = causal_lm(self.params, self.config, labels=labels, record=record, **inputs)  # logits [batch, seq, vocab]
        result = ModelOutput(loss=out.get("loss"), logits=out["logits"], past_key_values=cache,
                             hidden_states=out.get("hidden_states"), attentions=out.get("attentions"),
                             cross_attentions=out.get("cross_attentions"))
        return result.to_tuple() if self._return_tuple(return_dict) else result

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs):
        """The inputs of one generation step, as transformers builds them: the ids the cache
        has not seen, the cache and the mask (a decoder alone also gets position ids)."""
        from .generation.step import step_inputs

        return step_inputs(input_ids, past_key_values, attention_mask, kwargs)


class BertGenerationEncoder(_Encoder):
    """transformers' BertGenerationEncoder: no token types, no pooler."""


class BertGenerationDecoder(_CausalLM, GenerationMixin):  # GenerationMixin listed directly, as transformers
    """transformers' BertGenerationDecoder: the head is the vocabulary projection alone."""

    # transformers' names of the weights tied to others
    _tied_weights_keys = ["lm_head.decoder.weight", "lm_head.decoder.bias"]


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


class BertLMHeadModel(_CausalLM, GenerationMixin):  # GenerationMixin listed directly, as transformers
    """transformers' BertLMHeadModel: the head transforms (dense, activation, LayerNorm) first."""

    # transformers' names of the weights tied to others
    _tied_weights_keys = ["cls.predictions.decoder.bias", "cls.predictions.decoder.weight"]

    config_class = BertConfig


class RobertaModel(_PooledEncoder):
    """transformers' RobertaModel: BertModel with positions counted from pad_token_id + 1."""

    config_class = RobertaConfig
    base_model_prefix = "roberta"


class RobertaForCausalLM(_CausalLM, GenerationMixin):  # GenerationMixin listed directly, as transformers
    """transformers' RobertaForCausalLM: its head's transform always uses the erf GELU."""

    # transformers' names of the weights tied to others
    _tied_weights_keys = ["lm_head.decoder.weight", "lm_head.decoder.bias"]

    config_class = RobertaConfig
    base_model_prefix = "roberta"


# The classes transformers' AutoModel / AutoModelForCausalLM pick for each model_type (families.py).
ENCODER_CLASSES = {model_type: globals()[family.encoder] for model_type, family in FAMILIES.items()}
DECODER_CLASSES = {model_type: globals()[family.decoder] for model_type, family in FAMILIES.items()}
