"""Training end to end against transformers + torch: the documentation page's example with
loss.backward() on the real MiniLM weights, AdamW steps, dropout in train mode."""
import hashlib
import os

import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb
from minibertgen.optim import AdamW, clip_grad_norm_, get_linear_schedule_with_warmup
from test_model_backward_live import IDS, LABELS, MASK, SMALL, compare_with_torch

torch = require_module("torch")
T = require_module("transformers")

pytestmark = [pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
              pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

BERT_LARGE = "google-bert/bert-large-uncased"


@pytest.fixture
def bert_large_offline(tmp_path, minilm_dir, monkeypatch):
    """An offline hub cache where "google-bert/bert-large-uncased" is the real MiniLM checkpoint."""
    commit = hashlib.sha1(BERT_LARGE.encode()).hexdigest()
    repo = tmp_path / "hub" / ("models--" + BERT_LARGE.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm_dir / name).exists():
            os.symlink(minilm_dir / name, snapshot / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_docs_training_example_verbatim_on_minilm(bert_large_offline, tmp_path):
    from minibertgen import BertGenerationDecoder, BertGenerationEncoder, BertTokenizer, EncoderDecoderModel

    # -- the page's example, "pt" -> "np" --
    encoder = BertGenerationEncoder.from_pretrained(BERT_LARGE, bos_token_id=101, eos_token_id=102)
    decoder = BertGenerationDecoder.from_pretrained(
        BERT_LARGE, add_cross_attention=True, is_decoder=True, bos_token_id=101, eos_token_id=102
    )
    bert2bert = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    tokenizer = BertTokenizer.from_pretrained(BERT_LARGE)
    input_ids = tokenizer("This is a long article to summarize", add_special_tokens=False,
                          return_tensors="np").input_ids
    labels = tokenizer("This is a short summary", return_tensors="np").input_ids
    loss = bert2bert(input_ids=input_ids, decoder_input_ids=labels, labels=labels).loss
    loss.backward()
    # -- the same weights in transformers (the new cross-attention is random: save ours) --
    assert not bert2bert.training  # eval is the default, as in transformers: no dropout
    bert2bert.save_pretrained(tmp_path / "saved")
    theirs = T.EncoderDecoderModel.from_pretrained(tmp_path / "saved").eval()
    their_loss = theirs(input_ids=torch.from_numpy(input_ids), decoder_input_ids=torch.from_numpy(labels),
                        labels=torch.from_numpy(labels)).loss
    their_loss.backward()
    compare_with_torch(bert2bert, theirs, loss, their_loss.detach())


def test_minilm_bert2bert_saved_by_transformers(minilm_dir, tmp_path):
    torch.manual_seed(0)
    theirs = T.EncoderDecoderModel.from_encoder_decoder_pretrained(str(minilm_dir), str(minilm_dir))
    theirs.config.decoder_start_token_id, theirs.config.pad_token_id = 101, 0
    theirs.eval().save_pretrained(tmp_path)
    ours = mb.EncoderDecoderModel.from_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    input_ids = rng.integers(1000, 5000, (2, 12))
    mask = np.ones_like(input_ids)
    mask[1, 9:] = 0
    labels = rng.integers(1000, 5000, (2, 7))
    labels[1, 5:] = -100
    loss = ours(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    their_loss = theirs(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                        labels=torch.tensor(labels)).loss
    their_loss.backward()
    compare_with_torch(ours, theirs, loss, their_loss.detach())


def small_bert2bert(tmp_path, dropout=0.0):
    torch.manual_seed(0)
    common = {**SMALL, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        T.BertGenerationConfig(**common), T.BertGenerationConfig(**common, is_decoder=True, add_cross_attention=True),
        decoder_start_token_id=2, pad_token_id=0)
    theirs = T.EncoderDecoderModel(config=config)
    theirs.eval().save_pretrained(tmp_path)
    return mb.EncoderDecoderModel.from_pretrained(tmp_path), theirs


def test_twenty_adamw_steps_equal_torch(tmp_path):
    ours, theirs = small_bert2bert(tmp_path)
    optimizer = AdamW(ours.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, 5, 20)
    their_optimizer = torch.optim.AdamW(theirs.parameters(), lr=3e-3, weight_decay=0.01)
    their_schedule = T.get_linear_schedule_with_warmup(their_optimizer, 5, 20)
    rng = np.random.default_rng(0)
    for step in range(20):
        ids = rng.integers(3, 40, (4, 7))
        labels = rng.integers(3, 40, (4, 5))
        labels[0, 3:] = -100
        loss = ours(input_ids=ids, labels=labels).loss
        loss.backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        their_loss = theirs(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).loss
        their_loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        their_optimizer.step()
        their_schedule.step()
        their_optimizer.zero_grad()
        assert float(loss) == pytest.approx(float(their_loss), rel=1e-4), f"step {step}"
    for name, param in theirs.named_parameters():
        np.testing.assert_allclose(ours.get_parameter(name).data, param.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_dropout_in_train_mode_seeded_and_off_in_eval(tmp_path):
    ours, _ = small_bert2bert(tmp_path, dropout=0.3)
    kwargs = dict(input_ids=IDS, attention_mask=MASK, decoder_input_ids=IDS[:, :5])
    reference = ours(**kwargs).logits  # eval (the default): no dropout
    np.testing.assert_array_equal(ours(**kwargs).logits, reference)  # deterministic
    ours.train().manual_seed(7)
    first = ours(**kwargs).logits
    second = ours(**kwargs).logits
    assert not np.allclose(first, reference) and not np.allclose(first, second)
    ours.manual_seed(7)
    np.testing.assert_array_equal(ours(**kwargs).logits, first)  # the same seed, the same masks
    ours.eval()
    np.testing.assert_array_equal(ours(**kwargs).logits, reference)


def test_dropout_backward_uses_the_forward_masks(tmp_path):
    """In train mode the gradient is the gradient of the dropped-out forward: a finite
    difference along a random direction, with the same masks redrawn by the same seed."""
    ours, _ = small_bert2bert(tmp_path, dropout=0.2)
    ours.train()
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS[:, :5])
    weight = ours.get_parameter("decoder.bert.encoder.layer.1.intermediate.dense.weight")
    direction = np.random.default_rng(1).standard_normal(weight.shape).astype(np.float32)
    ours.manual_seed(3)
    loss = ours(**kwargs).loss
    loss.backward()
    predicted = float((weight.grad * direction).sum())
    eps, base = 1e-2, weight.data.copy()
    values = []
    for sign in (1, -1):
        weight.data[...] = base + sign * eps * direction
        ours.manual_seed(3)
        values.append(float(ours(**kwargs).loss))
    weight.data[...] = base
    assert (values[0] - values[1]) / (2 * eps) == pytest.approx(predicted, rel=2e-2)
