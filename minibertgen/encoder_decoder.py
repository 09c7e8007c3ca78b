"""EncoderDecoderModel: a BERT-family encoder and decoder joined by cross-attention.

    source ids --encoder--> states [batch, src, enc_hidden] --(enc_to_dec_proj)-->
    decoder(target ids, cross-attending to the states) --(LM head)--> logits

Each half is any of the three families (modeling.py), chosen by its sub-config's
model_type, in any pairing.  Loading, name mapping and tying live in loading.py.
"""
from __future__ import annotations

from . import loading, placement
from .backend import parse_device
from .checkpoint.mapping import flatten, unflatten
from .config import EncoderDecoderConfig
from .families import BASE_MODEL_PREFIX
from .fast import kernels_for
from .generation import GenerationMixin
from .generation.prepare import encoder_states_of
from .inputs import as_ids, body_inputs
from .model import project_states, seq2seq, shift_tokens_right
from .model_shell import ModelShell
from .modeling import DECODER_CLASSES, ENCODER_CLASSES
from .generation.utils import generation_config_property
from .outputs import ModelOutput
from .warm_start import refuse_a_single_half, warm_start
from .activation_record import sub_record
from .training import records_activations

__all__ = ["EncoderDecoderModel"]


def _half_classes(config):
    return ENCODER_CLASSES[config.encoder.model_type], DECODER_CLASSES[config.decoder.model_type]


def _build_flat(state, config, report, source, rng):
    encoder_class, _ = _half_classes(config)
    return loading.seq2seq_weights(state, config, report, source, rng, encoder_pooler=encoder_class.has_pooler)


class EncoderDecoderModel(GenerationMixin, ModelShell):
    """Sequence-to-sequence model from a BERT-family encoder and decoder."""

    config_class = EncoderDecoderConfig
    base_model_prefix = "encoder_decoder"
    _tied_weights_keys = None  # as transformers' class (the halves' own ties are theirs)

    def __init__(self, config=None, encoder=None, decoder=None, *, device=None, dtype=None, seed=None):
        if config is None and (encoder is None or decoder is None):
            raise ValueError("EncoderDecoderModel needs a config, or both an encoder and a decoder")
        if config is None:
            config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        if not isinstance(config, EncoderDecoderConfig):
            raise TypeError(f"config: expected an EncoderDecoderConfig, got {type(config).__name__}")
        loading.check_seq2seq_supported(config)
        projection = None
        if encoder is None and decoder is None:  # random weights from the config, as transformers
            device = parse_device(device)
            tree = loading.random_params(_build_flat, config, dtype, device, seed)
            encoder_class, decoder_class = _half_classes(config)
            encoder = encoder_class(config.encoder, tree["encoder"], device=device)
            decoder = decoder_class(config.decoder, tree["decoder"], device=device)
            projection = tree.get("enc_to_dec_proj")
        elif encoder is None or decoder is None:
            encoder_class, decoder_class = _half_classes(config)
            if encoder is None:
                encoder = encoder_class(config.encoder, device=decoder.device, dtype=dtype, seed=seed)
            else:
                decoder = decoder_class(config.decoder, device=encoder.device, dtype=dtype, seed=seed)
        self._assemble(config, encoder, decoder, projection, seed)

    def _assemble(self, config, encoder, decoder, projection, seed=None) -> None:
        """Join two halves: checks, one shared config, ties, the projection."""
        if encoder.get_output_embeddings() is not None:
            raise ValueError(f"the encoder ({type(encoder).__name__}) has an LM head: use a model without one "
                             f"({ENCODER_CLASSES[encoder.config.model_type].__name__})")
        if not getattr(decoder, "has_lm_head", False):
            raise ValueError(f"the decoder ({type(decoder).__name__}) has no LM head: use "
                             f"{DECODER_CLASSES[decoder.config.model_type].__name__}")
        if "crossattention" not in decoder.params["bert"]["encoder"]["layer"][0]:
            raise ValueError("the decoder has no cross-attention layers: load it with "
                             "is_decoder=True, add_cross_attention=True")
        if encoder.device != decoder.device:
            raise ValueError(f"encoder is on {encoder.device} but decoder on {decoder.device}: put both on one device")
        self.config = config
        self.encoder, self.decoder = encoder, decoder
        encoder.config, decoder.config = config.encoder, config.decoder  # one config, shared (as transformers)
        self.device = encoder.device
        if config.tie_encoder_decoder:
            self._tie_halves()
        if loading.needs_projection(config) and projection is None:
            projection = loading.new_projection(config, encoder.dtype, self.device, seed)
        self.enc_to_dec_proj = projection if loading.needs_projection(config) else None
        self._make_generation_config()

    def _tie_halves(self) -> None:
        """tie_encoder_decoder: the encoder takes the DECODER's arrays (loading.seq2seq_tie_pairs)."""
        flat = self._tree_state()
        names = {"encoder": [k[len("encoder."):] for k in flat if k.startswith("encoder.")],
                 "decoder": [k[len("decoder."):] for k in flat if k.startswith("decoder.")]}
        pairs = loading.seq2seq_tie_pairs(self.config, names["encoder"], names["decoder"])
        tree = unflatten(loading.tie(flat, pairs))
        self.encoder.params, self.decoder.params = tree["encoder"], tree["decoder"]

    def _tree_state(self) -> dict:
        """Flat {name: array} in the tree layout (encoder. / decoder. / enc_to_dec_proj.)."""
        flat = {f"encoder.{k}": v for k, v in flatten(self.encoder.params).items()}
        flat.update({f"decoder.{k}": v for k, v in flatten(self.decoder.params).items()})
        if getattr(self, "enc_to_dec_proj", None) is not None:
            flat.update({f"enc_to_dec_proj.{k}": v for k, v in self.enc_to_dec_proj.items()})
        return flat

    @property
    def dtype(self):
        return self.encoder.dtype

    @property
    def kernels(self):
        return self.decoder.kernels

    def use_fast_kernels(self, enabled: bool = True):
        self.encoder.use_fast_kernels(enabled)
        self.decoder.use_fast_kernels(enabled)
        return self

    @property
    def params(self) -> dict:
        tree = {"encoder": self.encoder.params, "decoder": self.decoder.params}
        if self.enc_to_dec_proj is not None:
            tree["enc_to_dec_proj"] = self.enc_to_dec_proj
        return tree

    def state_dict(self) -> dict:
        """Flat {checkpoint name: array}: each half under its own transformers names."""
        flat = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        flat.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        if self.enc_to_dec_proj is not None:
            flat.update({f"enc_to_dec_proj.{k}": v for k, v in self.enc_to_dec_proj.items()})
        return flat

    def _tied_checkpoint_pairs(self) -> list:
        """The ties in checkpoint names: what save_pretrained writes once (the decoder's copy)."""
        encoder_names = [k[len("encoder."):] for k in self.state_dict() if k.startswith("encoder.")]
        pairs = [("encoder." + a, "encoder." + b) for a, b in self.encoder._tied_checkpoint_pairs()]
        pairs += [("decoder." + a, "decoder." + b) for a, b in self.decoder._tied_checkpoint_pairs()]
        if self.config.tie_encoder_decoder:
            prefix = f"decoder.{BASE_MODEL_PREFIX[self.config.decoder.model_type]}."
            pairs += [("encoder." + name, prefix + name) for name in encoder_names]
        return pairs

    generation_config = generation_config_property

    # -- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, **kwargs):
        """Load a saved EncoderDecoderModel: config.json with ``encoder`` and ``decoder`` sub-configs,
        and its weights (model.safetensors, sharded or not, or pytorch_model.bin read without
        executing pickled code).  Each half is built as its sub-config's model_type says.

        Args:
            pretrained_model_name_or_path: a directory, or a hub id already in the local Hugging
                Face cache (downloaded only when huggingface_hub is installed and you are online).
                A checkpoint of one BERT-family model is refused: build a new encoder-decoder
                from it with :meth:`from_encoder_decoder_pretrained`.
            dtype: None (float32), "auto" (as stored), "float16", "bfloat16" (computed in float32).
            device: "cpu" (default), "cuda", "cuda:1" or an index: where the weights live.
            quantization_config: a BitsAndBytesConfig (8-bit or 4-bit weights), or read from a
                checkpoint that was saved quantized.
            config: an EncoderDecoderConfig to use instead of config.json.
            output_loading_info: also return {"missing_keys", "unexpected_keys",
                "mismatched_keys", "error_msgs"}, as transformers does.
            revision / cache_dir / local_files_only / subfolder: where to look in the hub cache.
            Other keywords set fields of the config (e.g. ``decoder_start_token_id=2``).

        Returns:
            The model (and the loading info with output_loading_info=True), in eval mode.
        """
        refuse_a_single_half(pretrained_model_name_or_path, kwargs)
        config, tree, device, directory, report, options = loading.from_pretrained(
            cls.__name__, pretrained_model_name_or_path, EncoderDecoderConfig, _build_flat, kwargs,
            quantized_as=loading.seq2seq_quantization)
        encoder_class, decoder_class = _half_classes(config)
        model = cls.__new__(cls)
        model._assemble(config, encoder_class(config.encoder, tree["encoder"], device=device),
                        decoder_class(config.decoder, tree["decoder"], device=device), tree.get("enc_to_dec_proj"))
        model.name_or_path = str(directory) if directory is not None else None
        model._make_generation_config()  # generation_config.json next to the weights, if there is one
        return (model, loading.loading_info(report)) if options.get("output_loading_info") else model

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_pretrained_model_name_or_path=None,
                                        decoder_pretrained_model_name_or_path=None, **kwargs):
        """Warm-start: an encoder and a decoder each from its own checkpoint, as transformers does.

        The encoder is the checkpoint's base model (BertModel for a BERT checkpoint), the
        decoder its causal-LM class (BertLMHeadModel) with is_decoder=True and
        add_cross_attention=True.  ``encoder_*`` / ``decoder_*`` keyword arguments go to the
        matching from_pretrained (``encoder_model=`` / ``decoder_model=`` pass a ready
        model instead); ``dtype``, ``device`` and ``seed`` go to both; the rest to the
        EncoderDecoderConfig.
        """
        enc_kwargs = {k[len("encoder_"):]: v for k, v in kwargs.items() if k.startswith("encoder_")}
        dec_kwargs = {k[len("decoder_"):]: v for k, v in kwargs.items() if k.startswith("decoder_")}
        shared = {k: v for k, v in kwargs.items() if not k.startswith(("encoder_", "decoder_"))}
        shared_load = {k: shared.pop(k) for k in ("dtype", "device", "seed") if k in shared}
        encoder = enc_kwargs.pop("model", None)
        if encoder is None:
            encoder = warm_start(encoder_pretrained_model_name_or_path, "encoder", {**shared_load, **enc_kwargs})
        decoder = dec_kwargs.pop("model", None)
        if decoder is None:
            decoder = warm_start(decoder_pretrained_model_name_or_path, "decoder", {**shared_load, **dec_kwargs})
        config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config, **shared)
        return cls(config, encoder, decoder)

    def _mark_architectures(self) -> None:
        self.config.architectures = ["EncoderDecoderModel"]
        self.config.encoder.architectures = [type(self.encoder).__name__]
        self.config.decoder.architectures = [type(self.decoder).__name__]

    def to(self, *args, device=None, dtype=None):
        """Move all weights to ``device`` and/or cast them to ``dtype`` (as torch's ``to`` takes
        them); tied weights stay one array.  Returns self."""
        self.device, cast = self._move_and_cast(args, device, dtype)
        tree = placement.place(self._tree_state(), cast, self.device)
        for half in (self.encoder, self.decoder):
            half.device = self.device
            half.kernels = kernels_for(self.device, half.kernels is not None)
        self.encoder.params, self.decoder.params = tree["encoder"], tree["decoder"]
        self.enc_to_dec_proj = tree.get("enc_to_dec_proj")
        return self

    # -- transformers' model surface --------------------------------------------------------
    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def get_output_embeddings(self):
        return self.decoder.get_output_embeddings()

    @property
    def base_model(self):
        return self

    def resize_token_embeddings(self, *args, **kwargs):
        raise NotImplementedError("resize the halves instead, as transformers requires: model.encoder."
                                  "resize_token_embeddings(...) / model.decoder.resize_token_embeddings(...)")

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      decoder_attention_mask=None, encoder_outputs=None, **kwargs):
        """One generation step's inputs, as transformers builds them: the decoder's new ids
        (``input_ids`` are the decoder ids so far), the cache and the encoder's outputs."""
        seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        return {"attention_mask": attention_mask, "decoder_attention_mask": decoder_attention_mask,
                "decoder_input_ids": input_ids[:, seen:], "encoder_outputs": encoder_outputs,
                "past_key_values": past_key_values, "use_cache": kwargs.get("use_cache", True)}

    def prepare_decoder_input_ids_from_labels(self, labels):
        return self._shift_labels(as_ids(labels, "labels", self.device, allow_ignore=True))

    # -- forward --------------------------------------------------------------------------------
    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        """Run the encoder; the result feeds ``encoder_outputs=`` of later calls."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            **kwargs)

    def project_encoder_states(self, states):
        """The encoder's states as the decoder's cross-attention reads them (model.project_states:
        through enc_to_dec_proj when the widths differ).  [batch, src, enc_hidden] -> [batch, src, dec_hidden]."""
        return project_states(self.enc_to_dec_proj, states)

    @records_activations
    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                 labels=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, record=None, **kwargs):
        """Run the encoder on the source and the decoder on the target; with ``labels``, also the loss.

        Args:
            input_ids: source token ids [batch, src] (or ``inputs_embeds`` [batch, src, enc_hidden]).
            attention_mask: [batch, src], 1 for real source tokens, 0 for padding; the decoder's
                cross-attention skips the padding too.
            decoder_input_ids: target ids [batch, tgt] the decoder reads (teacher forcing); left out
                when ``labels`` are given, they are the labels shifted right behind
                ``config.decoder_start_token_id`` (-100 read as ``pad_token_id``).
            decoder_attention_mask: [batch, tgt] for the target (default when shifted from labels:
                positions that are not padding).
            encoder_outputs: the encoder's output from an earlier call (``model.encoder(...)`` or a
                tuple whose first item is last_hidden_state): the encoder is then not run again.
            past_key_values: the EncoderDecoderCache a previous call returned; the decoder then
                reads only the new target tokens.
            decoder_inputs_embeds: [batch, tgt, dec_hidden] in place of decoder_input_ids.
            labels: target ids [batch, tgt] for the loss; -100 marks positions to ignore.
            use_cache: return (and fill) a cache; default ``config.decoder.use_cache``.  With a cache
                and relative position embeddings, several target tokens at once are measured as
                transformers measures them (see config.relative_distances).
            output_attentions / output_hidden_states: also return every layer's attention
                probabilities / hidden states.
            return_dict: False returns transformers' plain tuple instead of the output object.
            decoder_*: other keyword arguments starting with ``decoder_`` go to the decoder (the
                prefix removed), the rest to the encoder (e.g. ``token_type_ids`` for a BERT encoder).

        Returns:
            A ModelOutput (transformers' Seq2SeqLMOutput fields): ``loss`` (mean cross-entropy over
            the labels that are not -100, when labels are given), ``logits`` [batch, tgt, vocab],
            ``past_key_values``, ``decoder_hidden_states``, ``decoder_attentions``,
            ``cross_attentions``, ``encoder_last_hidden_state`` [batch, src, enc_hidden],
            ``encoder_hidden_states``, ``encoder_attentions`` (fields not asked for are absent).
            In training mode (``model.train()``) ``loss.backward()`` fills every parameter's ``.grad``.
        """
        encoder_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("decoder_")}
        decoder_kwargs = {k[len("decoder_"):]: v for k, v in kwargs.items() if k.startswith("decoder_")}
        if encoder_outputs is None:
            encoder_outputs = self.encode(input_ids, attention_mask, inputs_embeds,
                                          output_attentions=output_attentions,
                                          output_hidden_states=output_hidden_states,
                                          record=sub_record(record, "encoder"), **encoder_kwargs)
        elif not isinstance(encoder_outputs, dict):  # a tuple (last_hidden_state, ...) or an array; checked
            encoder_outputs = ModelOutput(last_hidden_state=encoder_states_of(encoder_outputs, self))
        if labels is not None:
            labels = as_ids(labels, "labels", self.device, self.config.decoder.vocab_size, allow_ignore=True)
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self._shift_labels(labels)
                if decoder_attention_mask is None:
                    decoder_attention_mask = decoder_input_ids != self.config.pad_token_id
        states, inputs, cache = self._decoder_inputs(
            encoder_outputs["last_hidden_state"], attention_mask, decoder_kwargs, input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask, inputs_embeds=decoder_inputs_embeds,
            past_key_values=past_key_values, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states)
        if labels is not None:
            expected = (inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]).shape[:2]
            if labels.shape != expected:
                raise ValueError(f"labels has shape {tuple(labels.shape)}: expected {tuple(expected)}")
        out = seq2seq(self._decoder_params(), self.config, states, labels=labels, record=record, **inputs)
        return self._seq2seq_output(out, cache, encoder_outputs, return_dict)

    def _decoder_params(self) -> dict:
        tree = {"decoder": self.decoder.params}
        if self.enc_to_dec_proj is not None:
            tree["enc_to_dec_proj"] = self.enc_to_dec_proj
        return tree

    def _decoder_inputs(self, states, encoder_mask, decoder_kwargs, **decoder_inputs):
        """The decoder's inputs checked as the decoder checks them (inputs.body_inputs), with the
        encoder states it will cross-attend to.  -> (the encoder states model.seq2seq takes,
        bert_stack's keyword arguments for the decoder, the cache).  Through a projection the
        states are checked by their projected shape (a stand-in that costs no memory)."""
        cross = states
        if self.enc_to_dec_proj is not None:
            xp = self.device.xp
            width = self.enc_to_dec_proj["weight"].shape[0]
            cross = xp.broadcast_to(xp.zeros((), dtype=self.dtype), (*states.shape[:2], width))  # [batch, src, dec]
        named = {k: decoder_kwargs.pop(k) for k in ("token_type_ids", "position_ids", "head_mask")
                 if k in decoder_kwargs}
        inputs, cache = body_inputs(self.decoder, encoder_hidden_states=cross, encoder_attention_mask=encoder_mask,
                                    extra=decoder_kwargs, **named, **decoder_inputs)
        checked = inputs.pop("encoder_hidden_states")
        return (states if self.enc_to_dec_proj is not None else checked), inputs, cache

    def _seq2seq_output(self, out, cache, encoder_outputs, return_dict):
        """model.seq2seq's dict as transformers' Seq2SeqLMOutput (or its tuple)."""
        decoder_out = ModelOutput(logits=out["logits"], past_key_values=cache, hidden_states=out.get("hidden_states"),
                                  attentions=out.get("attentions"), cross_attentions=out.get("cross_attentions"))
        loss = out.get("loss")
        if self._return_tuple(return_dict):  # transformers: (loss,) + decoder outputs + encoder outputs
            head = (loss,) if loss is not None else ()
            return head + decoder_out.to_tuple() + ModelOutput(**encoder_outputs).to_tuple()
        return ModelOutput(loss=loss, logits=out["logits"], past_key_values=cache,
                           decoder_hidden_states=out.get("hidden_states"),
                           decoder_attentions=out.get("attentions"),
                           cross_attentions=out.get("cross_attentions"),
                           encoder_last_hidden_state=encoder_outputs["last_hidden_state"],
                           encoder_hidden_states=encoder_outputs.get("hidden_states"),
                           encoder_attentions=encoder_outputs.get("attentions"))

    def _shift_labels(self, labels):
        for name in ("decoder_start_token_id", "pad_token_id"):
            if getattr(self.config, name) is None:
                raise ValueError(f"labels were given without decoder_input_ids, so they must be shifted right, "
                                 f"which needs config.{name} (it is None): set model.config.{name}")
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
