"""The training surface behaves as torch's (issue 30, item 3), each case compared with torch
live where torch has a number to compare: freezing, parameters across to()/half()/float(),
load_state_dict for models and optimisers, a step between forward and backward, gradient
shapes, clip_grad_norm_ for every norm type, and the argument checks."""
import math

import numpy as np
import pytest

from conftest import require_module
from trainer_cases import TINY, save_tiny_bert2bert

import minibertgen as mb
from minibertgen.optim import AdamW, LambdaLR, clip_grad_norm_, get_linear_schedule_with_warmup
from minibertgen.training import WeightsModifiedError

torch = require_module("torch")
T = require_module("transformers")

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

IDS = np.array([[2, 5, 7, 9, 3, 11, 0], [2, 6, 8, 10, 12, 13, 3]])
MASK = (IDS != 0).astype(np.int64)
LABELS = np.array([[2, 9, 7, 3, -100], [2, 12, 10, 8, 3]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny_bert2bert(T, torch, tmp_path_factory.mktemp("tiny"))


def pair(saved):
    return mb.EncoderDecoderModel.from_pretrained(saved), T.EncoderDecoderModel.from_pretrained(saved).eval()


def our_loss(model):
    return model(input_ids=IDS, attention_mask=MASK, labels=LABELS).loss


def their_loss(model):
    return model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), labels=torch.tensor(LABELS)).loss


def freeze(model, prefixes):
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad = False


# -- freezing ---------------------------------------------------------------------------------

def test_frozen_parameters_get_no_gradient_and_no_update(saved):
    ours, theirs = pair(saved)
    prefixes = ("encoder.embeddings.", "decoder.bert.encoder.layer.0.attention.")
    freeze(ours, prefixes)
    freeze(theirs, prefixes)
    assert ours.num_parameters(only_trainable=True) == theirs.num_parameters(only_trainable=True)
    assert ours.num_parameters(only_trainable=True) < ours.num_parameters()
    optimizer = AdamW(ours.parameters(), lr=1e-2)
    frozen = ours.get_parameter("encoder.embeddings.word_embeddings.weight")
    before = frozen.data.copy()
    our_loss(ours).backward()
    their_loss(theirs).backward()
    for name, param in theirs.named_parameters():
        got = ours.get_parameter(name).grad
        assert (got is None) == (param.grad is None), name
    optimizer.step()
    np.testing.assert_array_equal(frozen.data, before)


def test_requires_grad_on_a_model_and_on_a_half(saved):
    ours, _ = pair(saved)
    ours.encoder.requires_grad_(False)  # per module: the encoder half
    assert not ours.get_parameter("encoder.encoder.layer.0.output.dense.weight").requires_grad
    assert ours.get_parameter("decoder.lm_head.bias").requires_grad
    our_loss(ours).backward()
    assert all(p.grad is None for n, p in ours.named_parameters() if n.startswith("encoder."))
    assert ours.get_parameter("decoder.lm_head.bias").grad is not None
    ours.requires_grad_(False)
    assert ours.num_parameters(only_trainable=True) == 0
    with pytest.raises(TypeError, match="requires_grad"):
        ours.get_parameter("decoder.lm_head.bias").requires_grad = "no"


def test_trainer_weight_decay_groups_skip_frozen_parameters(saved):
    from minibertgen.trainer.schedules import create_optimizer

    ours, _ = pair(saved)
    ours.encoder.requires_grad_(False)
    optimizer = create_optimizer(ours, mb.Seq2SeqTrainingArguments(weight_decay=0.1))
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for _, p in ours.named_parameters() if p.requires_grad}
    no_decay = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert id(ours.get_parameter("decoder.lm_head.bias")) in no_decay
    assert id(ours.get_parameter("decoder.bert.encoder.layer.0.output.LayerNorm.weight")) in no_decay


# -- parameters across to() / half() / float() ---------------------------------------------------

def test_optimizer_built_before_half_float_keeps_updating_the_model(saved):
    ours, theirs = pair(saved)
    optimizer, their_optimizer = AdamW(ours.parameters(), lr=3e-3), torch.optim.AdamW(theirs.parameters(), lr=3e-3)
    held = list(ours.parameters())
    ours.half().float()
    theirs.half().float()
    for _ in range(2):
        our_loss(ours).backward()
        optimizer.step()
        optimizer.zero_grad()
        their_loss(theirs).backward()
        their_optimizer.step()
        their_optimizer.zero_grad()
    assert [id(p) for p in ours.parameters()] == [id(p) for p in held]  # the same Parameter objects
    for name, param in theirs.named_parameters():
        # the tolerance of tests/training/test_training_live.py's AdamW steps against torch
        np.testing.assert_allclose(ours.get_parameter(name).data, param.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


# -- load_state_dict -----------------------------------------------------------------------------

def test_model_load_state_dict_takes_transformers_names_and_tied_aliases(saved, tmp_path):
    ours, theirs = pair(saved)
    torch.manual_seed(1)
    other = T.EncoderDecoderModel(theirs.config).eval()
    state = {k: v.detach().numpy() for k, v in other.state_dict().items()}
    assert "decoder.lm_head.decoder.bias" in state  # transformers lists the tied alias
    held = ours.get_parameter("decoder.lm_head.bias")
    result = ours.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert ours.get_parameter("decoder.lm_head.bias") is held  # copied in place
    np.testing.assert_allclose(our_loss(ours), their_loss(other).item(), rtol=1e-5)


def test_model_load_state_dict_strict_and_not(saved):
    ours, theirs = pair(saved)
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    del state["encoder.embeddings.word_embeddings.weight"]
    state["encoder.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing keys \['encoder.embeddings.word_embeddings.weight'\].*"
                                         r"unexpected keys \['encoder.extra.weight'\]"):
        ours.load_state_dict(state)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert missing == ["encoder.embeddings.word_embeddings.weight"] and unexpected == ["encoder.extra.weight"]
    bad = {"decoder.lm_head.bias": np.zeros(5, np.float32)}
    with pytest.raises(ValueError, match="size mismatch for 'decoder.lm_head.bias'"):
        ours.load_state_dict(bad, strict=False)
    disagree = {"decoder.lm_head.bias": np.zeros(TINY["vocab_size"], np.float32),
                "decoder.lm_head.decoder.bias": np.ones(TINY["vocab_size"], np.float32)}
    with pytest.raises(ValueError, match="tied to"):
        ours.load_state_dict(disagree, strict=False)


def test_load_state_dict_on_a_half_and_on_bert_lm_head(saved, tmp_path):
    ours, theirs = pair(saved)
    torch.manual_seed(2)
    other = T.EncoderDecoderModel(theirs.config)
    encoder_state = {k: v.detach().numpy() for k, v in other.encoder.state_dict().items()}
    assert ours.encoder.load_state_dict(encoder_state) == ([], [])
    np.testing.assert_array_equal(ours.state_dict()["encoder.embeddings.word_embeddings.weight"],
                                  encoder_state["embeddings.word_embeddings.weight"])
    config = T.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=48, is_decoder=True)
    torch.manual_seed(3)
    T.BertLMHeadModel(config).save_pretrained(tmp_path / "lm")
    lm = mb.BertLMHeadModel.from_pretrained(tmp_path / "lm")
    source = T.BertLMHeadModel(config).eval()
    state = {k: v.detach().numpy() for k, v in source.state_dict().items()}
    assert "cls.predictions.decoder.bias" in state
    assert lm.load_state_dict(state) == ([], [])
    ids = np.array([[1, 5, 7, 9]])
    np.testing.assert_allclose(lm(input_ids=ids).logits, source(input_ids=torch.tensor(ids)).logits.detach().numpy(),
                               atol=1e-4)


def test_optimizer_and_schedule_state_round_trip_as_torch(saved):
    ours, theirs = pair(saved)
    in_torch_order = [ours.get_parameter(name) for name, _ in theirs.named_parameters()]  # states go by position
    optimizer = AdamW(in_torch_order, lr=3e-3, weight_decay=0.1)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 6)
    their_optimizer = torch.optim.AdamW(theirs.parameters(), lr=3e-3, weight_decay=0.1)
    their_schedule = T.get_linear_schedule_with_warmup(their_optimizer, 2, 6)
    for _ in range(3):
        our_loss(ours).backward()
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        their_loss(theirs).backward()
        their_optimizer.step(), their_schedule.step(), their_optimizer.zero_grad()
    # torch's saved state, loaded into a new minibertgen optimiser and schedule over the same weights
    saved_state = their_optimizer.state_dict()
    converted = {"param_groups": saved_state["param_groups"],
                 "state": {i: {"step": int(s["step"]), "exp_avg": s["exp_avg"].numpy(),
                               "exp_avg_sq": s["exp_avg_sq"].numpy()} for i, s in saved_state["state"].items()}}
    resumed = AdamW(in_torch_order, lr=1.0)
    resumed_schedule = get_linear_schedule_with_warmup(resumed, 2, 6)  # built first, then both states (as torch)
    resumed.load_state_dict(converted)
    resumed_schedule.load_state_dict(their_schedule.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert resumed_schedule.get_last_lr() == pytest.approx(their_schedule.get_last_lr())
    for _ in range(2):
        our_loss(ours).backward()
        resumed.step(), resumed_schedule.step(), resumed.zero_grad()
        their_loss(theirs).backward()
        their_optimizer.step(), their_schedule.step(), their_optimizer.zero_grad()
    for name, param in theirs.named_parameters():
        np.testing.assert_allclose(ours.get_parameter(name).data, param.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)  # (test_training_live.py's tolerance for AdamW steps)


# -- refused as torch refuses --------------------------------------------------------------------

def test_a_step_between_forward_and_backward_is_refused_as_torch(saved):
    ours, theirs = pair(saved)
    optimizer = AdamW(ours.parameters(), lr=1e-2)
    our_loss(ours).backward()
    loss = our_loss(ours)
    optimizer.step()
    with pytest.raises(WeightsModifiedError, match="modified by an inplace operation"):
        loss.backward()
    their_optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-2)
    their_loss(theirs).backward()
    loss = their_loss(theirs)
    their_optimizer.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_gradient_shape_checked():
    param = mb.training.Parameter("w", np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"gradient of shape \(1, 4\) for a parameter of shape \(3, 4\)"):
        param.grad = np.ones((1, 4), np.float32)
    param.grad = np.ones((3, 4), np.float32)


def test_second_backward_through_a_scaled_copy_of_a_spent_loss(saved):
    ours, _ = pair(saved)
    loss = our_loss(ours)
    scaled = loss * 2
    loss.backward()
    with pytest.raises(ValueError, match="already called"):
        scaled.backward()


@pytest.mark.parametrize("norm_type", [-math.inf, 0, 0.5, 1, 2, 3, math.inf])
def test_clip_grad_norm_every_norm_type_as_torch(norm_type):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (5,), (2, 2))]
    grads[1][2] = 0.0
    ours = [mb.training.Parameter(f"p{i}", np.zeros_like(g)) for i, g in enumerate(grads)]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.tensor(g)
    max_norm = 0.005 if norm_type == -math.inf else 0.5
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    their_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert float(total) == pytest.approx(float(their_total), rel=1e-6)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_numpy_scalars_accepted_as_torch(saved):
    ours, theirs = pair(saved)
    optimizer = AdamW(ours.parameters(), lr=np.float32(3e-3), betas=(np.float64(0.9), 0.99), eps=np.float32(1e-8),
                      weight_decay=np.float64(0.0))
    their_optimizer = torch.optim.AdamW(theirs.parameters(), lr=np.float32(3e-3), betas=(np.float64(0.9), 0.99),
                                        eps=np.float32(1e-8), weight_decay=np.float64(0.0))
    our_loss(ours).backward()
    optimizer.step()
    their_loss(theirs).backward()
    their_optimizer.step()
    for name, param in theirs.named_parameters():
        # the tolerance of tests/training/test_training_live.py's AdamW steps against torch
        np.testing.assert_allclose(ours.get_parameter(name).data, param.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_bad_optimizer_arguments_are_named(saved):
    ours, _ = pair(saved)
    generator = ours.parameters()
    list(generator)
    cases = [(lambda: AdamW([]), ValueError, "params: an empty parameter list"),
             (lambda: AdamW(generator), ValueError, "params: an empty parameter list"),
             (lambda: AdamW(ours), TypeError, "params: got EncoderDecoderModel"),
             (lambda: AdamW(ours.parameters(), betas=0.9), TypeError, "betas=0.9"),
             (lambda: AdamW(ours.parameters(), eps=None), TypeError, "eps=None"),
             (lambda: AdamW(ours.parameters(), weight_decay=None), TypeError, "weight_decay=None"),
             (lambda: LambdaLR(AdamW(ours.parameters()), 3), TypeError, "lr_lambda=3")]
    for make, kind, message in cases:
        with pytest.raises(kind, match=message):
            make()
    for make in (lambda: torch.optim.AdamW([]), lambda: torch.optim.AdamW(ours.parameters(), betas=0.9)):
        with pytest.raises((ValueError, TypeError)):  # torch refuses them too
            make()
