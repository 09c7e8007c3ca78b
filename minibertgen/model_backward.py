"""The backward pass of model.py: walk the activation record in reverse (llm.c style).

Read bottom to top, it is model.py upside down:

    loss -> LM head -> layer N .. 1 (feed-forward -> [cross-attention] -> self-attention)
         -> embeddings                    (and, for a seq2seq model, the encoder after it)

:func:`causal_lm_backward` and :func:`seq2seq_backward` are the whole backward of
model.causal_lm and model.seq2seq (with the encoder that ran before it).

Each ``*_backward`` takes the parameters, the record its forward filled
(activation_record.py) and the gradient of the loss with respect to the forward's
output, and returns the gradient with respect to its input together with a tree of
weight gradients shaped like its parameters.  Tied weights (one array under two names)
simply get two trees' worth of gradient; training.py adds them per array.  The backward
consumes the record: each layer's entry is dropped once its gradients are computed.
"""
from __future__ import annotations

from .attention_backward import cross_attention_backward, self_attention_backward
from .backend import array_module
from .ops_backward import (activation_backward, cross_entropy_backward, dropout_backward, embedding_backward,
                           layer_norm_backward, linear_backward)

__all__ = ["embed_backward", "add_and_norm_backward", "feed_forward_backward", "transformer_layer_backward",
           "bert_stack_backward", "lm_head_backward", "causal_lm_loss_backward", "seq2seq_loss_backward",
           "projection_backward", "causal_lm_backward", "seq2seq_backward"]


def _linear_grads(dweight, dbias):
    grads = {"weight": dweight}
    if dbias is not None:
        grads["bias"] = dbias
    return grads


def _lookup_backward(dsum, ids, table, padding_idx=None):
    """Gradient of one embedding lookup added into the sum: ids may be [1, seq] (broadcast)."""
    xp = array_module(dsum)
    ids = xp.broadcast_to(ids, dsum.shape[:2])  # [1, seq] -> [batch, seq]
    return {"weight": embedding_backward(dsum, ids, table, padding_idx)}


def embed_backward(p, config, record, dout):
    """Gradients of model.embed: dropout, LayerNorm, then each lookup of the sum
    (word + token type + position) receives the same dL/dsum.

    dout [batch, seq, hidden] -> (grads shaped like ``p``, dinputs_embeds or None).
    The padding row of the word table (and of RoBERTa's position table) gets nothing.
    """
    dnormed = dropout_backward(dout, record.get("dropout_mask"))
    dsum, dln_weight, dln_bias = layer_norm_backward(
        dnormed, record["summed"], p["LayerNorm"]["weight"], config.layer_norm_eps)  # [batch, seq, hidden]
    grads = {"LayerNorm": {"weight": dln_weight, "bias": dln_bias}}
    if record.get("position_ids") is not None:
        padding = config.pad_token_id if config.model_type == "roberta" else None
        grads["position_embeddings"] = _lookup_backward(dsum, record["position_ids"],
                                                        p["position_embeddings"]["weight"], padding)
    if record.get("token_type_ids") is not None:
        grads["token_type_embeddings"] = _lookup_backward(dsum, record["token_type_ids"],
                                                          p["token_type_embeddings"]["weight"])
    if record.get("input_ids") is None:
        return grads, dsum  # inputs_embeds were given: their gradient is dL/dsum
    grads["word_embeddings"] = _lookup_backward(dsum, record["input_ids"], p["word_embeddings"]["weight"],
                                                config.pad_token_id)
    return grads, None


def add_and_norm_backward(p, record, dout, eps):
    """Gradients of model.add_and_norm: y = LayerNorm(dropout(dense(x)) + residual).

    dout [batch, seq, hidden] -> (dx [batch, seq, in], dresidual [batch, seq, hidden], grads).
    """
    dsum, dln_weight, dln_bias = layer_norm_backward(
        dout, record["projected"], p["LayerNorm"]["weight"], eps, residual=record["residual"])
    dprojected = dropout_backward(dsum, record.get("dropout_mask"))
    dx, dweight, dbias = linear_backward(dprojected, record["input"], p["dense"]["weight"])
    grads = {"dense": _linear_grads(dweight, dbias), "LayerNorm": {"weight": dln_weight, "bias": dln_bias}}
    return dx, dsum, grads


def feed_forward_backward(p, record, dout, config):
    """Gradients of model.feed_forward: y = add_and_norm(act(dense(h)), residual h).

    dout [batch, seq, hidden] -> (dh [batch, seq, hidden], grads {"intermediate", "output"}).
    """
    dactivated, dresidual, output_grads = add_and_norm_backward(p["output"], record["output"], dout,
                                                                config.layer_norm_eps)
    inner = record["intermediate"]
    dinner = activation_backward(config.hidden_act, dactivated, inner["inner"])  # [batch, seq, intermediate]
    dh, dweight, dbias = linear_backward(dinner, inner["input"], p["intermediate"]["dense"]["weight"])
    grads = {"intermediate": {"dense": _linear_grads(dweight, dbias)}, "output": output_grads}
    return dh + dresidual, grads


def transformer_layer_backward(p, record, dout, config):
    """Gradients of model.transformer_layer, its three blocks in reverse.

    dout [batch, seq, hidden] -> (dhidden [batch, seq, hidden], dencoder_states or None, grads).
    """
    heads, eps = config.num_attention_heads, config.layer_norm_eps
    dh, grads = feed_forward_backward(p, record, dout, config)
    dencoder = None
    if "crossattention" in record:
        cross = record["crossattention"]
        dcontext, dresidual, output_grads = add_and_norm_backward(p["crossattention"]["output"], cross["output"],
                                                                  dh, eps)
        dh_query, dencoder, self_grads = cross_attention_backward(p["crossattention"]["self"], cross["self"],
                                                                  dcontext, heads)
        dh = dh_query + dresidual
        grads["crossattention"] = {"self": self_grads, "output": output_grads}
    attention = record["attention"]
    dcontext, dresidual, output_grads = add_and_norm_backward(p["attention"]["output"], attention["output"], dh, eps)
    dh_qkv, self_grads = self_attention_backward(p["attention"]["self"], attention["self"], dcontext, heads)
    grads["attention"] = {"self": self_grads, "output": output_grads}
    return dh_qkv + dresidual, dencoder, grads


def bert_stack_backward(params, config, record, dlast):
    """Gradients of model.bert_stack: layers from the last to the first, then the embeddings.

    dlast [batch, seq, hidden] -> (grads shaped like ``params``,
    dencoder_states: the sum over layers of the cross-attention's share, or None,
    dinputs_embeds or None).
    """
    dh, dencoder = dlast, None
    layer_grads = [None] * len(params["encoder"]["layer"])
    for i in reversed(range(len(layer_grads))):
        dh, dencoder_i, layer_grads[i] = transformer_layer_backward(
            params["encoder"]["layer"][i], record["layer"][i], dh, config)
        record["layer"][i] = None  # used up: its activations go while the gradients grow (peak memory)
        if dencoder_i is not None:
            dencoder = dencoder_i if dencoder is None else dencoder + dencoder_i
    embedding_grads, dinputs_embeds = embed_backward(params["embeddings"], config, record["embeddings"], dh)
    return {"embeddings": embedding_grads, "encoder": {"layer": layer_grads}}, dencoder, dinputs_embeds


def lm_head_backward(p, config, record, dlogits):
    """Gradients of model.lm_head: logits = decoder(transform(h)) + bias.

    dlogits [batch, seq, vocab] -> (dh [batch, seq, hidden], grads shaped like ``p``).
    ``lm_head.bias`` and ``lm_head.decoder.bias`` are one array: its gradient is given once.
    """
    dh, dweight, dbias = linear_backward(dlogits, record["decoder_input"], p["decoder"]["weight"],
                                         has_bias=p.get("bias") is not None)
    grads = {"decoder": {"weight": dweight}}
    if dbias is not None:
        grads["bias"] = dbias
    if "transform" in p:
        t, rec = p["transform"], record["transform"]
        act = "gelu" if config.model_type == "roberta" else config.hidden_act
        dactivated, dln_weight, dln_bias = layer_norm_backward(dh, rec["activated"], t["LayerNorm"]["weight"],
                                                               config.layer_norm_eps)
        dinner = activation_backward(act, dactivated, rec["inner"])
        dh, dweight_t, dbias_t = linear_backward(dinner, record["input"], t["dense"]["weight"])
        grads["transform"] = {"dense": _linear_grads(dweight_t, dbias_t),
                              "LayerNorm": {"weight": dln_weight, "bias": dln_bias}}
    return dh, grads


def causal_lm_loss_backward(logits, labels, ignore_index=-100, dloss=1.0):
    """Gradient of model.causal_lm_loss: position t predicts label t + 1, the last position
    predicts nothing.  logits [batch, seq, vocab], labels [batch, seq] -> dlogits [batch, seq, vocab].
    ``dloss``: the gradient arriving at the loss (1 for ``loss.backward()``)."""
    xp = array_module(logits)
    vocab = logits.shape[-1]
    shifted = cross_entropy_backward(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index,
                                     dloss)
    dlogits = xp.zeros_like(logits)
    dlogits[:, :-1] = shifted.reshape(logits.shape[0], -1, vocab)  # [batch, seq - 1, vocab]
    return dlogits


def seq2seq_loss_backward(logits, labels, ignore_index=-100, dloss=1.0):
    """Gradient of model.seq2seq_loss (labels not shifted).  -> dlogits [batch, tgt, vocab]."""
    vocab = logits.shape[-1]
    dlogits = cross_entropy_backward(logits.reshape(-1, vocab), labels.reshape(-1), ignore_index, dloss)
    return dlogits.reshape(logits.shape)  # [batch * tgt, vocab] -> [batch, tgt, vocab]


def projection_backward(p, encoder_states, dprojected):
    """Gradient of EncoderDecoderModel's enc_to_dec_proj (a linear layer).
    dprojected [batch, src, dec_hidden] -> (dencoder_states [batch, src, enc_hidden], grads)."""
    dx, dweight, dbias = linear_backward(dprojected, encoder_states, p["weight"])
    return dx, _linear_grads(dweight, dbias)


def causal_lm_backward(params, config, record, dloss=1.0):
    """Gradients of model.causal_lm's loss: loss -> LM head -> body.

    ``record``: the forward's (it kept the logits and labels); ``dloss``: the gradient
    arriving at the loss (1 for ``loss.backward()``).  -> grads {"lm_head", "bert"}.
    """
    dlogits = causal_lm_loss_backward(record["logits"], record["labels"], dloss=dloss)
    dh, head_grads = lm_head_backward(params["lm_head"], config, record["lm_head"], dlogits)
    body_grads, _, _ = bert_stack_backward(params["bert"], config, record["bert"], dh)
    return {"lm_head": head_grads, "bert": body_grads}


def seq2seq_backward(params, config, record, dloss=1.0):
    """Gradients of model.seq2seq's loss and of the encoder that ran before it:
    loss -> decoder (head, layers, embeddings) -> encoder states -> [projection] -> encoder.

    ``params``: {"encoder", "decoder", "enc_to_dec_proj" (or absent)}; ``config`` the
    EncoderDecoderConfig.  -> grads with the keys of ``params`` that got a gradient, in the
    order computed (decoder, projection, encoder; the encoder is absent when its states
    were given, not computed).  The decoder's record is dropped before the encoder's backward.
    """
    decoder = config.decoder
    dlogits = seq2seq_loss_backward(record["logits"], record["labels"], dloss=dloss)
    rec = record.pop("decoder")  # consumed here: its activations go before the encoder's backward
    dh, head_grads = lm_head_backward(params["decoder"]["lm_head"], decoder, rec["lm_head"], dlogits)
    body_grads, dstates, _ = bert_stack_backward(params["decoder"]["bert"], decoder, rec["bert"], dh)
    grads = {"decoder": {"lm_head": head_grads, "bert": body_grads}}
    if params.get("enc_to_dec_proj") is not None:
        dstates, grads["enc_to_dec_proj"] = projection_backward(params["enc_to_dec_proj"],
                                                                record["projection_input"], dstates)
    if "encoder" in record:  # absent when encoder_outputs were passed in: the encoder did not run
        grads["encoder"], _, _ = bert_stack_backward(params["encoder"], config.encoder, record["encoder"], dstates)
    return grads
