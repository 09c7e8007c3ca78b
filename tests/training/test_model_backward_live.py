"""Whole models: minibertgen's loss.backward() against torch's, through one checkpoint
saved by transformers and loaded by both (dropout off).

The bar (issue 15, DESIGN.md): loss within 1e-5; every parameter's gradient
allclose(rtol=1e-4, atol=1e-5 x the global gradient norm).
"""
import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb
from minibertgen.backend import to_numpy
from minibertgen.training import backward

torch = require_module("torch")
T = require_module("transformers")

pytestmark = [pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
              pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces")]

SMALL = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
             pad_token_id=0, bos_token_id=2, eos_token_id=1)
IDS = np.array([[2, 5, 7, 9, 3, 11, 0, 0], [4, 4, 6, 8, 1, 13, 17, 1]])  # row 0 padded, ids repeated
MASK = (IDS != 0).astype(np.int64)
LABELS = np.where(MASK == 1, IDS, -100)


def compare_with_torch(ours, theirs, our_loss, their_loss):
    # 1e-5 relative: a float32 loss over a 30k vocabulary differs from torch's by up to ~4e-6
    # relative from summation order alone (DESIGN.md, validation policy)
    assert abs(float(our_loss) - float(their_loss)) <= 1e-5 * abs(float(their_loss))
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    total = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values() if g is not None)))
    assert total > 0
    assert len(list(ours.named_parameters())) == len(grads)  # tied arrays are one parameter, as torch
    for name, reference in grads.items():
        got = ours.get_parameter(name).grad
        got = None if got is None else to_numpy(got)  # a CuPy gradient (test_training_gpu.py) to the host
        if reference is None:  # outside the loss (a pooler): no gradient
            assert got is None or not np.any(got), name
            continue
        assert got is not None, f"{name}: no gradient"
        np.testing.assert_allclose(got, reference.numpy(), rtol=1e-4, atol=1e-5 * total, err_msg=name)


def saved(torch_model, tmp_path):
    torch_model.eval().save_pretrained(tmp_path)
    return tmp_path


def causal_lm_case(tmp_path, torch_class, our_class, config, **inputs):
    torch.manual_seed(0)
    theirs = torch_class(config)
    ours = our_class.from_pretrained(saved(theirs, tmp_path))
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS, **inputs)
    loss = ours(**kwargs).loss
    loss.backward()
    their_loss = theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss
    their_loss.backward()
    compare_with_torch(ours, theirs, loss, their_loss.detach())


@pytest.mark.parametrize("position", ["absolute", "relative_key", "relative_key_query"])
def test_decoder_causal_lm(tmp_path, position):
    head_mask = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.5, 1.0]], dtype=np.float32)
    config = T.BertGenerationConfig(**SMALL, is_decoder=True, position_embedding_type=position)
    causal_lm_case(tmp_path, T.BertGenerationDecoder, mb.BertGenerationDecoder, config, head_mask=head_mask)


ACTIVATIONS = ["gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate",
               "quick_gelu", "relu", "relu6", "silu", "swish", "tanh", "sigmoid", "linear", "mish"]


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_decoder_every_activation(tmp_path, act):
    config = T.BertGenerationConfig(**{**SMALL, "num_hidden_layers": 1}, is_decoder=True, hidden_act=act)
    causal_lm_case(tmp_path, T.BertGenerationDecoder, mb.BertGenerationDecoder, config)


def test_bert_lm_head_with_token_types(tmp_path):
    config = T.BertConfig(**SMALL, is_decoder=True, type_vocab_size=2)
    token_types = (np.arange(IDS.shape[1])[None, :] >= 4).astype(np.int64).repeat(2, 0)
    causal_lm_case(tmp_path, T.BertLMHeadModel, mb.BertLMHeadModel, config, token_type_ids=token_types)


def test_roberta_causal_lm_padding_positions(tmp_path):
    config = T.RobertaConfig(**{**SMALL, "pad_token_id": 1, "max_position_embeddings": 24}, is_decoder=True)
    causal_lm_case(tmp_path, T.RobertaForCausalLM, mb.RobertaForCausalLM, config)


def test_encoder_alone_from_a_given_output_gradient(tmp_path):
    torch.manual_seed(0)
    theirs = T.BertGenerationEncoder(T.BertGenerationConfig(**SMALL, position_embedding_type="relative_key"))
    ours = mb.BertGenerationEncoder.from_pretrained(saved(theirs, tmp_path))
    weights = np.random.default_rng(0).standard_normal((2, IDS.shape[1], 32)).astype(np.float32)
    out = ours.train().eval()(input_ids=IDS, attention_mask=MASK)  # eval: no dropout, nothing recorded
    assert getattr(out, "_backward_from", None) is None
    out = ours.train()(input_ids=IDS, attention_mask=MASK)  # dropout is 0 in this config
    backward(out, last_hidden_state=weights)  # L = sum(h * weights): dL/dh = weights
    hidden = theirs(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state
    loss = (hidden * torch.tensor(weights)).sum()
    loss.backward()
    compare_with_torch(ours, theirs, float((out.last_hidden_state * weights).sum()), loss.detach())


def seq2seq(tmp_path, tie=False, encoder_hidden=32, position="absolute", device=None):
    torch.manual_seed(0)
    enc_config = T.BertGenerationConfig(**{**SMALL, "hidden_size": encoder_hidden}, position_embedding_type=position)
    dec_config = T.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True,
                                        position_embedding_type=position)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(enc_config, dec_config, tie_encoder_decoder=tie,
                                                                 decoder_start_token_id=2, pad_token_id=0)
    theirs = T.EncoderDecoderModel(config=config)
    return mb.EncoderDecoderModel.from_pretrained(saved(theirs, tmp_path), device=device), theirs


def seq2seq_losses(ours, theirs, labels):
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=labels)
    loss = ours(**kwargs).loss
    loss.backward()
    their_loss = theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss
    their_loss.backward()
    return loss, their_loss.detach()


@pytest.mark.parametrize("case", ["padded", "tied", "projection", "relative_key_query"])
def test_bert2bert(tmp_path, case):
    ours, theirs = seq2seq(tmp_path, tie=case == "tied", encoder_hidden=24 if case == "projection" else 32,
                           position="relative_key_query" if case == "relative_key_query" else "absolute")
    labels = LABELS[:, :6].copy()
    labels[0, 4:] = -100
    compare_with_torch(ours, theirs, *seq2seq_losses(ours, theirs, labels))


@pytest.mark.parametrize("fast", [True, False])
def test_bert2bert_on_the_training_table_and_on_the_plain_reference(tmp_path, fast):
    """The recorded forward, backward (and below, AdamW) on the CPU training table
    (fast/cpu_training.py, the default) and on the reference ops alone both equal torch."""
    ours, theirs = seq2seq(tmp_path)
    ours.use_fast_kernels(fast)
    assert (ours.kernels is not None) == fast
    labels = LABELS[:, :6].copy()
    compare_with_torch(ours, theirs, *seq2seq_losses(ours, theirs, labels))


@pytest.mark.parametrize("model", ["bert2bert", "decoder"])
def test_return_dict_false_loss_backward_equals_torch(tmp_path, model):
    """return_dict=False: transformers' tuple (loss, logits, ...), whose loss backpropagates."""
    labels = LABELS[:, :6].copy()
    if model == "bert2bert":
        ours, theirs = seq2seq(tmp_path)
        kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=labels)
    else:
        torch.manual_seed(0)
        theirs = T.BertGenerationDecoder(T.BertGenerationConfig(**SMALL, is_decoder=True))
        ours = mb.BertGenerationDecoder.from_pretrained(saved(theirs, tmp_path))
        kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS)
    out = ours(**kwargs, return_dict=False)
    assert isinstance(out, tuple)
    their_out = theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}, return_dict=False)
    np.testing.assert_allclose(out[1], their_out[1].detach().numpy(), atol=1e-4)
    out[0].backward()
    their_out[0].backward()
    compare_with_torch(ours, theirs, out[0], their_out[0].detach())


def test_gradients_accumulate_until_zero_grad(tmp_path):
    ours, theirs = seq2seq(tmp_path)
    labels = LABELS[:, :5]
    for _ in range(2):  # two backward passes add up, in both libraries
        loss, their_loss = seq2seq_losses(ours, theirs, labels)
    compare_with_torch(ours, theirs, loss, their_loss)
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_all_ignored_labels_give_nan_loss_and_zero_gradients(tmp_path):
    ours, theirs = seq2seq(tmp_path)
    loss, their_loss = seq2seq_losses(ours, theirs, np.full((2, 4), -100))
    assert np.isnan(float(loss)) and torch.isnan(their_loss)
    assert all(not np.any(p.grad) for p in ours.parameters())


def test_backward_errors_say_what_to_do(tmp_path):
    ours, _ = seq2seq(tmp_path)
    out = ours(input_ids=IDS, attention_mask=MASK, labels=LABELS[:, :4])
    out.loss.backward()
    with pytest.raises(ValueError, match="already called"):
        out.loss.backward()
    with pytest.raises(ValueError, match="no loss"):
        backward(ours(input_ids=IDS, attention_mask=MASK, decoder_input_ids=IDS[:, :3]))
    with pytest.raises(ValueError, match="not the loss"):
        (out.loss + 1.0).backward()


def test_quantized_model_refuses_backward(tmp_path):
    from minibertgen.quantization import BitsAndBytesConfig

    _, theirs = seq2seq(tmp_path)
    quantized = mb.EncoderDecoderModel.from_pretrained(tmp_path, quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    loss = quantized(input_ids=IDS, attention_mask=MASK, labels=LABELS[:, :4]).loss
    with pytest.raises(ValueError, match="quantized"):
        loss.backward()


def test_scaled_loss_scales_gradients(tmp_path):
    ours, theirs = seq2seq(tmp_path)
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS[:, :5])
    (ours(**kwargs).loss / 4).backward()
    their = theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss
    (their / 4).backward()
    compare_with_torch(ours, theirs, ours(**kwargs).loss, their.detach())


def test_read_only_weights_are_copied_once_and_stay_tied(tmp_path):
    ours, _ = seq2seq(tmp_path, tie=True)
    before = {name: a for name, a in ours.state_dict().items()}
    ours.train()
    after = ours.state_dict()
    assert all(a.flags.writeable for a in after.values() if isinstance(a, np.ndarray))
    shared = [(n, m) for n in after for m in after if n < m and before[n] is before[m]]
    assert shared  # tie_encoder_decoder: one array under two names ...
    assert all(after[n] is after[m] for n, m in shared)  # ... still one array after the copy
    ours.train()
    assert all(ours.state_dict()[n] is after[n] for n in after)  # copied once
