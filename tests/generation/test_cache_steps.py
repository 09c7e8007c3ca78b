"""With the KV cache, every step's logits equal a full recomputation without it (<= 1e-5).

The random models carry loud weights (tests/loud_weights.py): biases, LayerNorm shifts and
distance embeddings move the logits by O(1), so a cache that misplaces a position or a
key shows in every step, not in one element of a hundred.
"""
import numpy as np
import pytest

from cases import model_inputs
from gen_helpers import load_model
from loud_weights import make_our_model_loud


@pytest.mark.parametrize("name", ["toy_bert2bert", "random_seq2seq", "random_seq2seq_relative"])
@pytest.mark.parametrize("beams", [1, 3])
def test_cached_steps_equal_recomputation_seq2seq(name, beams):
    ids, mask = model_inputs({"model": name, "inputs": "batch"})
    model = load_model(name)
    runs = [model.generate(ids, attention_mask=mask, num_beams=beams, max_new_tokens=8, use_cache=cache,
                           return_dict_in_generate=True, output_logits=True) for cache in (True, False)]
    np.testing.assert_array_equal(runs[0].sequences, runs[1].sequences)
    steps = runs[0].sequences.shape[1] - 1  # every token after the decoder start was one step
    assert 1 <= steps <= 8 and len(runs[0].logits) == len(runs[1].logits) == steps
    for cached, full in zip(runs[0].logits, runs[1].logits):
        # The random fixtures' weights are loud, so their logits reach |21| and are sums of
        # larger terms; float32 rounding of a different summation order then gives up to
        # ~6e-6 absolute (measured), 3e-7 of the row's largest logit.  For them the bound is 1e-6 of
        # that scale; the trained toy model (ordinary weights) meets 1e-5 absolute.
        bound = 1e-5 if name == "toy_bert2bert" else max(1e-5, 1e-6 * float(np.abs(full).max()))
        assert float(np.abs(cached - full).max()) <= bound


def test_cached_steps_equal_recomputation_decoder_relative():
    """A decoder alone with relative_key positions, stepping one token at a time."""
    from minibertgen import BertGenerationConfig, BertGenerationDecoder

    config = BertGenerationConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=40, max_position_embeddings=40, is_decoder=True,
                                  position_embedding_type="relative_key")
    model = make_our_model_loud(BertGenerationDecoder(config, seed=0), seed=4)
    prompt = np.array([[2]] * 2)
    runs = [model.generate(prompt, max_new_tokens=10, use_cache=cache, do_sample=True, seed=3,
                           return_dict_in_generate=True, output_logits=True) for cache in (True, False)]
    np.testing.assert_array_equal(runs[0].sequences, runs[1].sequences)
    assert len(runs[0].logits) == len(runs[1].logits) == 10
    for cached, full in zip(runs[0].logits, runs[1].logits):
        # (measured: the relative term alone moves these logits by up to 1.3; before the loud
        # weights, by 7.8e-6, under this bound)
        np.testing.assert_allclose(cached, full, atol=1e-5)


def test_cache_is_preallocated_for_the_whole_generation():
    ids, mask = model_inputs({"model": "toy_bert2bert", "inputs": "batch"})
    out = load_model("toy_bert2bert").generate(ids, attention_mask=mask, max_new_tokens=12,
                                               return_dict_in_generate=True)
    cache = out.past_key_values
    assert cache.keys[0].shape[2] == 13  # capacity = max_length, never grown
    assert cache.get_seq_length() == out.sequences.shape[1] - 1
