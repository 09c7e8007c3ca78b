"""EncoderDecoderModel: a BertGenerationEncoder feeding a cross-attending BertGenerationDecoder.

    input_ids --encoder--> encoder states --(optional projection)--> decoder cross-attention
    decoder_input_ids --decoder (causal self-attention, cross-attention, LM head)--> logits
"""
from __future__ import annotations


import numpy as np

from .backend import parse_device, resolve_dtype
from .checkpoint.mapping import LoadReport, body_key, flatten, initialise, unflatten
from .config import EncoderDecoderConfig
from .inputs import as_ids
from .model import seq2seq_loss, shift_tokens_right
from .modeling import BertGenerationDecoder, BertGenerationEncoder, ModelShell, load_checkpoint, materialise
from .ops import linear
from .generation import GenerationMixin
from .outputs import ModelOutput

__all__ = ["EncoderDecoderModel"]

_PROJ = ("enc_to_dec_proj.weight", "enc_to_dec_proj.bias")


def _needs_projection(config) -> bool:
    """transformers adds a Linear when encoder and decoder widths differ (and no explicit width)."""
    return (config.encoder.hidden_size != config.decoder.hidden_size
            and getattr(config.decoder, "cross_attention_hidden_size", None) is None)


def _projection(config, state, report, rng) -> dict:
    shapes = {_PROJ[0]: (config.decoder.hidden_size, config.encoder.hidden_size),
              _PROJ[1]: (config.decoder.hidden_size,)}
    out = {}
    for name, shape in shapes.items():
        if name in state:
            if tuple(state[name].shape) != shape:
                raise ValueError(f"weight {name!r} has shape {tuple(state[name].shape)}, expected {shape}")
            out[name] = state[name]
        else:
            out[name] = initialise(name, shape, config.decoder, rng)
            report.missing.append(name)
    return out


def _split_state(state: dict, report: LoadReport):
    """{"encoder.x": a, "decoder.y": b} -> ({"x": a}, {"y": b}); other keys are reported."""
    encoder, decoder = {}, {}
    for name, array in state.items():
        if name.startswith("encoder."):
            encoder[name[len("encoder."):]] = array
        elif name.startswith("decoder."):
            decoder[name[len("decoder."):]] = array
        elif not name.startswith("enc_to_dec_proj."):
            report.unexpected.append(name)
    return encoder, decoder


def build_weights(state, config, report, source, rng) -> dict:
    """All weights of an EncoderDecoderModel as one flat dict (encoder./decoder./enc_to_dec_proj.)."""
    enc_state, dec_state = _split_state(state, report)
    if config.tie_encoder_decoder:
        # Tied weights are stored once; transformers keeps the decoder's copy, so an encoder
        # weight may live only under decoder.bert.* in the file.
        from_decoder = {body_key(k): v for k, v in dec_state.items()
                        if not k.startswith("lm_head.") and ".crossattention." not in k}
        enc_state = {**from_decoder, **enc_state}
    enc_flat = BertGenerationEncoder.weights_from_state(enc_state, config.encoder, report, source, rng)
    if config.tie_encoder_decoder:
        # The decoder reuses the encoder's weights wherever both have one (all but cross-attention).
        dec_state = {**dec_state, **{"bert." + name: array for name, array in enc_flat.items()}}
    dec_flat = BertGenerationDecoder.weights_from_state(dec_state, config.decoder, report, source, rng)
    flat = {f"encoder.{k}": v for k, v in enc_flat.items()}
    flat.update({f"decoder.{k}": v for k, v in dec_flat.items()})
    if _needs_projection(config):
        flat.update(_projection(config, state, report, rng))
    return flat


def tie_decoder_to_encoder(encoder, decoder) -> None:
    """tie_encoder_decoder: the decoder body reuses the encoder's arrays (all but cross-attention).

    One array then serves both, as transformers shares one Parameter; the LM head follows
    the (now shared) word embeddings when tie_word_embeddings is set.
    """
    encoder_flat = flatten(encoder.params)
    decoder_flat = flatten(decoder.params)
    for name, array in encoder_flat.items():
        target = "bert." + name
        if target in decoder_flat and decoder_flat[target].shape == array.shape:
            decoder_flat[target] = array
    if decoder.config.tie_word_embeddings:
        decoder_flat["lm_head.decoder.weight"] = decoder_flat["bert.embeddings.word_embeddings.weight"]
    decoder.params = unflatten(decoder_flat)


class EncoderDecoderModel(GenerationMixin, ModelShell):
    """Sequence-to-sequence model from a BertGeneration encoder and decoder."""

    config_class = EncoderDecoderConfig

    def __init__(self, config=None, encoder=None, decoder=None, *, device=None, dtype=None, seed=None):
        if config is None and (encoder is None or decoder is None):
            raise ValueError("EncoderDecoderModel needs a config, or both an encoder and a decoder")
        if config is None:
            config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        if not isinstance(config, EncoderDecoderConfig):
            raise TypeError(f"config: expected an EncoderDecoderConfig, got {type(config).__name__}")
        if encoder is None and decoder is None:  # random weights from the config, as transformers
            flat = build_weights({}, config, LoadReport(), "init", np.random.default_rng(seed))
            device = parse_device(device)
            tree = unflatten(materialise(flat, resolve_dtype(dtype), device))
            encoder = BertGenerationEncoder(config.encoder, tree["encoder"], device=device)
            decoder = BertGenerationDecoder(config.decoder, tree["decoder"], device=device)
            projection = tree.get("enc_to_dec_proj")
        else:
            projection = None
        if encoder is None or decoder is None:
            raise ValueError("pass both encoder and decoder, or neither")
        if "crossattention" not in decoder.params["bert"]["encoder"]["layer"][0]:
            raise ValueError("the decoder has no cross-attention layers: load it with "
                             "is_decoder=True, add_cross_attention=True")
        if encoder.device != decoder.device:
            raise ValueError(f"encoder is on {encoder.device} but decoder on {decoder.device}: put both on one device")
        self.config = config
        self.encoder, self.decoder = encoder, decoder
        encoder.config, decoder.config = config.encoder, config.decoder  # one config, shared (as transformers)
        if config.tie_encoder_decoder:
            tie_decoder_to_encoder(encoder, decoder)
        self.device = encoder.device
        if _needs_projection(config) and projection is None:
            flat = _projection(config, {}, LoadReport(), np.random.default_rng(seed))
            projection = unflatten(materialise(flat, encoder.dtype, self.device))["enc_to_dec_proj"]
        self.enc_to_dec_proj = projection

    @property
    def dtype(self):
        return self.encoder.dtype

    @property
    def params(self) -> dict:
        tree = {"encoder": self.encoder.params, "decoder": self.decoder.params}
        if self.enc_to_dec_proj is not None:
            tree["enc_to_dec_proj"] = self.enc_to_dec_proj
        return tree

    def state_dict(self) -> dict:
        flat = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        flat.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        if self.enc_to_dec_proj is not None:
            flat.update({"enc_to_dec_proj.weight": self.enc_to_dec_proj["weight"],
                         "enc_to_dec_proj.bias": self.enc_to_dec_proj["bias"]})
        return flat

    # -- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, config=None, dtype=None, device=None,
                        seed=None, quantization_config=None, **kwargs):
        """Load an EncoderDecoderModel checkpoint (config.json with encoder/decoder + weights)."""
        config, tree, device, directory = load_checkpoint(
            cls.__name__, pretrained_model_name_or_path, EncoderDecoderConfig, config, dtype, device, seed,
            quantization_config, kwargs, build_weights)
        model = cls(config, BertGenerationEncoder(config.encoder, tree["encoder"], device=device),
                    BertGenerationDecoder(config.decoder, tree["decoder"], device=device))
        model.enc_to_dec_proj = tree.get("enc_to_dec_proj")
        model.name_or_path = str(directory)  # where generation_config.json etc. may be found
        return model

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_pretrained_model_name_or_path,
                                        decoder_pretrained_model_name_or_path, **kwargs):
        """Warm-start: an encoder and a decoder each from its own checkpoint (e.g. BERT + BERT).

        ``encoder_*`` / ``decoder_*`` keyword arguments go to the matching from_pretrained;
        the decoder always gets is_decoder=True and add_cross_attention=True.  Both halves
        are BertGeneration models: a BERT checkpoint's token-type embeddings and pooler are
        not used (the BertGeneration architecture has none).
        """
        enc_kwargs = {k[len("encoder_"):]: v for k, v in kwargs.items() if k.startswith("encoder_")}
        dec_kwargs = {k[len("decoder_"):]: v for k, v in kwargs.items() if k.startswith("decoder_")}
        shared = {k: v for k, v in kwargs.items() if not k.startswith(("encoder_", "decoder_"))}
        shared_load = {k: shared.pop(k) for k in ("dtype", "device", "seed") if k in shared}
        encoder = BertGenerationEncoder.from_pretrained(encoder_pretrained_model_name_or_path,
                                                        **{**shared_load, **enc_kwargs})
        decoder = BertGenerationDecoder.from_pretrained(
            decoder_pretrained_model_name_or_path,
            **{**shared_load, "is_decoder": True, "add_cross_attention": True, **dec_kwargs})
        config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config, **shared)
        return cls(config, encoder, decoder)

    def _mark_architectures(self) -> None:
        self.config.architectures = ["EncoderDecoderModel"]
        self.config.encoder.architectures = ["BertGenerationEncoder"]
        self.config.decoder.architectures = ["BertGenerationDecoder"]

    def to(self, device):
        """Move all weights to ``device``; tied weights stay one array.  Returns self."""
        self.device = parse_device(device)
        tree = unflatten(materialise(self.state_dict(), None, self.device))
        self.encoder.device = self.decoder.device = self.device  # first: setting params arranges them for it
        self.encoder.params, self.decoder.params = tree["encoder"], tree["decoder"]
        self.enc_to_dec_proj = tree.get("enc_to_dec_proj")
        return self

    # -- forward --------------------------------------------------------------------------------
    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        """Run the encoder; the result feeds ``encoder_outputs=`` of later calls."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            **kwargs)

    def __call__(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                 labels=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                 return_dict=None, **kwargs):
        encoder_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("decoder_")}
        decoder_kwargs = {k[len("decoder_"):]: v for k, v in kwargs.items() if k.startswith("decoder_")}
        if encoder_outputs is None:
            encoder_outputs = self.encode(input_ids, attention_mask, inputs_embeds,
                                          output_attentions=output_attentions,
                                          output_hidden_states=output_hidden_states, **encoder_kwargs)
        elif not isinstance(encoder_outputs, dict):  # a tuple (last_hidden_state, ...) or an array
            first = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list)) else encoder_outputs
            encoder_outputs = ModelOutput(last_hidden_state=first)
        encoder_states = encoder_outputs["last_hidden_state"]  # [batch, src, enc_hidden]
        if self.enc_to_dec_proj is not None:
            encoder_states = linear(encoder_states, self.enc_to_dec_proj["weight"], self.enc_to_dec_proj["bias"])

        if labels is not None:
            labels = as_ids(labels, "labels", self.device, self.config.decoder.vocab_size, allow_ignore=True)
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self._shift_labels(labels)
                if decoder_attention_mask is None:
                    decoder_attention_mask = decoder_input_ids != self.config.pad_token_id
        decoder_out = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                                   encoder_hidden_states=encoder_states, encoder_attention_mask=attention_mask,
                                   inputs_embeds=decoder_inputs_embeds, past_key_values=past_key_values,
                                   use_cache=use_cache, output_attentions=output_attentions,
                                   output_hidden_states=output_hidden_states, **decoder_kwargs)
        logits = decoder_out["logits"]  # [batch, tgt, vocab]
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels has shape {tuple(labels.shape)}: expected {tuple(logits.shape[:2])}")
            loss = seq2seq_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, past_key_values=decoder_out.get("past_key_values"),
                           decoder_hidden_states=decoder_out.get("hidden_states"),
                           decoder_attentions=decoder_out.get("attentions"),
                           cross_attentions=decoder_out.get("cross_attentions"),
                           encoder_last_hidden_state=encoder_outputs["last_hidden_state"],
                           encoder_hidden_states=encoder_outputs.get("hidden_states"),
                           encoder_attentions=encoder_outputs.get("attentions"))

    def _shift_labels(self, labels):
        for name in ("decoder_start_token_id", "pad_token_id"):
            if getattr(self.config, name) is None:
                raise ValueError(f"labels were given without decoder_input_ids, so they must be shifted right, "
                                 f"which needs config.{name} (it is None): set model.config.{name}")
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
