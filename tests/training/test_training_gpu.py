"""Training on CuPy (device=0): the same code as on NumPy, checked against torch autograd on
the CPU through one checkpoint saved by transformers (skips where there is no GPU; CI has none).

The bar is the CPU suite's (test_model_backward_live.py): loss within 1e-5, every gradient
allclose(rtol=1e-4, atol=1e-5 x the global gradient norm); AdamW steps as test_optim.py.
On the GPU the training table is the plain reference (the CUDA kernels have no backward),
and the embedding's scatter-add is cupyx.scatter_add, whose float32 sums are not
deterministic in order: still within float32 rounding of torch's.
"""
import numpy as np
import pytest

from conftest import require_module

import minibertgen as mb
from minibertgen.optim import AdamW, clip_grad_norm_


def _gpu_available():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, or no device: all mean "skip"
        return False


pytestmark = [pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and an NVIDIA GPU"),
              pytest.mark.filterwarnings("ignore:To copy construct from a tensor")]

SMALL = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
             pad_token_id=0, bos_token_id=2, eos_token_id=1)
IDS = np.array([[2, 5, 7, 9, 3, 11, 0, 0], [4, 4, 6, 8, 1, 13, 17, 1]])  # row 0 padded, ids repeated
MASK = (IDS != 0).astype(np.int64)
LABELS = np.where(MASK == 1, IDS, -100)[:, :6]


def host(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


def seq2seq_pair(tmp_path, device, tie=False, position="absolute"):
    """A random bert2bert made by transformers, saved, and loaded by minibertgen on ``device``."""
    torch, T = require_module("torch"), require_module("transformers")
    torch.manual_seed(0)
    enc = T.BertGenerationConfig(**SMALL, position_embedding_type=position)
    dec = T.BertGenerationConfig(**SMALL, is_decoder=True, add_cross_attention=True, position_embedding_type=position)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, tie_encoder_decoder=tie,
                                                                 decoder_start_token_id=2, pad_token_id=0)
    theirs = T.EncoderDecoderModel(config=config).eval()
    theirs.save_pretrained(tmp_path)
    return mb.EncoderDecoderModel.from_pretrained(tmp_path, device=device), theirs


def torch_loss(theirs):
    import torch

    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS)
    return theirs(**{k: torch.tensor(v) for k, v in kwargs.items()}).loss


def check_gradients(tmp_path, device, **case):
    import torch

    ours, theirs = seq2seq_pair(tmp_path, device, **case)
    loss = ours(input_ids=IDS, attention_mask=MASK, labels=LABELS).loss
    loss.backward()
    their_loss = torch_loss(theirs)
    their_loss.backward()
    assert abs(float(host(loss)) - float(their_loss.detach())) <= 1e-5
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    total = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values() if g is not None)))
    assert total > 0
    for name, reference in grads.items():
        got = ours.get_parameter(name).grad
        if reference is None:
            assert got is None or not np.any(host(got)), name
            continue
        assert got is not None, f"{name}: no gradient"
        np.testing.assert_allclose(host(got), reference.numpy(), rtol=1e-4, atol=1e-5 * total, err_msg=name)


def check_adamw_steps(tmp_path, device, steps=5):
    import torch

    ours, theirs = seq2seq_pair(tmp_path, device)
    ours.train()
    theirs.train()  # dropout is 0 in this config
    mine = AdamW(ours.parameters(), lr=1e-3, weight_decay=0.01)
    reference = torch.optim.AdamW(theirs.parameters(), lr=1e-3, weight_decay=0.01)
    for step in range(steps):
        loss = ours(input_ids=IDS, attention_mask=MASK, labels=LABELS).loss
        loss.backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        mine.step()
        mine.zero_grad()
        their_loss = torch_loss(theirs)
        their_loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        reference.step()
        reference.zero_grad()
        assert abs(float(host(loss)) - float(their_loss.detach())) <= 1e-4 * abs(float(their_loss.detach())), step
    for name, parameter in theirs.named_parameters():
        np.testing.assert_allclose(host(ours.get_parameter(name).data), parameter.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("case", [{}, {"tie": True}, {"position": "relative_key_query"}])
def test_bert2bert_gradients_on_gpu_equal_torch(tmp_path, case):
    check_gradients(tmp_path, 0, **case)


def test_adamw_steps_on_gpu_equal_torch(tmp_path):
    check_adamw_steps(tmp_path, 0)


def check_dropout(tmp_path, device):
    from minibertgen.ops_backward import dropout_mask

    ours, _ = seq2seq_pair(tmp_path, device)
    xp = ours._xp()
    mask = host(dropout_mask((400, 500), 0.25, xp.random.default_rng(1), np.float32))
    kept = mask > 0
    assert abs(kept.mean() - 0.75) < 0.005  # 200000 draws: std of the mean ~0.001
    np.testing.assert_allclose(mask[kept], 1 / 0.75, rtol=1e-6)
    kwargs = dict(input_ids=IDS, attention_mask=MASK, labels=LABELS)
    first, again = host(ours(**kwargs).logits), host(ours(**kwargs).logits)
    np.testing.assert_array_equal(first, again)  # eval mode (the default): no dropout
    for half in (ours.config.encoder, ours.config.decoder):
        half.hidden_dropout_prob = half.attention_probs_dropout_prob = 0.3
    ours.train()
    seeded = [float(host(ours.manual_seed(7)(**kwargs).loss)) for _ in range(2)]
    assert seeded[0] == seeded[1]  # the same seed draws the same masks
    assert float(host(ours.manual_seed(8)(**kwargs).loss)) != seeded[0]


def test_dropout_on_gpu_keeps_the_right_fraction_and_follows_the_seed(tmp_path):
    check_dropout(tmp_path, 0)
