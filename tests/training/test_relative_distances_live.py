"""Relative positions over several tokens with a cache (issue 33): transformers 4.57 measures
every query's distance from the last key whenever its layers hold a cache, which a decoder
gets by default -- also inside EncoderDecoderModel.forward with labels, i.e. in training.
We compute the same by default (config.relative_distances = "cached_last_key") and keep each
query's own distances as an explicit option ("per_query").

Loud weights (DESIGN.md): unit-scale word/position/distance embeddings, weights ~
1/sqrt(fan_in), LayerNorm gains 1 +- 0.5, biases ~0.3, so the distance embeddings move the
logits by whole units (per-query distances differ from transformers' by > 1 here).  Our
float32 is judged against transformers run in float64; torch's own float32 error is printed
beside it.
"""
import copy

import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb
from minibertgen.backend import to_numpy

torch = require_module("torch")
T = require_module("transformers")

pytestmark = [pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
              pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces"),
              pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")]

SMALL = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
             pad_token_id=0, bos_token_id=2, eos_token_id=1)
IDS = np.array([[2, 5, 7, 9, 3, 11, 0, 0], [4, 4, 6, 8, 1, 13, 17, 1]])  # row 0 padded
MASK = (IDS != 0).astype(np.int64)
LABELS = np.where(MASK == 1, IDS, -100)[:, :6].copy()
LABELS[0, 4:] = -100
POSITIONS = ["relative_key", "relative_key_query"]


def loud(model, seed=0):
    """Redraw every parameter so that each one matters (DESIGN.md, "Loud weights")."""
    draw = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # LayerNorm gains (RoBERTa's head: layer_norm)
                p.copy_(1 + (torch.rand(p.shape, generator=draw) - 0.5))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=draw))
            elif "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=draw))
            else:
                p.copy_(torch.randn(p.shape, generator=draw) / p.shape[1] ** 0.5)
    return model.eval()


def seq2seq(tmp_path, position):
    torch.manual_seed(0)
    enc = T.BertGenerationConfig(**SMALL, position_embedding_type=position)
    dec = T.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True, position_embedding_type=position)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2, pad_token_id=0)
    theirs = loud(T.EncoderDecoderModel(config=config))
    theirs.save_pretrained(tmp_path)
    return mb.EncoderDecoderModel.from_pretrained(tmp_path), theirs


def tensors(**arrays):
    return {k: torch.tensor(v) for k, v in arrays.items()}


def max_diff(ours, reference):
    return float(np.abs(to_numpy(ours).astype(np.float64) - reference.detach().double().numpy()).max())


@pytest.mark.parametrize("position", POSITIONS)
def test_seq2seq_training_loss_and_gradients_follow_transformers(tmp_path, position):
    ours, theirs = seq2seq(tmp_path, position)
    exact = copy.deepcopy(theirs).double()
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS)
    out = ours(**kwargs)
    out.loss.backward()
    reference, single = exact(**tensors(**kwargs)), theirs(**tensors(**kwargs))
    reference.loss.backward()
    single.loss.backward()
    # float32 against float64: torch's own float32 loss is off by ~1e-7 relative here
    assert abs(float(out.loss) - float(reference.loss)) <= 1e-5 * abs(float(reference.loss))
    assert max_diff(out.logits, reference.logits) <= 1e-4, max_diff(single.logits, reference.logits)
    grads = {name: p.grad for name, p in exact.named_parameters()}
    norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads.values() if g is not None)))
    assert len(list(ours.named_parameters())) == len(grads)
    for name, grad in grads.items():
        if grad is None:
            continue
        got = ours.get_parameter(name).grad
        assert got is not None, name
        np.testing.assert_allclose(to_numpy(got), grad.numpy(), rtol=1e-4, atol=1e-5 * norm, err_msg=name)
    assert np.any(to_numpy(ours.get_parameter("decoder.bert.encoder.layer.0.attention.self.distance_embedding.weight")
                           .grad))

    # The textbook formula is still there, as an explicit option, and differs by whole units.
    ours.config.decoder.relative_distances = "per_query"
    assert max_diff(ours(**kwargs).logits, reference.logits) > 0.1


@pytest.mark.parametrize("position", POSITIONS)
def test_seq2seq_without_cache_uses_each_querys_own_distances(tmp_path, position):
    """use_cache=False (and so no cache in the layers): both measure per query."""
    ours, theirs = seq2seq(tmp_path, position)
    kwargs = dict(input_ids=IDS, attention_mask=MASK, decoder_input_ids=IDS[:, :6])
    reference = copy.deepcopy(theirs).double()(**tensors(**kwargs), use_cache=False).logits
    assert max_diff(ours(**kwargs, use_cache=False).logits, reference) <= 1e-4
    ours.config.decoder.relative_distances = "per_query"  # the option changes nothing without a cache
    assert max_diff(ours(**kwargs, use_cache=False).logits, reference) <= 1e-4
    assert max_diff(ours(**kwargs).logits, reference) <= 1e-4  # with a cache: per query as asked
    ours.config.decoder.relative_distances = "cached_last_key"
    assert max_diff(ours(**kwargs).logits, reference) > 0.1


@pytest.mark.parametrize("family", ["bert-generation", "bert", "roberta"])
def test_decoder_alone_with_and_without_labels(tmp_path, family):
    """A causal LM alone holds a cache by default (quirk) but not when given labels (per query)."""
    config_class, model_class, ours_class = {
        "bert-generation": (T.BertGenerationConfig, T.BertGenerationDecoder, mb.BertGenerationDecoder),
        "bert": (T.BertConfig, T.BertLMHeadModel, mb.BertLMHeadModel),
        "roberta": (T.RobertaConfig, T.RobertaForCausalLM, mb.RobertaForCausalLM)}[family]
    torch.manual_seed(0)
    small = {**SMALL, "pad_token_id": 1} if family == "roberta" else SMALL
    theirs = loud(model_class(config_class(**small, is_decoder=True, position_embedding_type="relative_key")))
    theirs.save_pretrained(tmp_path)
    ours = ours_class.from_pretrained(tmp_path)
    exact = copy.deepcopy(theirs).double()
    ids = IDS[1:]  # no padding: RoBERTa's pad id differs
    plain = exact(input_ids=torch.tensor(ids)).logits
    with_labels = exact(input_ids=torch.tensor(ids), labels=torch.tensor(ids))
    assert float((plain - with_labels.logits).abs().max()) > 0.1  # transformers itself: two formulas
    assert max_diff(ours(input_ids=ids).logits, plain) <= 1e-4
    out = ours(input_ids=ids, labels=ids)
    assert max_diff(out.logits, with_labels.logits) <= 1e-4
    assert abs(float(out.loss) - float(with_labels.loss)) <= 1e-5 * float(with_labels.loss)


@pytest.mark.parametrize("position", POSITIONS)
def test_per_query_distances_through_cache_steps_match_a_full_forward(tmp_path, position):
    """relative_distances="per_query" with a cache fed token by token: each new query sits at
    its own position past + i, so every step's logits equal transformers' full forward without
    a cache (which measures per query).  Sees a cache offset lost from the query positions."""
    torch.manual_seed(0)
    config = T.BertGenerationConfig(**SMALL, is_decoder=True, position_embedding_type=position)
    theirs = loud(T.BertGenerationDecoder(config))
    theirs.save_pretrained(tmp_path)
    ours = mb.BertGenerationDecoder.from_pretrained(tmp_path)
    ours.config.relative_distances = "per_query"
    ids = IDS[1:]  # [1, 8], no padding
    reference = copy.deepcopy(theirs).double()(input_ids=torch.tensor(ids), use_cache=False).logits  # [1, 8, vocab]
    out = ours(input_ids=ids[:, :5], use_cache=True)
    assert max_diff(out.logits, reference[:, :5]) <= 1e-4
    for t in range(5, ids.shape[1]):
        out = ours(input_ids=ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
        assert max_diff(out.logits, reference[:, t:t + 1]) <= 1e-4, t


def test_generate_from_a_several_token_prompt_matches_transformers(tmp_path):
    """generate() fills the cache from the whole prompt at once, under the quirk: the cached
    keys of the later layers carry it, so every following token depends on it."""
    torch.manual_seed(0)
    config = T.BertGenerationConfig(**SMALL, is_decoder=True, position_embedding_type="relative_key_query")
    theirs = loud(T.BertGenerationDecoder(config))
    theirs.save_pretrained(tmp_path)
    ours = mb.BertGenerationDecoder.from_pretrained(tmp_path)
    prompt = IDS[1:, :5]
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0,
                  return_dict_in_generate=True, output_logits=True)
    expected = copy.deepcopy(theirs).double().generate(torch.tensor(prompt), **kwargs)
    got = ours.generate(prompt, **kwargs)
    np.testing.assert_array_equal(got.sequences, expected.sequences.numpy())
    for step, (mine, reference) in enumerate(zip(got.logits, expected.logits)):
        assert max_diff(mine, reference) <= 1e-4, step


def test_relative_distances_is_checked_and_saved_only_when_changed(tmp_path):
    config = mb.BertGenerationConfig(**SMALL, is_decoder=True, position_embedding_type="relative_key")
    assert config.relative_distances == "cached_last_key"
    assert "relative_distances" not in config.to_diff_dict()
    config.relative_distances = "per query"
    with pytest.raises(ValueError, match="relative_distances='per query'"):
        mb.BertGenerationDecoder(config)
    config.relative_distances = "per_query"
    config.save_pretrained(tmp_path)
    assert mb.BertGenerationConfig.from_pretrained(tmp_path).relative_distances == "per_query"
