"""Whole-model gradients that see every parameter (issue 36).

test_model_backward_live.py judges each gradient with atol = 1e-5 x the global gradient
norm on default std-0.02 weights, where many parameters' whole gradients sit below that
(a zero gradient there passes).  Here the weights are loud (tests/loud_weights.py: every
parameter moves the loss) and each parameter is judged on its own: the relative error
||ours - reference|| / ||reference|| of the whole tensor, against torch autograd run in
float64 on the same checkpoint.  A dropped, reversed or misrouted gradient is then an
error of order 1, whatever the tensor's size.

Bound: 1e-4 relative per tensor, our float32 against float64 (measured: < 3e-6, the
size of torch's own float32 error on the same case, which the test also computes).
The one exception is a gradient that is exactly zero in exact arithmetic: the attention
key bias outside relative_key_query (softmax does not change when the same q . b is
added to every key's score), where both float32 libraries leave rounding noise; there
the bound is 1e-6 of the global gradient norm, absolute.
"""
import numpy as np
import pytest

from conftest import assert_loss_close, require_module
from loud_weights import make_torch_model_loud

import minibertgen as mb
from grad_helpers import relative_error

torch = require_module("torch")
T = require_module("transformers")

pytestmark = [pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
              pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces"),
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")]

SMALL = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
             bos_token_id=2, eos_token_id=4)
PAD = {"bert-generation": 0, "bert": 0, "roberta": 1}
POSITIONS = ["absolute", "relative_key", "relative_key_query"]
FAMILIES = ["bert-generation", "bert", "roberta"]
GRAD_RTOL = 1e-4  # per tensor, float32 against float64 (module docstring)


def inputs(pad, seq=8):
    """Two rows: the first padded at the end, ids repeated (so embedding rows sum), and a pad id
    inside the second row that is attended to (so the padding rows' zero gradient is seen)."""
    ids = np.array([[2, 5, 7, 9, 3, 11, 5, pad][:seq], [6, 4, pad, 8, 3, 13, 17, 4][:seq]])
    ids[0, 6:] = pad
    mask = (np.arange(ids.shape[1])[None, :] < np.array([[6], [ids.shape[1]]])).astype(np.int64)
    return ids, mask


def hf_config(family, position, **extra):
    cls = {"bert-generation": T.BertGenerationConfig, "bert": T.BertConfig, "roberta": T.RobertaConfig}[family]
    if family == "bert":
        extra["type_vocab_size"] = 3
    if family == "roberta":
        extra["type_vocab_size"] = 2
    return cls(**SMALL, pad_token_id=PAD[family], position_embedding_type=position, **extra)


def run_torch(model, kwargs, dtype):
    """Loss and {name: grad} of torch's model in ``dtype`` on the same inputs (a copy of it)."""
    import copy

    model = copy.deepcopy(model).to(dtype)
    model.zero_grad()
    tensors = {k: v if isinstance(v, bool) else torch.tensor(v).to(dtype) if np.asarray(v).dtype.kind == "f"
               else torch.tensor(v) for k, v in kwargs.items()}
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # transformers builds its float64 causal mask in the default dtype
    try:
        loss = model(**tensors).loss
        loss.backward()
    finally:
        torch.set_default_dtype(default)
    return float(loss), {n: p.grad for n, p in model.named_parameters()}


def compare_loud(ours, theirs, kwargs, relative_keys, **torch_only):
    """Our float32 loss and gradients against torch's float64, tensor by tensor."""
    out = ours(**kwargs)
    out.loss.backward()
    their_loss, reference = run_torch(theirs, {**kwargs, **torch_only}, torch.float64)
    _, float32 = run_torch(theirs, {**kwargs, **torch_only}, torch.float32)
    assert_loss_close(out.loss, their_loss)
    total = float(np.sqrt(sum(float((g ** 2).sum()) for g in reference.values() if g is not None)))
    assert len(list(ours.named_parameters())) == len(reference)  # tied arrays are one parameter, as torch
    errors = {}
    for name, grad in reference.items():
        got = ours.get_parameter(name).grad
        if grad is None:  # outside the loss (a pooler): no gradient
            assert got is None or not np.any(got), name
            continue
        assert got is not None, f"{name}: no gradient"
        grad = grad.numpy()
        if name.endswith("key.bias") and not (relative_keys and ".attention." in name):
            # zero in exact arithmetic (softmax's shift invariance): rounding noise on both sides
            assert np.linalg.norm(got) <= 1e-6 * total, name
            continue
        errors[name] = relative_error(got, grad)
        torch_error = relative_error(float32[name].numpy(), grad)
        assert errors[name] <= GRAD_RTOL, f"{name}: relative error {errors[name]:.3g} (torch float32: {torch_error:.3g})"
    return errors


def causal_lm_model(family, position):
    classes = {"bert-generation": (T.BertGenerationDecoder, mb.BertGenerationDecoder),
               "bert": (T.BertLMHeadModel, mb.BertLMHeadModel),
               "roberta": (T.RobertaForCausalLM, mb.RobertaForCausalLM)}[family]
    torch.manual_seed(0)
    return classes, hf_config(family, position, is_decoder=True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("position", POSITIONS)
def test_causal_lm_every_parameter(tmp_path, family, position):
    (torch_class, our_class), config = causal_lm_model(family, position)
    theirs = make_torch_model_loud(torch_class(config).eval(), seed=1)
    theirs.save_pretrained(tmp_path)
    ours = our_class.from_pretrained(tmp_path).use_fast_kernels(False)  # the reference ops
    ids, mask = inputs(PAD[family])
    kwargs = dict(input_ids=ids, attention_mask=mask, labels=np.where(mask == 1, ids, -100))
    if family == "bert-generation":  # a head mask: one head off, one halved
        kwargs["head_mask"] = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.5, 1.0]], dtype=np.float32)
    else:  # token types: both rows switch type halfway
        kwargs["token_type_ids"] = (np.arange(ids.shape[1])[None, :] >= 4).astype(np.int64).repeat(2, 0)
    errors = compare_loud(ours, theirs, kwargs, position == "relative_key_query")
    if position != "absolute":
        assert any("distance_embedding" in name for name in errors)


SEQ2SEQ = ([("bert-generation", "bert-generation", position, tie) for position in POSITIONS
            for tie in (False, True)]
           + [("bert", "roberta", "relative_key_query", False), ("roberta", "bert", "relative_key", False)])


@pytest.mark.parametrize("enc, dec, position, tie", SEQ2SEQ)
def test_seq2seq_every_parameter(tmp_path, enc, dec, position, tie):
    torch.manual_seed(0)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_config(enc, position), hf_config(dec, position, is_decoder=True, add_cross_attention=True),
        tie_encoder_decoder=tie, decoder_start_token_id=2, pad_token_id=PAD[dec])
    theirs = T.EncoderDecoderModel(config=config).eval()
    make_torch_model_loud(theirs, seed=2)
    theirs.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path).use_fast_kernels(False)
    ids, mask = inputs(PAD[enc])
    labels = inputs(PAD[dec], seq=6)[0]
    labels[0, 4:] = -100
    # both sides at transformers' default (a cache object in the decoder's forward, so relative
    # distances from the last key: see test_seq2seq_relative_positions_as_transformers_default)
    compare_loud(ours, theirs, dict(input_ids=ids, attention_mask=mask, labels=labels),
                 position == "relative_key_query")


def test_seq2seq_with_projection_on_the_training_table(tmp_path):
    """Encoder wider than the decoder (enc_to_dec_proj), on the default CPU training table."""
    torch.manual_seed(0)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        T.BertGenerationConfig(**{**SMALL, "hidden_size": 24}, pad_token_id=0, position_embedding_type="relative_key"),
        hf_config("bert-generation", "relative_key", is_decoder=True, add_cross_attention=True),
        decoder_start_token_id=2, pad_token_id=0)
    theirs = make_torch_model_loud(T.EncoderDecoderModel(config=config).eval(), seed=3)
    theirs.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    assert ours.kernels is not None  # the training table, the default on the CPU
    ids, mask = inputs(0)
    compare_loud(ours, theirs, dict(input_ids=ids, attention_mask=mask, labels=ids[:, :5]), False)


def test_seq2seq_relative_positions_as_transformers_default(tmp_path):
    """transformers 4.57 measures every query of a decoder's relative-position self-attention
    from the last key whenever the forward holds a cache object (use_cache's default, also in
    EncoderDecoderModel's training forward); minibertgen computes the same by default (config
    relative_distances="cached_last_key"; found by this test, fixed for issue 33)."""
    torch.manual_seed(0)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_config("bert-generation", "relative_key"),
        hf_config("bert-generation", "relative_key", is_decoder=True, add_cross_attention=True),
        decoder_start_token_id=2, pad_token_id=0)
    theirs = make_torch_model_loud(T.EncoderDecoderModel(config=config).eval(), seed=2)
    theirs.save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    ids, mask = inputs(0)
    kwargs = dict(input_ids=ids, attention_mask=mask, labels=ids[:, :5])
    with torch.no_grad():
        their_loss = float(theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss)  # use_cache: default
    assert_loss_close(ours(**kwargs).loss, their_loss)
