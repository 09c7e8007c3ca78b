"""Random small bert2bert configurations (hypothesis): gradients against torch's."""
import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb

torch = require_module("torch")
T = require_module("transformers")
hypothesis = require_module("hypothesis")
st = hypothesis.strategies

from test_model_backward_live import ACTIVATIONS, compare_with_torch  # noqa: E402


@st.composite
def configs(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    return dict(
        heads=heads, head_dim=draw(st.sampled_from([4, 8])), layers=draw(st.integers(1, 2)),
        act=draw(st.sampled_from(ACTIVATIONS)), position=draw(st.sampled_from(["absolute", "relative_key",
                                                                             "relative_key_query"])),
        tie=draw(st.booleans()), project=draw(st.booleans()), batch=draw(st.integers(1, 3)),
        src=draw(st.integers(2, 7)), tgt=draw(st.integers(2, 6)), seed=draw(st.integers(0, 2 ** 16)),
    )


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@hypothesis.settings(max_examples=4, deadline=None, derandomize=True)
@hypothesis.given(configs())
def test_random_bert2bert_gradients_equal_torch(tmp_path_factory, case):
    hidden = case["heads"] * case["head_dim"]
    common = dict(vocab_size=23, num_attention_heads=case["heads"], num_hidden_layers=case["layers"],
                  intermediate_size=2 * hidden, max_position_embeddings=16, hidden_act=case["act"],
                  position_embedding_type=case["position"], hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, pad_token_id=0)
    tie = case["tie"] and not case["project"]  # tied halves have one width
    enc_hidden = hidden + case["heads"] * 4 if case["project"] else hidden
    torch.manual_seed(case["seed"])
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        T.BertGenerationConfig(**{**common, "hidden_size": enc_hidden}),
        T.BertGenerationConfig(**common, hidden_size=hidden, is_decoder=True, add_cross_attention=True),
        tie_encoder_decoder=tie, decoder_start_token_id=2, pad_token_id=0)
    theirs = T.EncoderDecoderModel(config=config).eval()
    directory = tmp_path_factory.mktemp("random")
    theirs.save_pretrained(directory)
    ours = mb.EncoderDecoderModel.from_pretrained(directory)
    rng = np.random.default_rng(case["seed"])
    ids = rng.integers(3, 23, (case["batch"], case["src"]))
    mask = np.ones_like(ids)
    mask[0, max(1, case["src"] - 2):] = 0  # the first row padded
    labels = rng.integers(3, 23, (case["batch"], case["tgt"]))
    labels[-1, -1] = -100
    kwargs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    loss = ours(**kwargs).loss
    loss.backward()
    their_loss = theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss
    their_loss.backward()
    compare_with_torch(ours, theirs, loss, their_loss.detach())
