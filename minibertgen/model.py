"""The BertGeneration forward pass as plain functions over a parameter tree.

``params`` is a nested dict whose keys follow the checkpoint's names, e.g.
``params["encoder"]["layer"][3]["attention"]["self"]["query"]["weight"]`` is the tensor
stored as ``encoder.layer.3.attention.self.query.weight``.  Read top to bottom:

    embed -> layer x N (self-attention -> [cross-attention] -> feed-forward) -> [LM head]

Every layer is post-LayerNorm BERT: ``x = LayerNorm(x + sublayer(x))``.  On top, the two
models that have a loss: :func:`causal_lm` (a decoder alone: next-token loss) and
:func:`seq2seq` (encoder states -> [projection] -> decoder; labels not shifted again).
Their backward passes are in model_backward.py.
"""
from __future__ import annotations

from .attention import causal_mask, cross_attention, padding_mask, self_attention
from .backend import array_module
from .activation_record import apply_dropout, half_record, layer_records, sub_record
from .ops import activation, add_and_norm as dense_add_norm, cross_entropy, embedding, layer_norm, linear

__all__ = ["embed", "default_positions", "positions_from_mask", "add_and_norm", "transformer_layer", "bert_stack", "lm_head", "pooler",
           "decoder_step", "causal_lm", "seq2seq", "project_states", "causal_lm_loss", "seq2seq_loss",
           "shift_tokens_right"]


def embed(p, config, input_ids=None, inputs_embeds=None, position_ids=None, past_length=0, token_type_ids=None,
          record=None):
    """Word embeddings + token-type embeddings (BERT, RoBERTa) + position embeddings, then LayerNorm.

    input_ids [batch, seq] (or inputs_embeds [batch, seq, hidden]) -> [batch, seq, hidden].
    The three families differ only here:
    * bert-generation: no token types; position embeddings added even when attention
      uses relative positions;
    * bert / roberta: token-type embeddings (type 0 when ``token_type_ids`` is None);
      position embeddings only with ``position_embedding_type="absolute"``;
    * roberta: positions count from ``pad_token_id + 1`` (see :func:`default_positions`).
    """
    if inputs_embeds is None:
        inputs_embeds = embedding(p["word_embeddings"]["weight"], input_ids)  # [batch, seq, hidden]
    hidden = inputs_embeds
    if config.model_type != "bert-generation":
        if token_type_ids is None:
            token_type_ids = array_module(hidden).zeros(hidden.shape[:2], dtype="int64")  # [batch, seq]
        hidden = hidden + embedding(p["token_type_embeddings"]["weight"], token_type_ids)
    if config.model_type == "bert-generation" or config.position_embedding_type == "absolute":
        if position_ids is None:
            position_ids = default_positions(config, input_ids, hidden.shape[1], past_length, hidden)
        hidden = hidden + embedding(p["position_embeddings"]["weight"], position_ids)
    if record is not None:  # training: what embed_backward needs (model_backward.py)
        record.update(input_ids=input_ids, summed=hidden,
                      token_type_ids=None if config.model_type == "bert-generation" else token_type_ids,
                      position_ids=position_ids if "position_embeddings" in p else None)
    hidden = layer_norm(hidden, p["LayerNorm"]["weight"], p["LayerNorm"]["bias"], config.layer_norm_eps)
    return apply_dropout(record, hidden, "hidden")  # train mode only


def default_positions(config, input_ids, seq, past_length, like):
    """Position ids when none are given: [1, seq] or [batch, seq].

    BERT and BertGeneration count past_length, past_length + 1, ...  RoBERTa (fairseq)
    counts from pad_token_id + 1 and gives padding tokens the pad id itself; from
    inputs_embeds (no ids to see padding in) it counts pad + 1 .. pad + seq, ignoring
    past_length, as transformers does.
    """
    xp = array_module(like)
    if config.model_type != "roberta":
        return xp.arange(past_length, past_length + seq)[None, :]  # [1, seq]
    pad = config.pad_token_id
    if input_ids is None:
        return xp.arange(pad + 1, pad + 1 + seq)[None, :]  # [1, seq]
    real = (input_ids != pad).astype("int64")  # [batch, seq]
    return (xp.cumsum(real, axis=1) + past_length) * real + pad  # [batch, seq]


def positions_from_mask(mask):
    """Position ids of a decoder used alone with (left) padding, as transformers derives them
    from the attention mask: real tokens count 0, 1, 2, ...; padding gets 1.
    mask [batch, seq] (1 = real) -> [batch, seq] int64."""
    mask = mask.astype("int64")
    positions = mask.cumsum(axis=-1) - 1  # [batch, seq]
    positions[mask == 0] = 1
    return positions


def add_and_norm(p, sublayer_out, residual, eps, record=None):
    """The BERT "output" block: dense projection, residual connection, LayerNorm (the op
    ops.add_and_norm; a training forward runs its steps apart, keeping them and adding dropout)."""
    dense, norm = p["dense"], p["LayerNorm"]
    if record is None:
        return dense_add_norm(sublayer_out, dense["weight"], dense["bias"], norm["weight"], norm["bias"], eps,
                              residual)
    projected = linear(sublayer_out, p["dense"]["weight"], p["dense"]["bias"])
    projected = apply_dropout(record, projected, "hidden")  # train mode only
    record.update(input=sublayer_out, projected=projected, residual=residual)
    return layer_norm(projected, p["LayerNorm"]["weight"], p["LayerNorm"]["bias"], eps, residual=residual)


def feed_forward(p, hidden, config, record=None):
    """[batch, seq, hidden] -> [batch, seq, intermediate] -> act -> [batch, seq, hidden] (+ add & norm)."""
    inner = linear(hidden, p["intermediate"]["dense"]["weight"], p["intermediate"]["dense"]["bias"])
    if record is not None:
        record["intermediate"] = {"input": hidden, "inner": inner}
    inner = activation(config.hidden_act)(inner)
    return add_and_norm(p["output"], inner, hidden, config.layer_norm_eps, record=sub_record(record, "output"))


def transformer_layer(p, hidden, config, self_mask, *, encoder_states=None, encoder_mask=None,
                      cache=None, layer=0, past_length=0, head_mask=None, record=None):
    """One layer: self-attention, cross-attention (decoder with encoder states), feed-forward.

    hidden [batch, seq, hidden] -> (hidden [batch, seq, hidden], self_probs, cross_probs).
    """
    heads = config.num_attention_heads
    attention = sub_record(record, "attention")
    context, self_probs = self_attention(
        p["attention"]["self"], hidden, self_mask, heads, cache=cache, layer=layer, past_length=past_length,
        head_mask=head_mask, position_embedding_type=config.position_embedding_type,
        # transformers 4.57 quirk, kept for parity: with a cache, relative distances count from the last key
        distances_from_last_key=cache is not None and config.relative_distances == "cached_last_key",
        record=sub_record(attention, "self"),
    )
    hidden = add_and_norm(p["attention"]["output"], context, hidden, config.layer_norm_eps,
                           record=sub_record(attention, "output"))
    cross_probs = None
    if encoder_states is not None:
        # Cross-attention always uses absolute positions (transformers hard-codes this).
        cross = sub_record(record, "crossattention")
        context, cross_probs = cross_attention(
            p["crossattention"]["self"], hidden, encoder_states, encoder_mask, heads,
            cache=cache, layer=layer, head_mask=head_mask, record=sub_record(cross, "self"),
        )
        hidden = add_and_norm(p["crossattention"]["output"], context, hidden, config.layer_norm_eps,
                               record=sub_record(cross, "output"))
    return feed_forward(p, hidden, config, record=record), self_probs, cross_probs


def bert_stack(params, config, *, input_ids=None, inputs_embeds=None, attention_mask=None,
               position_ids=None, head_mask=None, encoder_hidden_states=None,
               encoder_attention_mask=None, cache=None, past_length=0, output_attentions=False,
               output_hidden_states=False, token_type_ids=None, record=None):
    """Embeddings and all layers of a BertGenerationEncoder (also the body of the decoder).

    Returns a dict with last_hidden_state [batch, seq, hidden] and, when asked,
    hidden_states (N + 1 arrays), attentions and cross_attentions (N arrays each).
    ``attention_mask`` [batch, past + seq] marks real tokens with 1; ``head_mask``
    is [layers, heads] (1 keeps a head).  With a ``cache`` (a decoder), the new tokens sit
    at positions ``past_length`` .. ``past_length + seq - 1``, after what it holds.
    """
    past = past_length
    hidden = embed(params["embeddings"], config, input_ids, inputs_embeds, position_ids, past, token_type_ids,
                   record=sub_record(record, "embeddings"))
    xp = array_module(hidden)
    batch, seq = hidden.shape[:2]
    dtype = hidden.dtype
    if attention_mask is None and config.is_decoder:
        attention_mask = xp.ones((batch, past + seq), dtype=dtype)
    if attention_mask is None:
        self_mask = None  # an encoder given no attention_mask: no padding, nothing to mask
    elif config.is_decoder and attention_mask.ndim == 2:
        self_mask = causal_mask(attention_mask, seq, dtype)  # [batch, 1, seq, past + seq]
    else:
        self_mask = padding_mask(attention_mask, dtype)  # [batch, 1, 1, seq]
    encoder_mask = None
    if encoder_hidden_states is not None:
        if encoder_attention_mask is None:
            encoder_attention_mask = xp.ones(encoder_hidden_states.shape[:2], dtype=dtype)
        encoder_mask = padding_mask(encoder_attention_mask, dtype)  # [batch, 1, 1, src]

    all_hidden, all_self, all_cross = [], [], []
    records = layer_records(record, len(params["encoder"]["layer"]))  # [None, ...] when not training
    for i, layer_params in enumerate(params["encoder"]["layer"]):
        if output_hidden_states:
            all_hidden.append(hidden)
        layer_head_mask = None if head_mask is None else head_mask[i][:, None, None]  # [heads, 1, 1]
        hidden, self_probs, cross_probs = transformer_layer(
            layer_params, hidden, config, self_mask, encoder_states=encoder_hidden_states,
            encoder_mask=encoder_mask, cache=cache, layer=i, past_length=past, head_mask=layer_head_mask,
            record=records[i],
        )
        all_self.append(self_probs)
        all_cross.append(cross_probs)
    out = {"last_hidden_state": hidden}
    if output_hidden_states:
        out["hidden_states"] = tuple(all_hidden) + (hidden,)
    if output_attentions:
        out["attentions"] = tuple(all_self)
        if config.add_cross_attention:
            out["cross_attentions"] = tuple(all_cross)
    return out


def lm_head(p, hidden, config, record=None):
    """Project hidden states onto the vocabulary: [batch, seq, hidden] -> [batch, seq, vocab].

    BERT and RoBERTa heads first transform: dense -> activation -> LayerNorm (BERT's
    activation is config.hidden_act, RoBERTa's always the erf GELU); BertGeneration's
    head is the projection alone.
    """
    if record is not None:
        record["input"] = hidden
    if "transform" in p:
        t = p["transform"]
        act = "gelu" if config.model_type == "roberta" else config.hidden_act
        inner = linear(hidden, t["dense"]["weight"], t["dense"]["bias"])  # [batch, seq, hidden]
        activated = activation(act)(inner)
        if record is not None:
            record["transform"] = {"inner": inner, "activated": activated}
        hidden = layer_norm(activated, t["LayerNorm"]["weight"], t["LayerNorm"]["bias"], config.layer_norm_eps)
    if record is not None:
        record["decoder_input"] = hidden
    return linear(hidden, p["decoder"]["weight"], p["bias"])  # [batch, seq, vocab]


def pooler(p, hidden):
    """BertModel's pooler_output: tanh(dense(first token)).  [batch, seq, hidden] -> [batch, hidden]."""
    return activation("tanh")(linear(hidden[:, 0], p["dense"]["weight"], p["dense"]["bias"]))


def decoder_step(params, config, ids, cache, position, *, attention_mask, position_ids=None,
                 encoder_states=None, encoder_mask=None, output_attentions=False, output_hidden_states=False,
                 token_type_ids=None):
    """One decoding step of a decoder with an LM head: the tokens ``ids`` [batch, new] that the
    ``cache`` has not seen, at positions ``position`` .. ``position + new - 1``.

    Returns bert_stack's dict plus "logits" [batch, new, vocab].  generate() calls this for
    every step; on a GPU, fast/cuda_graph.py captures this same function and replays it.
    """
    return causal_lm(params, config, input_ids=ids, attention_mask=attention_mask, position_ids=position_ids,
                     encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask, cache=cache,
                     past_length=position, token_type_ids=token_type_ids, output_attentions=output_attentions,
                     output_hidden_states=output_hidden_states)


def causal_lm(params, config, *, labels=None, record=None, **inputs):
    """A decoder with its LM head: bert_stack -> lm_head -> [next-token loss].

    ``inputs``: bert_stack's keyword arguments.  Returns bert_stack's dict plus "logits"
    [batch, seq, vocab] and, given labels [batch, seq], "loss" (:func:`causal_lm_loss`).
    ``record`` keeps the logits and labels for model_backward.causal_lm_backward.
    """
    out = bert_stack(params["bert"], config, record=sub_record(record, "bert"), **inputs)
    logits = lm_head(params["lm_head"], out["last_hidden_state"], config,
                     record=sub_record(record, "lm_head"))  # [batch, seq, vocab]
    out["logits"] = logits
    if labels is not None:
        out["loss"] = causal_lm_loss(logits, labels)
    if record is not None:
        record.update(logits=logits, labels=labels)
    return out


def project_states(p, states, record=None):
    """The encoder's states as the decoder's cross-attention reads them: through
    EncoderDecoderModel's enc_to_dec_proj when there is one (the widths differ).
    [batch, src, enc_hidden] -> [batch, src, dec_hidden]."""
    if record is not None:
        record["projection_input"] = states
    if p is None:
        return states
    return linear(states, p["weight"], p["bias"])


def seq2seq(params, config, encoder_states, *, labels=None, record=None, **decoder_inputs):
    """EncoderDecoderModel above its encoder: encoder states -> [projection] -> decoder
    (cross-attending to them) -> LM head -> [loss, labels not shifted again].

    ``params``: {"decoder": ..., "enc_to_dec_proj": ... (or absent)}; ``config`` the
    EncoderDecoderConfig; encoder_states [batch, src, enc_hidden]; ``decoder_inputs``:
    bert_stack's keyword arguments for the decoder (decoder inputs are the labels shifted
    right: :func:`shift_tokens_right`).  Returns the decoder's dict (logits [batch, tgt,
    vocab]) plus "loss" given labels [batch, tgt].  ``record`` (training) gets the
    decoder's record under "decoder", with that half's dropout.
    """
    states = project_states(params.get("enc_to_dec_proj"), encoder_states, record)  # [batch, src, dec_hidden]
    out = causal_lm(params["decoder"], config.decoder, encoder_hidden_states=states,
                    record=half_record(record, "decoder", config.decoder), **decoder_inputs)
    if labels is not None:
        out["loss"] = seq2seq_loss(out["logits"], labels)
    if record is not None:
        record.update(logits=out["logits"], labels=labels)
    return out


def causal_lm_loss(logits, labels, ignore_index=-100):
    """Next-token loss of a decoder used alone: position t predicts label t + 1.

    logits [batch, seq, vocab], labels [batch, seq]; -100 labels are skipped.
    """
    shifted_logits = logits[:, :-1]  # [batch, seq - 1, vocab]
    shifted_labels = labels[:, 1:]  # [batch, seq - 1]
    vocab = logits.shape[-1]
    return cross_entropy(shifted_logits.reshape(-1, vocab), shifted_labels.reshape(-1), ignore_index)


def seq2seq_loss(logits, labels, ignore_index=-100):
    """EncoderDecoderModel's loss: labels are *not* shifted again (decoder inputs already were)."""
    vocab = logits.shape[-1]
    return cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1), ignore_index)


def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """Decoder inputs for teacher forcing: [start, y0, y1, ...], with -100 replaced by pad.

    labels [batch, seq] -> [batch, seq].
    """
    xp = array_module(labels)
    shifted = xp.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return xp.where(shifted == -100, pad_token_id, shifted)
